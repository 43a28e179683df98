"""Files a result is shown and downloaded as: canvas and overlay PNG / H.264 overlay video, PNG-mask zip, COCO RLE
JSON, and the picture of a question's regions, all written with `model.media.export` / `model.media.render`."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from chat.session import Result, Session
from model.media.export import Progress, masks_to_png_zip, write_coco_rle_json, write_overlay_video
from model.media.render import fit_mask, overlay, palette
from model.regions import marked_picture


def _write_picture(session: Session, result: Result, indices: Sequence[int], name: str) -> Path:
    """The image (or the video frame the canvas shows) with objects `indices` drawn in their colours."""
    media = result.media
    frame = media.frame
    colors = palette(len(result.masks))
    masks = [result.masks[i] if media.kind == "image" else result.masks[i][media.frame_index] for i in indices]
    picture = overlay(frame, [fit_mask(m, frame.shape[:2]) for m in masks], [colors[i] for i in indices])
    path = session.new_file(name)
    Image.fromarray(picture).save(path)
    return path


def write_canvas(session: Session, result: Result) -> Path:
    """The picture with the objects the person chose to show."""
    return _write_picture(session, result, [i for i, on in enumerate(result.visible) if on], "canvas.png")


def write_result_files(session: Session, result: Result, progress: Progress | None = None) -> None:
    """(Re)write the overlay of all objects and the downloads of `result` into the session folder.

    A video's overlay is drawn on its clip (the one probed when it was uploaded), decoded frame by frame."""
    media = result.media
    if media.video is not None:
        result.overlay = write_overlay_video(media.video.clip, result.masks, session.new_file("overlay.mp4"),
                                             progress=progress)
    else:
        result.overlay = _write_picture(session, result, range(len(result.masks)), "overlay.png")
    # Every object found (each instance of a search), none that is not there; video masks are exported from
    # their stored RLE, never materialized whole.
    found = result.found_indices
    masks, labels = [result.masks[i] for i in found], [result.labels[i] for i in found]
    zip_path = masks_to_png_zip(masks, labels, session.new_file("masks.zip"))
    json_path = write_coco_rle_json(masks, labels, session.new_file("coco_rle.json"),
                                    [result.scores[i] for i in found])
    result.downloads = [zip_path, json_path, result.overlay]


def write_region_view(session: Session, frame: np.ndarray, masks: Sequence[np.ndarray], first: int) -> Path:
    """The picture with a turn's regions' marks ("R1"; the first one is region `first`), as the question shows
    them."""
    path = session.new_file("regions.png")
    Image.fromarray(marked_picture(frame, masks, first)).save(path)
    return path
