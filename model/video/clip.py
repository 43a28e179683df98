"""A video turn's input: `VideoOptions`, the `VideoClip` (a file probed once, or a list of frames) that every
later step is handed, LLM frame sampling, and `VideoMedia`, a conversation's video state.

A file is probed once, when its clip is built (`VideoFile`); the clip is then passed on, never its path. A turn
decodes the file in these passes, each streaming from the start of the file: (1) the LLM frames (up to the last
one sampled), (2) forward propagation from the first key frame to the end, (3) backward propagation from the
first key frame to frame 0, in chunks of `backward_chunk` frames (one partial decode per chunk; none when the
first key frame is frame 0, as with "first" sampling in "sa2va" mode), and, in the app, (4) the overlay video.
Imports `model.media` only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from model.errors import InputError, MediaError
from model.media.image import ImageSource, MediaLimits, load_image
from model.media.video_file import VideoFile, VideoLimits

PROPAGATION_MODES = ("sa2va", "memory")
FRAME_SAMPLINGS = ("first", "uniform")


@dataclass(frozen=True)
class VideoOptions:
    """How a video turn runs. `stride` keeps every stride-th frame (masks are given for those frames only);
    `max_side` downscales frames while decoding (masks are still returned at the original resolution);
    `max_frames` truncates longer clips with a notice in the reply (None: the limits in `VideoLimits` apply)."""

    propagation: str = "sa2va"
    llm_frames: int = 5
    frame_sampling: str = "first"
    key_frames: int = 1  # memory mode: how many LLM frames prompt SAM2
    stride: int = 1
    max_side: int | None = None
    max_frames: int | None = None
    backward_chunk: int = 32  # frames decoded at once when propagating backward

    def __post_init__(self):
        if self.propagation not in PROPAGATION_MODES:
            raise InputError(f"propagation must be one of {PROPAGATION_MODES}, got {self.propagation!r}.")
        if self.frame_sampling not in FRAME_SAMPLINGS:
            raise InputError(f"frame_sampling must be one of {FRAME_SAMPLINGS}, got {self.frame_sampling!r}.")
        for name in ("llm_frames", "key_frames", "stride", "backward_chunk"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise InputError(f"{name} must be a positive integer, got {getattr(self, name)!r}.")
        if self.max_frames is not None and self.max_frames < 1:
            raise InputError(f"max_frames must be a positive integer or None, got {self.max_frames!r}.")


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


class VideoClip:
    """A video (file or list of frames) seen as T frames, t = 0..T-1 (after stride and truncation).

    Holds no decoded frames for files: `read` and `iterate` decode on demand, reusing the one probe (`file`).
    `size` is the original display (height, width); decoded frames may be smaller when `max_side` is set.
    """

    def __init__(self, source: str | Path | VideoFile | Sequence[ImageSource], options: VideoOptions,
                 limits: VideoLimits = VideoLimits(), image_limits: MediaLimits = MediaLimits()):
        """`source`: a file path (probed here with `limits`), a `VideoFile` already probed, or a list of frames."""
        self.options = options
        self.limits = source.limits if isinstance(source, VideoFile) else limits
        self.notices: list[str] = []
        if isinstance(source, (str, Path, VideoFile)):
            self.file: VideoFile | None = source if isinstance(source, VideoFile) else VideoFile(source, limits)
            self._frames: list[np.ndarray] | None = None
            info = self.file.info
            total = info.frame_count
            self.size = (info.height, info.width)
            self.fps = info.fps / options.stride if info.fps else 0.0
        elif isinstance(source, (list, tuple)):
            self.file = None
            self._frames = frames_from_list(source, image_limits, limits)
            total = len(self._frames)
            self.size = self._frames[0].shape[:2]
            self.fps = 0.0
        else:
            raise MediaError(f"Unsupported video input of type {type(source).__name__}; "
                             "send a video file or a list of frames.")
        length = -(-total // options.stride)
        if options.max_frames is not None and length > options.max_frames:
            self.notices.append(f"The video has {length} frames; only the first {options.max_frames} "
                                "were segmented.")
            length = options.max_frames
        self.length = length

    def _original(self, t: int) -> int:
        return t * self.options.stride

    def read(self, ts: Sequence[int]) -> list[np.ndarray]:
        """Frames at clip indices `ts` (in that order), H x W x 3 uint8."""
        if self._frames is not None:
            return [self._frames[self._original(t)] for t in ts]
        return self.file.read([self._original(t) for t in ts], self.options.max_side)

    def iterate(self, start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """(t, frame) for t = start..T-1, one decoded frame alive at a time."""
        if self._frames is not None:
            for t in range(start, self.length):
                yield t, self._frames[self._original(t)]
            return
        frames = self.file.frames(self.options.stride, self.options.max_side)
        try:
            for index, frame in frames:
                t = index // self.options.stride
                if t >= self.length:
                    break
                if t >= start:
                    yield t, frame
        finally:
            frames.close()

    def iterate_backward(self, stop: int, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
        """(t, frame) for t = stop-1 down to 0, decoding at most `chunk` frames at a time."""
        end = stop
        while end > 0:
            begin = max(0, end - chunk)
            ts = list(range(begin, end))
            frames = self.read(ts)
            for t, frame in zip(reversed(ts), reversed(frames)):
                yield t, frame
            del frames
            end = begin


def llm_frame_indices(length: int, options: VideoOptions) -> list[int]:
    """The clip indices the LLM sees: Sa2VA's first frames, or the centres of equal segments."""
    return sample_indices(length, options.llm_frames, options.frame_sampling)


@dataclass
class VideoMedia:
    """A conversation's video: the clip (not its frames), the LLM frames, and caches reused by follow-ups."""

    clip: VideoClip
    llm_indices: list[int]
    images: list[Image.Image]
    vision: object  # families.VisionInputs of the LLM frames
    sam_features: dict[int, dict] = field(default_factory=dict)  # clip index -> SAM2 features (LLM frames)
    concept_features: object = None  # SAM 3 features of the first LLM frame (agent mode marks candidates on it)

    @property
    def options(self) -> VideoOptions:
        return self.clip.options


def load_video(clip: VideoClip, encode: Callable[[list[Image.Image]], object]) -> VideoMedia:
    """Sample and decode the clip's LLM frames and encode them for the VLM with `encode`."""
    indices = llm_frame_indices(clip.length, clip.options)
    if not indices:
        raise MediaError("The video contains no video frames.")
    images = [Image.fromarray(f) for f in clip.read(indices)]
    return VideoMedia(clip, indices, images, encode(images))
