"""Video downloads: an H.264 overlay mp4 of every object's masks, and per-frame COCO RLE JSON."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from chat.export import write_h264_mp4
from chat.render import colors_for, overlay


def _fit(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if mask.shape == shape:
        return mask
    return np.asarray(Image.fromarray(mask).resize((shape[1], shape[0]), Image.NEAREST))


def overlay_frames(clip, segments: Sequence, colors=None) -> Iterator[np.ndarray]:
    """Each clip frame (decoded one at a time) with every object's mask of that frame blended in."""
    colors = colors_for(len(segments), colors)
    for t, frame in clip.iterate():
        if segments and t >= len(segments[0].mask):
            break
        masks = [_fit(s.mask[t], frame.shape[:2]) for s in segments]
        yield overlay(frame, masks, colors)


def write_overlay_video(clip, segments: Sequence, path: str | Path, fps: float | None = None, colors=None) -> Path:
    """Write the overlay as browser-playable H.264 mp4 (yuv420p, faststart); `clip` is a `model.video.VideoClip`
    (e.g. `conversation.media.clip`), `segments` the reply's video segments."""
    rate = fps or clip.fps or 25.0
    return write_h264_mp4(overlay_frames(clip, segments, colors), path, fps=rate)


def video_rle(segments: Sequence) -> dict:
    """YouTube-VIS-style results: per object its label, score, per-frame RLE and per-frame presence logits."""
    objects = []
    for i, s in enumerate(segments):
        objects.append({
            "id": i + 1,
            "label": s.label,
            "score": float(s.score),
            "frame_indices": [int(f) for f in s.mask.frame_indices],
            "presence": [float(p) for p in s.mask.presence],
            "segmentations": [s.mask.rle(t) for t in range(len(s.mask))],
        })
    return {"format": "coco_rle", "objects": objects}


def write_video_rle_json(segments: Sequence, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(json.dumps(video_rle(segments), ensure_ascii=False), encoding="utf-8")
    return path
