"""Click refinement: SAM2's mask decoder on the image embeddings cached by the conversation (no LLM call)."""

from __future__ import annotations

import numpy as np

from model.errors import InputError
from model.media.masks import erode
from model.inference import SegChat
from model.modeling import ImageFeatures

_SEED_GRID = 128  # the seed search runs on a mask downscaled to about this size


def interior_point(mask: np.ndarray) -> tuple[float, float] | None:
    """(x, y) of a pixel deep inside the mask (the last to survive erosion), or None for an empty mask.

    Used as an implicit positive click, so that a first "exclude" click trims the model's object instead of
    leaving SAM2 with nothing to include.
    """
    if not mask.any():
        return None
    step = max(1, max(mask.shape) // _SEED_GRID)
    small = mask[::step, ::step].copy()
    if not small.any():
        small = mask
        step = 1
    while (inner := erode(small, border_is_outside=True)).any():
        small = inner
    ys, xs = np.nonzero(small)
    middle = len(ys) // 2
    return (float(xs[middle] * step + step / 2), float(ys[middle] * step + step / 2))


def refine_mask(chat: SegChat, features: ImageFeatures, clicks: list[tuple[float, float, int]],
                seed: tuple[float, float] | None) -> np.ndarray:
    """The object's mask from the person's clicks (x, y, 1 = include / 0 = exclude) plus the implicit seed."""
    points = [(x, y) for x, y, _ in clicks]
    labels = [label for _, _, label in clicks]
    if seed is not None:
        points.insert(0, seed)
        labels.insert(0, 1)
    if 1 not in labels:
        raise InputError("Click on the object first: an exclude click needs something to exclude from.")
    return chat.segmenter.refine(features, points, labels)
