"""Regions a person points at in a turn: clicks, a box or a mask on the image (or on one frame of a video).

A `Region` is what was drawn; `check_regions` validates a turn's regions against the media before anything
changes; `region_references` finds the "region 2" a message mentions. The conversation numbers regions from 1 over
everything said about one media, so a follow-up can refer to a region of an earlier turn.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from model.errors import InputError
from model.media.render import numbered_marks
from model.prompting import region_mark
from model.segmenters.base import Box


@dataclass(frozen=True)
class Region:
    """One thing pointed at: clicks (`points` (x, y) in pixels; `labels` 1 = on it, 0 = not on it, default all 1),
    a `box` (x0, y0, x1, y1), both, or a `mask` (bool H x W at the image's size, used as drawn). On a video,
    `frame` is the index of the clip frame it is drawn on (default 0)."""

    points: Sequence[tuple[float, float]] = ()
    labels: Sequence[int] | None = None
    box: Box | None = None
    mask: np.ndarray | None = None
    frame: int | None = None

    @property
    def point_labels(self) -> list[int]:
        return [1] * len(self.points) if self.labels is None else [int(v) for v in self.labels]


def check_regions(regions: Sequence[Region] | None, size: tuple[int, int], max_regions: int,
                  frames: int | None = None, first_number: int = 1) -> list[Region]:
    """The turn's regions, or `InputError` naming the region and what is wrong with it.

    `size` is the media's (width, height); `frames` the number of clip frames for a video (None: an image);
    `first_number` the number the conversation gives this turn's first region."""
    regions = list(regions or [])
    if len(regions) > max_regions:
        raise InputError(f"{len(regions)} regions were drawn; at most {max_regions} can be asked about at once.")
    for number, region in enumerate(regions, start=first_number):
        if not isinstance(region, Region):
            raise InputError(f"Region {number} is not a Region (points, box or mask).")
        _check_region(region, f"Region {number}", size, frames)
    return regions


def _check_region(region: Region, name: str, size: tuple[int, int], frames: int | None) -> None:
    width, height = size
    if region.mask is None and region.box is None and not region.points:
        raise InputError(f"{name} is empty: give it points, a box or a mask.")
    if region.mask is not None and (region.box is not None or region.points):
        raise InputError(f"{name} has a mask and clicks or a box: give a mask alone, or clicks and/or a box.")
    if region.mask is not None:
        mask = np.asarray(region.mask)
        if mask.shape != (height, width):
            raise InputError(f"{name}'s mask is {_shape(mask.shape)}; it must match the image, {width}×{height}.")
        if not mask.any():
            raise InputError(f"{name}'s mask is empty: nothing is marked in it.")
    if region.points:
        labels = region.point_labels
        if len(labels) != len(region.points) or any(v not in (0, 1) for v in labels):
            raise InputError(f"{name}: give one label per point, 1 (on the object) or 0 (not on it).")
        if 1 not in labels and region.box is None:
            raise InputError(f"{name} only has 'not on it' clicks: click on the object too.")
        for x, y in region.points:
            if not (_finite(x, y) and 0 <= x < width and 0 <= y < height):
                raise InputError(f"{name}: the point ({x:g}, {y:g}) is outside the image ({width}×{height}).")
    if region.box is not None:
        x0, y0, x1, y1 = region.box
        if not (_finite(x0, y0, x1, y1) and 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise InputError(f"{name}: the box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) must have x0 < x1 and y0 < y1 and "
                             f"lie inside the image ({width}×{height}).")
    if frames is None and region.frame is not None:
        raise InputError(f"{name} names a frame, but the conversation is about an image.")
    if frames is not None and not (isinstance(region.frame, (int, type(None))) and 0 <= (region.frame or 0) < frames):
        raise InputError(f"{name} is on frame {region.frame}; the video has frames 0 to {frames - 1}.")


def _finite(*values: float) -> bool:
    return all(isinstance(v, (int, float, np.number)) and np.isfinite(v) for v in values)


def _shape(shape: tuple[int, ...]) -> str:
    return "×".join(str(d) for d in reversed(shape)) if len(shape) == 2 else f"an array of shape {shape}"


_REFERENCE = re.compile(r"\bregions?\s*#?\s*(\d+)", re.IGNORECASE)


def region_references(text: str) -> list[int]:
    """The region numbers a message mentions ("region 2", "region2", "Region #3"), in order."""
    return [int(n) for n in _REFERENCE.findall(text)]


def check_references(text: str, known: int) -> None:
    """`InputError` when the message mentions a region number the conversation does not have."""
    unknown = sorted({n for n in region_references(text) if not 1 <= n <= known})
    if unknown:
        have = f"regions 1 to {known}" if known > 1 else ("region 1" if known else "no regions")
        names = ", ".join(str(n) for n in unknown)
        raise InputError(f"The message mentions region {names}, but this conversation has {have}. Draw the region "
                         "first, or check its number.")


def marked_picture(picture: np.ndarray, masks: Sequence[np.ndarray], first: int = 1) -> np.ndarray:
    """`picture` with the regions' marks ("R1", ...; the first mask is region `first`), as models and people see them."""
    return numbered_marks(picture, masks, labels=[region_mark(n) for n in range(first, first + len(masks))])


def drawn_mask(region: Region, size: tuple[int, int]) -> np.ndarray:
    """The region as drawn, bool H x W: its mask, or its box filled and a small disc at each 'on it' click. Used
    where no segmenter turns the drawing into the object's mask."""
    if region.mask is not None:
        return np.asarray(region.mask, dtype=bool)
    width, height = size
    mask = np.zeros((height, width), dtype=bool)
    if region.box is not None:
        x0, y0, x1, y1 = (int(round(v)) for v in region.box)
        mask[y0:max(y1, y0 + 1), x0:max(x1, x0 + 1)] = True
    radius = max(2, min(size) // 50)
    ys, xs = np.ogrid[:height, :width]
    for (x, y), label in zip(region.points, region.point_labels):
        if label == 1:
            mask |= (xs - x) ** 2 + (ys - y) ** 2 <= radius ** 2
    return mask
