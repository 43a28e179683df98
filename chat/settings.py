"""Server-wide limits and queue settings of the chat app (one instance, shared read-only by all sessions)."""

from __future__ import annotations

from dataclasses import dataclass, field

from model.video_io import VideoLimits

MIB = 2**20


@dataclass(frozen=True)
class AppSettings:
    max_file_bytes: int = 100 * MIB  # any upload; Gradio refuses bigger files before they reach the handlers
    video: VideoLimits = field(default_factory=lambda: VideoLimits(max_file_bytes=100 * MIB, max_duration_s=120.0))
    video_max_frames: int | None = None  # longer clips are cut, with a notice (None: only the limits above)
    queue_size: int = 32  # requests waiting for the model, all users together
    concurrency: int = 1  # model requests running at once
    session_ttl_s: int = 3600  # an idle session's state is freed after this long
    cache_ttl_s: int = 3600  # files served to browsers are deleted after this long
