"""The segmentation back-end interface and the object it returns.

A back-end encodes an image once (`encode`; the conversation caches the result for later turns and clicks) and
turns prompts of its own kind into `Segment`s on those features (`segment`). `Conversation` and the app only see
`Segment`s, so they do not care which back-end produced them. Today's back-end is SAM2 prompted by `[SEG]`
embeddings (`seg_embeddings.py`); concept back-ends (phrases, exemplar boxes) plug in beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
from PIL import Image

Prompts = TypeVar("Prompts", contravariant=True)


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


class Segmenter(Protocol[Prompts]):
    """A segmentation back-end for still images."""

    def encode(self, image: Image.Image) -> Any:
        """The image's features, computed once and reused for every prompt about it."""

    def segment(self, features: Any, prompts: Prompts) -> list[Segment]:
        """One `Segment` per object the prompts ask for, masks at the image's original size."""


def binary_masks(logits: torch.Tensor) -> list[np.ndarray]:
    """sigmoid(logit) > 0.5 for each of the N objects of [N, H, W] `logits`, as numpy bool arrays."""
    return [m.cpu().numpy() for m in (logits > 0)]
