"""Files a result is shown and downloaded as: overlay PNG / H.264 overlay video, PNG-mask zip, COCO RLE JSON."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from chat.export import masks_to_png_zip, write_coco_rle_json, write_h264_mp4
from chat.render import Color, overlay, palette
from chat.session import Result, Session
from model.video_io import VideoLimits, iter_frames

Progress = Callable[[float, str], None]


def _fit(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """`mask` at `shape` (H, W); nearest-neighbour, since frames may be decoded smaller than the masks."""
    if mask.shape == shape:
        return mask
    image = Image.fromarray(mask.astype(np.uint8) * 255).resize((shape[1], shape[0]), Image.Resampling.NEAREST)
    return np.asarray(image) > 127


def _shown(result: Result) -> tuple[list[int], list[Color]]:
    colors = palette(len(result.masks))
    indices = [i for i, on in enumerate(result.visible) if on]
    return indices, [colors[i] for i in indices]


def overlay_frame(frame: np.ndarray, masks: Sequence[np.ndarray], colors: Sequence[Color]) -> np.ndarray:
    return overlay(frame, [_fit(m, frame.shape[:2]) for m in masks], colors)


def write_canvas(session: Session, result: Result) -> Path:
    """The image (a video's first frame) with the objects the person chose to show."""
    indices, colors = _shown(result)
    masks = [np.asarray(result.masks[i] if result.media.kind == "image" else result.masks[i][0]) for i in indices]
    path = session.new_file("canvas.png")
    Image.fromarray(overlay_frame(result.media.frame, masks, colors)).save(path)
    return path


def write_video_overlay(result: Result, path: Path, limits: VideoLimits,
                        progress: Progress | None = None) -> Path:
    """Every object on every segmented frame, streamed frame by frame from the source video into an H.264 mp4.

    Video masks (T×H×W arrays or `model.video.VideoMask`) cover every `stride`-th frame of the video."""
    media = result.media
    colors = palette(len(result.masks))
    n = min(len(m) for m in result.masks)
    indices = getattr(result.masks[0], "frame_indices", None)
    stride = int(indices[1] - indices[0]) if indices is not None and len(indices) > 1 else 1

    def frames():
        for i, frame in iter_frames(media.video_path, stride=stride, limits=limits):
            t = i // stride
            if t >= n:
                return
            if progress is not None:
                progress(t / n, "Drawing the masks on the video")
            yield overlay_frame(frame, [np.asarray(m[t]) for m in result.masks], colors)

    return write_h264_mp4(frames(), path, fps=(media.fps or 25.0) / stride)


def write_result_files(session: Session, result: Result, limits: VideoLimits,
                       progress: Progress | None = None) -> None:
    """(Re)write the overlay of all objects and the downloads of `result` into the session folder."""
    if result.media.kind == "video":
        result.overlay = write_video_overlay(result, session.new_file("overlay.mp4"), limits, progress)
    else:
        path = session.new_file("overlay.png")
        Image.fromarray(overlay_frame(result.media.frame, result.masks, palette(len(result.masks)))).save(path)
        result.overlay = path
    masks = result.masks  # video masks are exported frame by frame, never materialized whole
    zip_path = masks_to_png_zip(masks, result.labels, session.new_file("masks.zip"))
    json_path = write_coco_rle_json(masks, result.labels, session.new_file("coco_rle.json"), result.scores)
    result.downloads = [zip_path, json_path, result.overlay]
