"""Annotation checks of the dataset readers: image sizes, COCO RLE fields, COCO polygons.

Encoding, decoding and PNG mask files are `model.media.masks`."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from model.errors import DatasetError


def image_size(path: Path, source: Path | None = None, line: int | None = None) -> tuple[int, int]:
    """(height, width) of an image file, read from its header; errors name `source` (the annotation) if given."""
    try:
        with Image.open(path) as im:
            w, h = im.size
    except FileNotFoundError:
        raise DatasetError(source or path, f"missing image file {path}", line) from None
    except OSError as err:
        raise DatasetError(source or path, f"unreadable image {path}: {err}", line) from None
    return h, w


def rle_size(rle: Any, source: Path, line: int | None = None) -> tuple[int, int]:
    """Validate a COCO RLE dict ({"size": [h, w], "counts": str | list[int]}) and return (h, w)."""
    if not isinstance(rle, dict) or "size" not in rle or "counts" not in rle:
        raise DatasetError(source, f"RLE must be a dict with 'size' and 'counts', got {str(rle)[:80]}", line)
    size = rle["size"]
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and v > 0 for v in size)):
        raise DatasetError(source, f"RLE 'size' must be [height, width] positive ints, got {size!r}", line)
    counts = rle["counts"]
    if not (isinstance(counts, str) or (isinstance(counts, list) and all(isinstance(c, int) for c in counts))):
        raise DatasetError(source, "RLE 'counts' must be a string or a list of ints", line)
    return size[0], size[1]


def parse_polygon(points: Any, source: Path, what: str) -> np.ndarray:
    """Validate a polygon given as [[x, y], ...] or flat [x0, y0, x1, y1, ...]; return an Nx2 float array."""
    try:
        arr = np.asarray(points, dtype=np.float64)
    except (TypeError, ValueError):
        raise DatasetError(source, f"{what}: polygon has non-numeric points") from None
    if arr.ndim == 1:
        if arr.size % 2:
            raise DatasetError(source, f"{what}: flat polygon has an odd number of coordinates")
        arr = arr.reshape(-1, 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise DatasetError(source, f"{what}: polygon points must be [x, y] pairs")
    if not np.isfinite(arr).all():
        raise DatasetError(source, f"{what}: polygon has non-finite coordinates")
    if len(arr) < 3:
        raise DatasetError(source, f"{what}: polygon has {len(arr)} points, at least 3 needed")
    return arr


def rasterize_polygon(points: np.ndarray, height: int, width: int) -> np.ndarray:
    """Fill an Nx2 (x, y) polygon into a bool HxW mask."""
    canvas = Image.new("1", (width, height), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in points.tolist()], fill=1)
    return np.asarray(canvas, dtype=bool)
