"""Server-wide limits and queue settings of the chat app (one instance, shared read-only by all sessions).

The app's media limits are its own, tighter than the library's defaults (`model.segchat.Limits`): a turn on a long
video takes minutes on a CPU. They are stated here only; the page text and the upload checks read them from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from model.media.image import MediaLimits
from model.media.video_file import VideoLimits

MIB = 2**20


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

    @property
    def image(self) -> MediaLimits:
        """What an uploaded image may be (checked before its pixels are decoded)."""
        return MediaLimits(max_pixels=self.max_image_pixels,
                           max_file_bytes=min(self.max_image_bytes, self.max_file_bytes))

    @property
    def video(self) -> VideoLimits:
        """What an uploaded video may be (checked by its probe, before any frame is decoded)."""
        return VideoLimits(max_file_bytes=self.max_file_bytes, max_duration_s=self.max_video_s)
