"""Regions drawn in the app's editor (`gr.ImageEditor`, one layer per region) and the picture that shows them.

A stroke is read as clicks: up to `MAX_CLICKS` points spread over it, which SAM2 grows into the object under them,
so a dab, a scribble and a painted area all point at an object. "Use my drawing as the mask" takes the strokes
themselves instead.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from model.errors import InputError
from model.regions import Region

MAX_CLICKS = 8
_SAMPLE = 2000  # stroke pixels the clicks are chosen from


def layer_masks(editor: object) -> list[np.ndarray]:
    """The drawn pixels (bool H x W) of each non-empty layer of an editor value {"background", "layers", ...}."""
    if not isinstance(editor, dict):
        return []
    masks = []
    for layer in editor.get("layers") or []:
        pixels = np.asarray(layer)
        if pixels.ndim != 3 or pixels.shape[2] != 4:
            raise InputError("A drawn layer must be an RGBA image.")
        drawn = pixels[..., 3] > 0
        if drawn.any():
            masks.append(drawn)
    return masks


def drawn_regions(masks: list[np.ndarray], size: tuple[int, int], exact: bool = False) -> list[Region]:
    """Each layer's strokes as a region on an image of `size` (width, height): clicks spread over the strokes, or,
    with `exact`, the strokes as its mask. Layers drawn at another scale of the same picture are rescaled."""
    return [Region(mask=mask) if exact else Region(points=_spread_points(mask))
            for mask in (_fit(m, size) for m in masks)]


def _fit(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    width, height = size
    if mask.shape == (height, width):
        return mask
    drawn_ratio, ratio = mask.shape[1] / mask.shape[0], width / height
    if abs(drawn_ratio / ratio - 1) > 0.02:
        raise InputError("The regions were drawn on another picture: draw them again on the one you are asking "
                         "about.")
    scaled = Image.fromarray(mask.astype(np.uint8) * 255).resize((width, height), Image.Resampling.NEAREST)
    fitted = np.asarray(scaled) > 127
    if not fitted.any():
        raise InputError("A drawn region is too small to see at the picture's size: draw it bigger.")
    return fitted


def _spread_points(mask: np.ndarray) -> list[tuple[float, float]]:
    """Farthest-point sampling of the stroke pixels, starting from the one nearest their centre."""
    ys, xs = np.nonzero(mask)
    pixels = np.stack([xs, ys], axis=1).astype(float)
    if len(pixels) > _SAMPLE:
        pixels = pixels[np.linspace(0, len(pixels) - 1, _SAMPLE).astype(int)]
    chosen = [int(np.argmin(((pixels - pixels.mean(0)) ** 2).sum(1)))]
    distance = ((pixels - pixels[chosen[0]]) ** 2).sum(1)
    while len(chosen) < MAX_CLICKS and distance.max() > 0:
        chosen.append(int(np.argmax(distance)))
        distance = np.minimum(distance, ((pixels - pixels[chosen[-1]]) ** 2).sum(1))
    return [(float(x), float(y)) for x, y in pixels[chosen]]


def editor_picture(editor: object) -> np.ndarray | None:
    """The picture loaded in the editor (H x W x 3 uint8), or None when it has none."""
    background = editor.get("background") if isinstance(editor, dict) else None
    if background is None:
        return None
    pixels = np.asarray(background)
    if pixels.ndim != 3 or pixels.shape[2] not in (3, 4) or pixels.dtype != np.uint8:
        raise InputError("The picture in the drawing panel must be an RGB or RGBA image.")
    return pixels[..., :3]
