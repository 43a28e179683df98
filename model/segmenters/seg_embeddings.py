"""SAM2 prompted by `[SEG]` embeddings (the LISA / Sa2VA design), on image features encoded once.

All objects of an answer are decoded in one batched mask-decoder call; click refinement reuses the same cached
features (no LLM call, no re-encode).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from model.modeling import ImageFeatures, SegChatModel
from model.processing import SegChatProcessor
from model.segmenters.base import Box, Segment, binary_masks


@dataclass
class SegStates:
    """The prompts of this back-end: `[SEG]` hidden states [N, hidden] and each object's label."""

    states: torch.Tensor
    labels: list[str | None]


class SegEmbeddingSegmenter:
    def __init__(self, model: SegChatModel, processor: SegChatProcessor):
        self.model = model
        self.processor = processor

    @torch.no_grad()
    def encode(self, image: Image.Image) -> ImageFeatures:
        return self.model.encode_image(self.processor.sam_pixels(image), (image.height, image.width))[0]

    @torch.no_grad()
    def segment(self, features: ImageFeatures, prompts: SegStates) -> list[Segment]:
        decoded = self.model.decode_masks(features, self.model.project(prompts.states))
        logits = self.model.upsample(decoded.low_res_logits, features.original_size)
        return [Segment(mask, float(iou), label, float(presence)) for mask, iou, presence, label in
                zip(binary_masks(logits), decoded.iou_scores, decoded.object_scores, prompts.labels)]

    @torch.no_grad()
    def refine(self, features: ImageFeatures, points_xy: list[tuple[float, float]], labels: list[int],
               box: Box | None = None) -> np.ndarray:
        """One object's mask from clicks (pixel x, y of the original image; label 1 = in, 0 = out) and/or a box
        (x0, y0, x1, y1 in the same pixels)."""
        decoded = self.model.decode_points(features, points_xy, labels, box)
        return binary_masks(self.model.upsample(decoded.low_res_logits, features.original_size))[0]
