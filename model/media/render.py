"""Colour palettes and mask overlays, shared by the chat UI, the prediction CLI, exports and evaluation reports.

Imports numpy, Pillow and `model.media.masks` (the one erosion, for outlines)."""

from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from model.media.masks import erode

Color = tuple[int, int, int]

# Okabe–Ito colours (distinguishable with the common colour-vision deficiencies),
# without black, which would hide dark image content.
_OKABE_ITO: tuple[Color, ...] = (
    (230, 159, 0),
    (86, 180, 233),
    (0, 158, 115),
    (240, 228, 66),
    (0, 114, 178),
    (213, 94, 0),
    (204, 121, 167),
)
_GOLDEN = 0.618033988749895


def palette(n: int) -> list[Color]:
    """n distinct colours; palette(k) is always a prefix of palette(n) for k < n."""
    colors = list(_OKABE_ITO[:n])
    for i in range(n - len(colors)):
        # Beyond the named colours, golden-ratio hue steps keep neighbours far apart.
        hue = (0.1 + i * _GOLDEN) % 1.0
        value = 0.95 if i % 2 == 0 else 0.75
        r, g, b = colorsys.hsv_to_rgb(hue, 0.85, value)
        colors.append((round(r * 255), round(g * 255), round(b * 255)))
    return colors


def colors_for(n: int, colors: Sequence[Color] | None) -> Sequence[Color]:
    """`colors`, checked to have at least n entries, or the default palette."""
    if colors is None:
        return palette(n)
    if len(colors) < n:
        raise ValueError(f"{n} objects but only {len(colors)} colours")
    return colors


def _edge(mask: np.ndarray, width: int) -> np.ndarray:
    """Pixels of `mask` within `width` pixels (4-neighbourhood) of its border."""
    inner = mask
    for _ in range(width):
        inner = erode(inner)
    return mask & ~inner


def fit_mask(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A bool `mask` at `shape` (H, W), nearest-neighbour: video frames may be decoded smaller than their masks."""
    mask = np.asarray(mask, dtype=bool)
    if mask.shape == shape:
        return mask
    image = Image.fromarray(mask.astype(np.uint8) * 255).resize((shape[1], shape[0]), Image.Resampling.NEAREST)
    return np.asarray(image) > 127


def overlay(
    image: np.ndarray,
    masks: Sequence[np.ndarray],
    colors: Sequence[Color] | None = None,
    alpha: float = 0.5,
    outline: bool = True,
) -> np.ndarray:
    """Blend each mask's colour into an H×W×3 uint8 image; later masks are drawn on top.

    The outline is drawn opaque, about 1/300 of the short side thick (at least 1 px),
    so objects stay visible where the fill is faint. The input is not modified.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be H×W×3 uint8, got {image.shape} {image.dtype}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    colors = colors_for(len(masks), colors)
    out = image.astype(np.float32)
    thickness = max(1, min(image.shape[:2]) // 300)
    for mask, color in zip(masks, colors):
        if mask.shape != image.shape[:2]:
            raise ValueError(f"mask shape {mask.shape} does not match image {image.shape[:2]}")
        region = mask.astype(bool)
        rgb = np.asarray(color, dtype=np.float32)
        out[region] = out[region] * (1.0 - alpha) + rgb * alpha
        if outline:
            out[_edge(region, thickness)] = rgb
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def numbered_marks(image: np.ndarray, masks: Sequence[np.ndarray], colors: Sequence[Color] | None = None,
                   labels: Sequence[str] | None = None) -> np.ndarray:
    """Set-of-mark prompting: `overlay` of the masks, each with its label ("1", "2", ... unless `labels` are given)
    at the centre of its box, white on the mask's colour with a black frame. Labels are 1/20 of the short side tall
    (12 px at least)."""
    colors = colors_for(len(masks), colors)
    marked = Image.fromarray(overlay(image, masks, colors))
    draw = ImageDraw.Draw(marked)
    size = max(12, min(image.shape[:2]) // 20)
    font = ImageFont.load_default(size=size)
    labels = labels or [str(n) for n in range(1, len(masks) + 1)]
    for label, mask, color in zip(labels, masks, colors):
        centre = mark_centre(mask)
        if centre is None:
            continue
        left, top, right, bottom = draw.textbbox(centre, label, font=font, anchor="mm")
        pad = max(2, size // 5)
        draw.rectangle((left - pad, top - pad, right + pad, bottom + pad), fill=color, outline=(0, 0, 0))
        draw.text(centre, label, font=font, fill=(255, 255, 255), anchor="mm")
    return np.asarray(marked)


def mark_centre(mask: np.ndarray) -> tuple[float, float] | None:
    """(x, y) where a mask's number is drawn: the centre of its box; None for an empty mask."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    return (float(xs.min() + xs.max() + 1) / 2, float(ys.min() + ys.max() + 1) / 2)
