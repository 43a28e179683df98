"""Safe video input with PyAV: probe and enforce limits first, then stream frames.

Frames are indexed in decoder output order (0, 1, 2, ...), which stays correct for
variable frame rate; `frame_times` gives each frame's presentation time from its pts.
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

from .errors import MediaError
from .media import ImageSource, MediaLimits, check_media_file, load_image


@dataclass(frozen=True)
class VideoLimits:
    """Limits checked from the container header before any frame is decoded."""

    max_file_bytes: int = 500 * 2**20
    max_duration_s: float = 600.0
    max_frames: int = 18_000
    max_side: int = 4096


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
    if duration > limits.max_duration_s:
        raise MediaError(
            f"The video lasts {duration:.1f} s; the limit is {limits.max_duration_s:.0f} s."
        )
    if n_frames > limits.max_frames:
        raise MediaError(f"The video has {n_frames} frames; the limit is {limits.max_frames}.")


def probe_video(path: str | Path, limits: VideoLimits = VideoLimits()) -> VideoInfo:
    """Read a video's header (and its first frame, to prove it decodes), or raise MediaError."""
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
        try:
            first = next(stream.container.decode(stream), None)
        except av.FFmpegError:
            raise MediaError(
                f"The video “{path.name}” is damaged and cannot be decoded."
            ) from None
        if first is None:
            raise MediaError(f"The video “{path.name}” contains no video frames.")
        turns = _display_quarter_turns(first.rotation)
        codec = cc.name
    if turns % 2:
        width, height = height, width
    return VideoInfo(
        width=width,
        height=height,
        fps=fps,
        n_frames=max(n_frames, 1),
        duration_s=duration,
        codec=codec,
        rotation=turns * 90,
    )


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
                    raise MediaError(
                        f"The video has more than {limits.max_frames} frames, the limit."
                    )
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


def iter_frames(
    path: str | Path,
    stride: int = 1,
    max_side: int | None = None,
    limits: VideoLimits = VideoLimits(),
) -> Iterator[tuple[int, np.ndarray]]:
    """Stream (index, H×W×3 uint8 RGB frame) for every `stride`-th frame, display-oriented.

    The video is probed first, so limit and format errors raise here, not on iteration.
    With `max_side`, frames are downscaled while decoding so the long side is ≤ max_side.
    Only one decoded frame is held at a time; close the iterator to release the file early.
    """
    if stride < 1:
        raise ValueError(f"stride must be ≥ 1, got {stride}")
    _check_max_side(max_side)
    path = Path(path)
    info = probe_video(path, limits)
    return _decode(path, lambda i: i % stride == 0, max_side, limits, duration_s=info.duration_s)


def read_frames(
    path: str | Path,
    indices: Sequence[int],
    max_side: int | None = None,
    limits: VideoLimits = VideoLimits(),
) -> list[np.ndarray]:
    """Decode the frames at `indices` (in the order given); decodes up to the largest index."""
    if any(i < 0 for i in indices):
        raise ValueError(f"frame indices must be ≥ 0, got {list(indices)}")
    _check_max_side(max_side)
    path = Path(path)
    probe_video(path, limits)
    if not indices:
        return []
    wanted = set(indices)
    found = dict(_decode(path, wanted.__contains__, max_side, limits, last=max(wanted)))
    missing = sorted(wanted - found.keys())
    if missing:
        raise MediaError(
            f"The video has fewer frames than expected: frame {missing[0]} does not exist."
        )
    return [found[i] for i in indices]


def frame_times(path: str | Path, limits: VideoLimits = VideoLimits()) -> list[float]:
    """Presentation time (s, from the first frame) of each frame, read from packets only."""
    path = Path(path)
    info = probe_video(path, limits)
    with _open(path) as stream:
        try:
            stamps = [p.pts for p in stream.container.demux(stream) if p.size]
            time_base = stream.time_base
        except av.FFmpegError:
            raise MediaError(
                f"The video “{path.name}” is damaged and cannot be read."
            ) from None
    if not stamps or any(pts is None for pts in stamps):
        return [i / info.fps if info.fps else 0.0 for i in range(len(stamps) or info.n_frames)]
    stamps.sort()
    return [float((pts - stamps[0]) * time_base) for pts in stamps]


def sample_indices(n_frames: int, k: int, mode: str = "first") -> list[int]:
    """Pick k frame indices out of n_frames.

    "first": frames 0..k-1 (the Sa2VA default). "uniform": the centre frame of k equal
    segments of the clip, deterministic. Fewer than k frames are returned for short clips.
    """
    if k < 1:
        raise ValueError(f"k must be ≥ 1, got {k}")
    if mode not in ("first", "uniform"):
        raise ValueError(f"mode must be 'first' or 'uniform', got {mode!r}")
    if n_frames <= k:
        return list(range(max(n_frames, 0)))
    if mode == "first":
        return list(range(k))
    return [int((2 * i + 1) * n_frames // (2 * k)) for i in range(k)]


def frames_from_list(
    frames: Sequence[ImageSource],
    image_limits: MediaLimits = MediaLimits(),
    limits: VideoLimits = VideoLimits(),
) -> list[np.ndarray]:
    """Validate a video given as a list of images (PIL, arrays or paths) with the image rules."""
    if not frames:
        raise MediaError("The video has no frames.")
    if len(frames) > limits.max_frames:
        raise MediaError(f"The video has {len(frames)} frames; the limit is {limits.max_frames}.")
    out: list[np.ndarray] = []
    for i, frame in enumerate(frames):
        arr = np.asarray(load_image(frame, image_limits))
        if out and arr.shape != out[0].shape:
            raise MediaError(
                f"Frame {i} is {arr.shape[1]}×{arr.shape[0]} pixels but frame 0 is "
                f"{out[0].shape[1]}×{out[0].shape[0]}; all frames must have the same size."
            )
        out.append(arr)
    return out
