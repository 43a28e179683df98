"""Mask encodings shared by the readers and the synthetic writer: COCO RLE, COCO polygons, PNG files."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from model.errors import DatasetError

# PNG modes whose raw values are labels/indices rather than colours.
_INDEX_MODES = {"1", "L", "P", "I", "I;16"}


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


def read_png_mask(path: Path) -> np.ndarray:
    """A bool HxW mask from a PNG: non-zero label/index, or non-black for colour PNGs."""
    with Image.open(path) as im:
        if im.mode not in _INDEX_MODES:
            im = im.convert("L")
        return np.asarray(im) > 0


def write_png_mask(mask: np.ndarray, path: Path) -> None:
    """Write a bool HxW mask as an 8-bit PNG (0 / 255)."""
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)


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


def decode_rle(rle: dict[str, Any]) -> np.ndarray:
    """Decode a (validated) COCO RLE, compressed or uncompressed, to a bool HxW mask."""
    h, w = rle["size"]
    if isinstance(rle["counts"], list):
        rle = mask_utils.frPyObjects(rle, h, w)
    elif isinstance(rle["counts"], str):
        rle = {"size": [h, w], "counts": rle["counts"].encode("ascii")}
    return mask_utils.decode(rle).astype(bool)


def encode_rle(mask: np.ndarray) -> dict[str, Any]:
    """Encode a bool HxW mask as a JSON-ready compressed COCO RLE."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


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


def erode(mask: np.ndarray, border_is_outside: bool = False) -> np.ndarray:
    """Mask pixels whose four neighbours are all in the mask (beyond the image border counts as inside unless
    `border_is_outside`)."""
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    if border_is_outside:
        inner[[0, -1], :] = False
        inner[:, [0, -1]] = False
    return inner
