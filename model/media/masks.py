"""Binary masks as data: the one COCO-RLE encoder/decoder, the one erosion, PNG mask files, and `VideoMask`.

Everything that stores, exports or reads a mask as RLE (datasets, evaluation, video propagation, downloads) goes
through `encode_rle` / `decode_rle`, so one format is written everywhere: {"size": [H, W], "counts": str}.
Imports numpy, Pillow and pycocotools only.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

# PNG modes whose raw values are labels/indices rather than colours.
_INDEX_MODES = {"1", "L", "P", "I", "I;16"}

Rle = dict[str, Any]  # {"size": [h, w], "counts": str (compressed) | list[int] (uncompressed)}


def encode_rle(mask: np.ndarray) -> Rle:
    """A H×W mask (bool, or any array where non-zero is inside) as JSON-ready compressed COCO RLE."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(bool).astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    """The pixel box (x0, y0, x1, y1; x1 and y1 one past the last pixel) around a H×W mask; None if it is empty."""
    rows, cols = np.flatnonzero(np.asarray(mask).any(axis=1)), np.flatnonzero(np.asarray(mask).any(axis=0))
    if rows.size == 0:
        return None
    return (float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1))


def decode_rle(rle: Rle) -> np.ndarray:
    """A COCO RLE (compressed str/bytes counts or an uncompressed list of ints) as a bool H×W mask."""
    h, w = rle["size"]
    counts = rle["counts"]
    if isinstance(counts, list):
        coded = mask_utils.frPyObjects(rle, h, w)
    else:
        coded = {"size": [h, w], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_utils.decode(coded).astype(bool)


def erode(mask: np.ndarray, border_is_outside: bool = False) -> np.ndarray:
    """One erosion step: mask pixels whose four neighbours are all in the mask (beyond the image border counts as
    inside unless `border_is_outside`)."""
    inner = mask.copy()
    inner[1:, :] &= mask[:-1, :]
    inner[:-1, :] &= mask[1:, :]
    inner[:, 1:] &= mask[:, :-1]
    inner[:, :-1] &= mask[:, 1:]
    if border_is_outside:
        inner[[0, -1], :] = False
        inner[:, [0, -1]] = False
    return inner


def read_png_mask(path: Path) -> np.ndarray:
    """A bool HxW mask from a PNG: non-zero label/index, or non-black for colour PNGs."""
    with Image.open(path) as im:
        if im.mode not in _INDEX_MODES:
            im = im.convert("L")
        return np.asarray(im) > 0


def write_png_mask(mask: np.ndarray, target: Path | BinaryIO) -> None:
    """Write a H×W mask as an 8-bit black/white PNG (0 / 255) to a path or a binary file object."""
    Image.fromarray(np.where(mask.astype(bool), 255, 0).astype(np.uint8)).save(target, format="PNG")


class VideoMask:
    """One object's masks over a clip, stored as per-frame COCO RLE (a few KB per frame, whatever the length).

    Behaves like a read-only T x H x W bool array for the common uses: `len(m)`, `m.shape`, `m.ndim`, `m[t]`
    (an H x W bool array, decoded on access), `m[a:b]` / iteration, and `np.asarray(m)` (materializes everything:
    avoid on long clips). `presence[t]` is SAM2's object-score logit on frame t (> 0: the object is there; an
    absent object has an empty mask). `frame_indices[t]` is frame t's index in the original video (strided).
    `rle(t)` hands out the stored RLE itself, so exports never decode and re-encode.
    """

    ndim = 3
    dtype = np.dtype(bool)

    def __init__(self, size: tuple[int, int], length: int, stride: int = 1):
        self.size = (int(size[0]), int(size[1]))
        self._rles: list[Rle | None] = [None] * length
        self.presence = np.full(length, np.nan, dtype=np.float32)
        self.frame_indices = np.arange(length) * stride

    def set(self, t: int, mask: np.ndarray, presence: float) -> None:
        self._rles[t] = encode_rle(mask)
        self.presence[t] = presence

    def segmented_frames(self) -> int:
        """How many leading frames hold a mask (fewer than `len(self)` when the file ended early)."""
        return next((t for t, rle in enumerate(self._rles) if rle is None), len(self._rles))

    def truncate(self, length: int) -> None:
        """Keep only the first `length` frames."""
        self._rles = self._rles[:length]
        self.presence = self.presence[:length]
        self.frame_indices = self.frame_indices[:length]

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self._rles), *self.size)

    def __len__(self) -> int:
        return len(self._rles)

    def rle(self, t: int) -> Rle:
        """Frame t as JSON-ready COCO RLE: {"size": [H, W], "counts": str}."""
        rle = self._rles[t]
        if rle is None:
            raise IndexError(f"frame {t} was not segmented")
        return dict(rle)

    def __getitem__(self, key: int | slice) -> np.ndarray:
        if isinstance(key, slice):
            ts = range(len(self))[key]
            return np.stack([decode_rle(self.rle(t)) for t in ts]) if len(ts) else np.zeros((0, *self.size), bool)
        t = int(key)
        if t < 0:
            t += len(self)
        if not 0 <= t < len(self):
            raise IndexError(f"frame {key} is out of range for {len(self)} frames")
        return decode_rle(self.rle(t))

    def __iter__(self) -> Iterator[np.ndarray]:
        return (decode_rle(self.rle(t)) for t in range(len(self)))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        out = self[:] if len(self) else np.zeros(self.shape, bool)
        return out.astype(dtype) if dtype is not None else out
