"""The one export path (chat app, CLI, scripts): masks as a PNG zip or COCO-RLE JSON, browser-playable H.264 mp4,
and the overlay video of a clip's objects.

Masks are H×W arrays (an image) or T×H×W per-frame masks (a video): `VideoMask`s, whose stored RLE is written as
is, or arrays. Imports `model.media.masks` and `model.media.render`; a clip is anything with `fps` and
`iterate()` yielding (t, frame), e.g. `model.video.clip.VideoClip`.
"""

from __future__ import annotations

import io
import json
import re
import unicodedata
import zipfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from model.media.masks import VideoMask, encode_rle, write_png_mask
from model.media.render import Color, colors_for, fit_mask, overlay

Progress = Callable[[float, str], None]  # (fraction done, what is being done)


def safe_name(label: str | None, index: int) -> str:
    """A file-name stem that is unique per index and safe on every OS: "01_red_car"."""
    ascii_text = unicodedata.normalize("NFKD", label or "").encode("ascii", "ignore").decode()
    slug = re.sub(r"[^A-Za-z0-9]+", "_", ascii_text).strip("_").lower()[:40].rstrip("_")
    return f"{index + 1:02d}_{slug or 'object'}"


def _check_objects(masks: Sequence[np.ndarray], labels: Sequence[str | None]) -> None:
    if len(masks) != len(labels):
        raise ValueError(f"{len(masks)} masks but {len(labels)} labels")
    for m in masks:
        if m.ndim not in (2, 3):
            raise ValueError(f"masks must be (H, W) or (T, H, W), got shape {m.shape}")


def _png(mask: np.ndarray) -> bytes:
    buf = io.BytesIO()
    write_png_mask(mask, buf)
    return buf.getvalue()


def masks_to_png_zip(
    masks: Sequence[np.ndarray], labels: Sequence[str | None], path: str | Path
) -> Path:
    """Write one black/white PNG per object ("01_cup.png"), or per object and frame for
    (T, H, W) masks ("01_cup/00000.png"), plus labels.json mapping names to labels."""
    _check_objects(masks, labels)
    path = Path(path)
    index: dict[str, str | None] = {}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:  # PNG is already compressed
        for i, (mask, label) in enumerate(zip(masks, labels)):
            stem = safe_name(label, i)
            index[stem] = label
            if mask.ndim == 2:
                zf.writestr(f"{stem}.png", _png(mask))
            else:
                for t, frame_mask in enumerate(mask):
                    zf.writestr(f"{stem}/{t:05d}.png", _png(frame_mask))
        zf.writestr("labels.json", json.dumps(index, ensure_ascii=False, indent=1))
    return path


def masks_to_coco_rle(
    masks: Sequence[np.ndarray],
    labels: Sequence[str | None],
    scores: Sequence[float] | None = None,
) -> dict:
    """COCO compressed RLE per object: "segmentation" for an (H, W) mask, "segmentations"
    (one RLE per frame, as in YouTube-VIS results) for a (T, H, W) mask. JSON-serialisable.

    A `VideoMask` adds its "frame_indices" (in the original video) and per-frame "presence" logits, and its
    stored RLE is copied, never decoded and re-encoded."""
    _check_objects(masks, labels)
    if scores is not None and len(scores) != len(masks):
        raise ValueError(f"{len(masks)} masks but {len(scores)} scores")
    objects = []
    for i, (mask, label) in enumerate(zip(masks, labels)):
        obj: dict = {
            "id": i + 1,
            "label": label,
            "score": None if scores is None else float(scores[i]),
        }
        if isinstance(mask, VideoMask):
            obj["frame_indices"] = [int(f) for f in mask.frame_indices]
            obj["presence"] = [float(p) for p in mask.presence]
            obj["segmentations"] = [mask.rle(t) for t in range(len(mask))]
        elif mask.ndim == 2:
            obj["segmentation"] = encode_rle(mask)
        else:
            obj["segmentations"] = [encode_rle(m) for m in mask]
        objects.append(obj)
    return {"format": "coco_rle", "objects": objects}


def write_coco_rle_json(
    masks: Sequence[np.ndarray],
    labels: Sequence[str | None],
    path: str | Path,
    scores: Sequence[float] | None = None,
) -> Path:
    """Write masks_to_coco_rle(...) to `path` as UTF-8 JSON."""
    path = Path(path)
    data = masks_to_coco_rle(masks, labels, scores)
    path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return path


def _even(frame: np.ndarray) -> np.ndarray:
    """Pad the bottom/right edge by repeating it, so both sides are even (yuv420p needs it).

    Padding rather than cropping keeps every mask pixel; the copied row/column is invisible.
    """
    pad_h, pad_w = frame.shape[0] % 2, frame.shape[1] % 2
    if pad_h or pad_w:
        return np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return frame


def write_h264_mp4(
    frames: Iterable[np.ndarray], path: str | Path, fps: float, crf: int = 23
) -> Path:
    """Encode H×W×3 uint8 RGB frames as H.264 (libx264, yuv420p, faststart) mp4.

    Frames are consumed one at a time; all must share the first frame's shape. Odd
    sizes are padded to even by one repeated row/column. A failed write leaves no file.
    """
    if not fps > 0:
        raise ValueError(f"fps must be > 0, got {fps}")
    path = Path(path)
    rate = Fraction(fps).limit_denominator(1001)
    # faststart puts the index first, so browsers can play while downloading.
    container = av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"})
    try:
        stream = None
        shape = None
        for frame in frames:
            if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                raise ValueError(f"frames must be H×W×3 uint8, got {frame.shape} {frame.dtype}")
            if stream is None:
                shape = frame.shape
                stream = container.add_stream("libx264", rate=rate)
                stream.height, stream.width = _even(frame).shape[:2]
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": str(crf), "preset": "veryfast"}
            elif frame.shape != shape:
                raise ValueError(f"frame shape {frame.shape} differs from the first frame {shape}")
            rgb = np.ascontiguousarray(_even(frame))
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        if stream is None:
            raise ValueError("no frames to write")
        container.mux(stream.encode(None))
        container.close()
    except BaseException:
        container.close()
        path.unlink(missing_ok=True)
        raise
    return path


def overlay_frames(clip, masks: Sequence, colors: Sequence[Color] | None = None,
                   progress: Progress | None = None) -> Iterator[np.ndarray]:
    """Each clip frame (decoded one at a time) with every object's mask of that frame blended in; frames past the
    masks' length (a clip cut short by `max_frames`) are not drawn."""
    colors = colors_for(len(masks), colors)
    length = min((len(m) for m in masks), default=0)
    for t, frame in clip.iterate():
        if t >= length:
            return
        if progress is not None:
            progress(t / length, "Drawing the masks on the video")
        yield overlay(frame, [fit_mask(m[t], frame.shape[:2]) for m in masks], colors)


def write_overlay_video(clip, masks: Sequence, path: str | Path, colors: Sequence[Color] | None = None,
                        progress: Progress | None = None) -> Path:
    """Every object on every clip frame as browser-playable H.264 mp4 at the clip's rate (25 fps if unknown);
    `masks` are the T×H×W masks of one answer (`VideoMask`s), aligned with the clip's frames."""
    return write_h264_mp4(overlay_frames(clip, masks, colors, progress), path, fps=clip.fps or 25.0)
