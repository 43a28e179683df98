"""Safe video files with PyAV: probe once and enforce limits first, then stream frames.

`probe_video` opens a file once: header, limits, the first frame (to prove it decodes) and every packet's
timestamp (the exact frame count, where headers only estimate). A `VideoFile` holds that probe; its decoding
passes (`frames`, `read`) reopen the container but never probe again.

Frames are indexed in decoder output order (0, 1, 2, ...), which stays correct for
variable frame rate; `VideoInfo.frame_times` gives each frame's presentation time from its pts.
Rotation metadata (the display matrix) is applied so frames come out in display
orientation; mirrored display matrices are applied as their rotation part only.
Transparency in GIF/webm frames is dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from model.errors import MediaError
from model.media.image import MAX_ASPECT_RATIO, check_aspect_ratio, check_media_file, plain_number


@dataclass(frozen=True)
class VideoLimits:
    """Limits checked from the container header before any frame is decoded."""

    max_file_bytes: int = 500 * 2**20
    max_duration_s: float = 600.0
    max_frames: int = 18_000
    max_side: int = 4096
    max_aspect_ratio: float = MAX_ASPECT_RATIO


@dataclass(frozen=True)
class VideoInfo:
    """What a video holds; width/height are in display orientation (after rotation)."""

    width: int
    height: int
    fps: float
    n_frames: int  # from the container when it records it, else duration × fps
    duration_s: float
    codec: str
    rotation: int  # counter-clockwise degrees applied for display: 0, 90, 180 or 270
    frame_times: tuple[float, ...] = ()  # presentation time (s, from the first frame) of each frame, from packets

    @property
    def frame_count(self) -> int:
        """The exact number of frames where the packets tell it, else the header's estimate."""
        return len(self.frame_times) or self.n_frames


def _video_stream(container: av.container.InputContainer, name: str) -> av.VideoStream:
    # Cover art in audio files shows up as a one-picture "video" stream.
    streams = [
        s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic
    ]
    if not streams:
        if container.streams.audio:
            raise MediaError(f"“{name}” contains only audio; please send a video.")
        raise MediaError(f"“{name}” has no video track.")
    stream = streams[0]
    if stream.codec_context is None:
        raise MediaError(f"“{name}” uses a video codec that is not supported.")
    return stream


@contextmanager
def _open(path: Path) -> Iterator[av.VideoStream]:
    try:
        # The content decides the demuxer; a wrong extension does not matter.
        container = av.open(str(path), metadata_errors="replace")
    except (av.FFmpegError, OSError, UnicodeError):
        raise MediaError(f"“{path.name}” is not a video file I can read.") from None
    try:
        yield _video_stream(container, path.name)
    finally:
        container.close()


def _duration_s(stream: av.VideoStream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if stream.container.duration:
        return stream.container.duration / av.time_base
    return None


def _fps(stream: av.VideoStream) -> float | None:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate and 0 < float(rate) < 1000:
            return float(rate)
    return None


def _truncated(stream: av.VideoStream, file_size: int) -> bool:
    """True when the container's sample index points past the end of the file."""
    entries = stream.index_entries
    if not len(entries):
        return False
    end = max(entries[i].pos + entries[i].size for i in range(len(entries)))
    return end > file_size


def _display_quarter_turns(degrees: float) -> int:
    return round(degrees / 90) % 4


def _check_limits(
    width: int, height: int, n_frames: int, duration: float, limits: VideoLimits
) -> None:
    if max(width, height) > limits.max_side:
        raise MediaError(
            f"The video is {width}×{height} pixels; the longest side may be at most "
            f"{limits.max_side} pixels."
        )
    check_aspect_ratio(width, height, limits.max_aspect_ratio, "video")
    if duration > limits.max_duration_s:
        raise MediaError(
            f"The video lasts {duration:.1f} s; the limit is {plain_number(limits.max_duration_s)} s."
        )
    if n_frames > limits.max_frames:
        raise MediaError(f"The video has {n_frames} frames; the limit is {limits.max_frames}.")


def probe_video(path: str | Path, limits: VideoLimits = VideoLimits()) -> VideoInfo:
    """Read a video's header, its packets' timestamps and its first frame (to prove it decodes), in one opening
    of the file, or raise MediaError. The only function that probes a video."""
    path = Path(path)
    check_media_file(path, limits.max_file_bytes, "video")
    with _open(path) as stream:
        cc = stream.codec_context
        width, height = cc.width, cc.height
        if width <= 0 or height <= 0:
            raise MediaError(f"“{path.name}” has a video track without a picture size.")
        fps = _fps(stream)
        duration = _duration_s(stream)
        n_frames = stream.frames
        if n_frames <= 0 and duration is not None and fps is not None:
            n_frames = max(1, round(duration * fps))
        if fps is None:
            fps = n_frames / duration if n_frames > 0 and duration else 0.0
        if duration is None:
            duration = n_frames / fps if fps else 0.0
        _check_limits(width, height, n_frames, duration, limits)
        if _truncated(stream, path.stat().st_size):
            raise MediaError(f"The video “{path.name}” is incomplete (the file was cut short).")
        first, stamps = _first_frame_and_stamps(stream, path.name, limits)
        turns = _display_quarter_turns(first.rotation)
        codec = cc.name
        time_base = stream.time_base
    if turns % 2:
        width, height = height, width
    if not stamps or any(pts is None for pts in stamps):
        times = [i / fps if fps else 0.0 for i in range(len(stamps) or n_frames)]
    else:
        stamps.sort()
        times = [float((pts - stamps[0]) * time_base) for pts in stamps]
    return VideoInfo(
        width=width,
        height=height,
        fps=fps,
        n_frames=max(n_frames, 1),
        duration_s=duration,
        codec=codec,
        rotation=turns * 90,
        frame_times=tuple(times),
    )


def _too_many_frames(limits: VideoLimits) -> MediaError:
    return MediaError(f"The video has more than {limits.max_frames} frames, the limit.")


def _first_frame_and_stamps(
    stream: av.VideoStream, name: str, limits: VideoLimits
) -> tuple[av.VideoFrame, list[int | None]]:
    """One pass over the packets: every packet's pts, and the first frame decoded (to prove the codec works)."""
    first = None
    stamps: list[int | None] = []
    try:
        for packet in stream.container.demux(stream):
            if packet.size:
                stamps.append(packet.pts)
                if len(stamps) > limits.max_frames:
                    raise _too_many_frames(limits)
            if first is None:
                first = next(iter(packet.decode()), None)
    except av.FFmpegError:
        raise MediaError(f"The video “{name}” is damaged and cannot be decoded.") from None
    if first is None:
        raise MediaError(f"The video “{name}” contains no video frames.")
    return first, stamps


def _scaled_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    if max_side is None or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def _to_rgb(frame: av.VideoFrame, max_side: int | None) -> np.ndarray:
    width, height = _scaled_size(frame.width, frame.height, max_side)
    # Scaling inside the colour conversion avoids a full-size RGB copy.
    rgb = frame.to_ndarray(format="rgb24", width=width, height=height, interpolation="AREA")
    turns = _display_quarter_turns(frame.rotation)
    return np.ascontiguousarray(np.rot90(rgb, turns)) if turns else rgb


def _decode(
    path: Path,
    keep: Callable[[int], bool],
    max_side: int | None,
    limits: VideoLimits,
    last: int | None = None,
    duration_s: float = 0.0,
) -> Iterator[tuple[int, np.ndarray]]:
    """Decode frames 0..last (or all), yielding those `keep` accepts.

    Matroska/WebM demuxers stop quietly at damaged data, so a full decode whose frames
    span clearly less than the header's `duration_s` is reported as incomplete. Time,
    not frame count, is compared because counts are only estimates for variable rates.
    """
    with _open(path) as stream:
        stream.thread_type = "AUTO"
        index = 0
        first_time = last_time = None
        try:
            for frame in stream.container.decode(stream):
                if frame.time is not None:
                    first_time = frame.time if first_time is None else first_time
                    last_time = frame.time
                if index >= limits.max_frames:
                    raise _too_many_frames(limits)
                if keep(index):
                    yield index, _to_rgb(frame, max_side)
                if last is not None and index >= last:
                    return
                index += 1
        except av.FFmpegError:
            raise MediaError(
                f"The video “{path.name}” is damaged after frame {index} "
                "and cannot be decoded further."
            ) from None
    span = last_time - first_time if last_time is not None else 0.0
    if span < 0.9 * duration_s - 0.5:
        raise MediaError(
            f"The video “{path.name}” is incomplete: frames stop at {span:.1f} s "
            f"of {duration_s:.1f} s."
        )


def _check_max_side(max_side: int | None) -> None:
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be a positive int or None, got {max_side}")


class VideoFile:
    """A video file probed once (`info`, limits checked); its decoding passes reuse the probe.

    Each pass reopens the container and decodes from the start; none probes again.
    """

    def __init__(self, path: str | Path, limits: VideoLimits = VideoLimits()):
        self.path = Path(path)
        self.limits = limits
        self.info = probe_video(self.path, limits)

    def frames(self, stride: int = 1, max_side: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Stream (index, H×W×3 uint8 RGB frame) for every `stride`-th frame, display-oriented.

        With `max_side`, frames are downscaled while decoding so the long side is ≤ max_side.
        Only one decoded frame is held at a time; close the iterator to release the file early.
        """
        if stride < 1:
            raise ValueError(f"stride must be ≥ 1, got {stride}")
        _check_max_side(max_side)
        return _decode(self.path, lambda i: i % stride == 0, max_side, self.limits,
                       duration_s=self.info.duration_s)

    def read(self, indices: Sequence[int], max_side: int | None = None) -> list[np.ndarray]:
        """Decode the frames at `indices` (in the order given); decodes up to the largest index."""
        if any(i < 0 for i in indices):
            raise ValueError(f"frame indices must be ≥ 0, got {list(indices)}")
        _check_max_side(max_side)
        if not indices:
            return []
        wanted = set(indices)
        found = dict(_decode(self.path, wanted.__contains__, max_side, self.limits, last=max(wanted)))
        missing = sorted(wanted - found.keys())
        if missing:
            raise MediaError(
                f"The video has fewer frames than expected: frame {missing[0]} does not exist."
            )
        return [found[i] for i in indices]
