"""The segmentation back-end interface and the object it returns.

A back-end encodes an image once (`encode`; the conversation caches the result for later turns and clicks) and
turns prompts of its own kind into `Segment`s on those features (`segment`). `Conversation` and the app only see
`Segment`s, so they do not care which back-end produced them: SAM2 prompted by `[SEG]` embeddings
(`seg_embeddings.py`) and SAM 3 prompted by phrases and exemplar boxes (`concepts.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
from PIL import Image

from model.errors import InputError

Prompts = TypeVar("Prompts", contravariant=True)
Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels of the original image


@dataclass
class Segment:
    """One object. Image: `mask` is bool H x W at the original image size (display orientation).

    Video: `mask` is a `model.media.masks.VideoMask`, a lazy T x H x W bool accessor at the original video size that stores per-frame
    COCO RLE (`mask[t]` decodes frame t; `np.asarray(mask)` materializes all frames, avoid it on long clips);
    `mask.presence[t]` is the per-frame object-score logit (an object that left the frame has an empty mask
    there) and `presence` is its maximum over the clip.
    """

    mask: Any  # np.ndarray (image) | VideoMask (video)
    score: float  # the back-end's predicted IoU of the mask (video: mean over the prompted frames)
    label: str | None = None  # the phrase that names the object (`<p>...</p>` before its [SEG]), if any
    presence: float = 0.0  # object-presence logit (> 0: the object is there)
    found: bool = True  # False: the object is not in the image (its mask is then empty)
    box: Box | None = None  # the instance's box from a concept back-end (None: not predicted)
    instance_id: int | None = None  # a video instance's track id from concept tracking (stable across frames)
    _instances: Callable[[], Any] | None = field(default=None, repr=False, compare=False)

    def instances(self) -> Any:
        """Every instance of this object's phrase in the same media (a `Reply`), this object's mask box serving
        as a positive exemplar. Only on segments of a conversation's reply; needs concept segmentation."""
        if self._instances is None:
            raise InputError("Only objects of a conversation's reply can look for their other instances.")
        return self._instances()


class Segmenter(Protocol[Prompts]):
    """A segmentation back-end for still images."""

    def encode(self, image: Image.Image) -> Any:
        """The image's features, computed once and reused for every prompt about it."""

    def segment(self, features: Any, prompts: Prompts) -> list[Segment]:
        """One `Segment` per object the prompts ask for, masks at the image's original size."""


def found_summary(labels: Sequence[str | None], found: Sequence[bool]) -> str:
    """How many objects of each label were found: "car × 3, bus: not found" (unnamed objects: "object N")."""
    counts: dict[str, int] = {}
    for i, (label, there) in enumerate(zip(labels, found)):
        name = label or f"object {i + 1}"
        counts[name] = counts.get(name, 0) + bool(there)
    return ", ".join(f"{name} × {n}" if n else f"{name}: not found" for name, n in counts.items())


def binary_masks(logits: torch.Tensor) -> list[np.ndarray]:
    """sigmoid(logit) > 0.5 for each of the N objects of [N, H, W] `logits`, as numpy bool arrays."""
    return [m.cpu().numpy() for m in (logits > 0)]
