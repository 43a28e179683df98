"""JSONL reader: one sample per line, paths relative to the JSONL file's folder.

Line format::

    {"image": "img/0.png",            # or "video": a folder of frames (sorted by name) or a video file
     "instruction": "...",
     "answer": "It is <p>the red square</p> [SEG] because ...",   # optional (None for eval-only data)
     "masks": [MASK, ...],            # one per [SEG] in the answer, same order
     "meta": {...}}                   # optional, copied into Sample.meta

    MASK (image) = "mask.png" | {"size": [h, w], "counts": str | [int, ...]}   (COCO RLE)
    MASK (video) = [frame MASK, ...]  one per frame

Sizes are checked against the image (or the frames of a frame folder); for a video file only the masks' mutual
consistency is checked, since its size is unknown without decoding it. Blank lines are skipped.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model.data.masks import image_size, rle_size
from model.data.sample import LazySamples, Sample, count_seg
from model.errors import DatasetError
from model.media.masks import decode_rle, read_png_mask

_FRAME_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


@dataclass(frozen=True)
class _Entry:
    media_path: Path
    is_video: bool
    instruction: str
    answer: str | None
    masks: tuple[Any, ...]  # per object: resolved spec (Path | RLE dict), or a tuple of them per frame
    meta: dict[str, Any]


def load_jsonl(path: str | Path) -> LazySamples[_Entry]:
    """Read and validate every line of a JSONL file; masks are decoded when a sample is indexed."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DatasetError(path, "file not found") from None
    except UnicodeDecodeError as err:
        raise DatasetError(path, f"not UTF-8 text: {err}") from None
    entries = [_parse_line(path, n, line) for n, line in enumerate(lines, start=1) if line.strip()]
    return LazySamples(entries, _build)


def _parse_line(path: Path, n: int, line: str) -> _Entry:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise DatasetError(path, f"invalid JSON: {err.msg}", n) from None
    if not isinstance(obj, dict):
        raise DatasetError(path, "line must be a JSON object", n)
    if ("image" in obj) == ("video" in obj):
        raise DatasetError(path, "exactly one of 'image' or 'video' is required", n)
    is_video = "video" in obj
    media = obj["video"] if is_video else obj["image"]
    instruction, answer, masks, meta = obj.get("instruction"), obj.get("answer"), obj.get("masks"), obj.get("meta", {})
    problem = None
    if not isinstance(media, str):
        problem = "'image'/'video' must be a path string"
    elif not (isinstance(instruction, str) and instruction.strip()):
        problem = "'instruction' must be a non-empty string"
    elif answer is not None and not isinstance(answer, str):
        problem = "'answer' must be a string"
    elif not isinstance(masks, list):
        problem = "'masks' must be a list"
    elif not isinstance(meta, dict):
        problem = "'meta' must be an object"
    elif answer is not None and count_seg(answer) != len(masks):
        problem = f"answer has {count_seg(answer)} [SEG] but {len(masks)} masks are given"
    if problem:
        raise DatasetError(path, problem, n)

    media_path = path.parent / media
    if not media_path.exists():
        raise DatasetError(path, f"missing {'video' if is_video else 'image'} {media_path}", n)
    check = _MaskChecker(path, n)
    if is_video:
        n_frames, expected = None, None
        if media_path.is_dir():
            frames = sorted(p for p in media_path.iterdir() if p.suffix.lower() in _FRAME_SUFFIXES)
            if not frames:
                raise DatasetError(path, f"no frames in video folder {media_path}", n)
            n_frames, expected = len(frames), image_size(frames[0], path, n)
        resolved = tuple(check.video(m, expected, n_frames) for m in masks)
        layouts = {(len(m), check.size(f)) for m in resolved for f in m}
        if len(layouts) > 1:
            raise DatasetError(path, f"video masks disagree on (frames, size): {sorted(layouts)}", n)
    else:
        expected = image_size(media_path, path, n)
        resolved = tuple(check.image(m, expected) for m in masks)
    return _Entry(media_path, is_video, instruction, answer, resolved, dict(meta))


@dataclass(frozen=True)
class _MaskChecker:
    """Validates mask specs of one JSONL line; errors name the file and line."""

    path: Path
    line: int

    def image(self, spec: Any, expected: tuple[int, int] | None) -> Path | dict:
        """Check a PNG path or RLE exists and has the expected (h, w); return it with paths resolved."""
        if isinstance(spec, str):
            spec = self.path.parent / spec
            if not spec.is_file():
                raise DatasetError(self.path, f"missing mask file {spec}", self.line)
        elif not isinstance(spec, dict):
            raise DatasetError(self.path, f"mask must be a PNG path or an RLE dict, got {type(spec).__name__}",
                               self.line)
        size = self.size(spec)
        if expected is not None and size != expected:
            raise DatasetError(self.path, f"mask size {list(size)} != image size {list(expected)}", self.line)
        return spec

    def video(self, spec: Any, expected: tuple[int, int] | None, n_frames: int | None) -> tuple:
        if not (isinstance(spec, list) and spec):
            raise DatasetError(self.path, "a video mask must be a non-empty list of per-frame masks", self.line)
        if n_frames is not None and len(spec) != n_frames:
            raise DatasetError(self.path, f"video mask has {len(spec)} frames, the frame folder {n_frames}",
                               self.line)
        return tuple(self.image(m, expected) for m in spec)

    def size(self, spec: Path | dict) -> tuple[int, int]:
        if isinstance(spec, Path):
            return image_size(spec, self.path, self.line)
        return rle_size(spec, self.path, self.line)


def _decode(spec: Path | dict) -> np.ndarray:
    return read_png_mask(spec) if isinstance(spec, Path) else decode_rle(spec)


def _build(entry: _Entry) -> Sample:
    if entry.is_video:
        masks = [np.stack([_decode(f) for f in frames]) for frames in entry.masks]
    else:
        masks = [_decode(m) for m in entry.masks]
    return Sample(entry.media_path, entry.instruction, entry.answer, masks, None, dict(entry.meta))
