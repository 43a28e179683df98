"""Server-wide limits and queue settings of the chat app (one instance, shared read-only by all sessions).

The app's media limits are its own, tighter than the library's defaults (`model.Limits`): a turn on a long
video takes minutes on a CPU. They are stated here only; the page text, the upload checks and the model (loaded with
`model_limits`) read them from here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from model.media.image import MediaLimits
from model.media.video_file import VideoInfo, VideoLimits
from model.processing import Limits
from model.video.clip import VideoOptions

MIB = 2**20


@dataclass(frozen=True)
class WorkBudget:
    """The most video work one turn may do: `frames` frames segmented, each downscaled to at most `side` pixels on
    its long side. A longer clip is sampled evenly (every k-th frame) and a bigger one downscaled, with a notice.

    The CPU defaults keep a turn of the default model under a few minutes (SAM2 takes seconds per frame there)."""

    frames: int
    side: int

    @classmethod
    def for_device(cls, device: str) -> "WorkBudget":
        return cls(frames=16, side=640) if device == "cpu" else cls(frames=600, side=1280)

    def describe(self) -> str:
        return f"{self.frames} frames at up to {self.side} px"

    def fit(self, info: VideoInfo, options: VideoOptions) -> tuple[VideoOptions, list[str]]:
        """`options` for a video of `info` within the budget, and the notices saying what changed."""
        notices = []
        side = min(self.side, options.max_side or self.side)
        if max(info.width, info.height) > side:
            notices.append(f"Frames are downscaled to {side} px on their long side (this server's limit per turn).")
        frames = -(-info.frame_count // options.stride)
        stride = options.stride
        if frames > self.frames:
            stride = options.stride * math.ceil(frames / self.frames)
            kept = -(-info.frame_count // stride)
            notices.append(f"The video has {frames} frames and this server segments at most {self.frames} per turn: "
                           f"one frame in {stride} is segmented ({kept} frames).")
        return replace(options, stride=stride, max_side=side), notices


@dataclass(frozen=True)
class AppSettings:
    max_file_bytes: int = 100 * MIB  # any upload; Gradio refuses bigger files before they reach the handlers
    max_image_bytes: int = 50 * MIB
    max_image_pixels: int = 40_000_000
    max_video_s: float = 120.0
    video_max_frames: int | None = None  # longer clips are cut, with a notice (None: only the limits above)
    queue_size: int = 32  # requests waiting for the model, all users together
    concurrency: int = 1  # model requests running at once
    session_ttl_s: int = 3600  # an idle session's state is freed after this long
    cache_ttl_s: int = 3600  # files served to browsers are deleted after this long
    budget: WorkBudget = field(default_factory=lambda: WorkBudget.for_device("cpu"))  # video work per turn

    @property
    def image(self) -> MediaLimits:
        """What an uploaded image may be (checked before its pixels are decoded)."""
        return MediaLimits(max_pixels=self.max_image_pixels,
                           max_file_bytes=min(self.max_image_bytes, self.max_file_bytes))

    @property
    def video(self) -> VideoLimits:
        """What an uploaded video may be (checked by its probe, before any frame is decoded)."""
        return VideoLimits(max_file_bytes=self.max_file_bytes, max_duration_s=self.max_video_s)

    @property
    def model_limits(self) -> Limits:
        """The library's limits with this app's media limits, to load the model with: the model checks an image
        again, by these numbers too."""
        return Limits(media=self.image, video=self.video)
