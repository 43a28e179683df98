"""SAM2 mask decoding from [SEG] prompt embeddings and from clicks, on cached image embeddings."""

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import Sam2VideoModel

from model.preprocess import sam2_pixels


@dataclass
class ImageFeatures:
    """SAM2 image embeddings of one image (computed once, reused by every object and follow-up turn)."""

    embeddings: list[torch.Tensor]
    original_size: tuple[int, int]  # (height, width)


@dataclass
class Decoded:
    low_res_logits: torch.Tensor  # [N, h, w], the best of the multimask outputs
    iou_scores: torch.Tensor  # [N]
    object_scores: torch.Tensor  # [N] object-presence logits
    candidates: torch.Tensor | None = None  # [N, k, h, w] all multimask outputs (training supervises each)


class MaskDecoder:
    """Wraps a transformers `Sam2VideoModel` for single-image decoding."""

    def __init__(self, sam2: Sam2VideoModel, pixel_mode: str = "fp32"):
        self.sam2 = sam2
        self.pixel_mode = pixel_mode

    @property
    def _param(self) -> torch.Tensor:
        return next(self.sam2.parameters())

    @torch.no_grad()
    def encode(self, image: Image.Image) -> ImageFeatures:
        pixels = sam2_pixels(image, mode=self.pixel_mode, size=self.sam2.config.image_size)
        pixels = pixels.to(device=self._param.device, dtype=self._param.dtype)
        return ImageFeatures(self.sam2.get_image_embeddings(pixels), (image.height, image.width))

    def decode(self, features: ImageFeatures, prompts: torch.Tensor, grad: bool = False) -> Decoded:
        """Decode N objects in one mask-decoder call; `prompts` is [N, C] (projected [SEG] states).

        Each object's sparse prompt is Sa2VA's: a dummy point labelled -1 (plus the encoder's pad point)
        followed by the [SEG] embedding. `grad=True` keeps the autograd graph (training).
        """
        n = prompts.shape[0]
        device, dtype = self._param.device, self._param.dtype
        points = torch.zeros(1, n, 1, 2, device=device, dtype=dtype)
        labels = -torch.ones(1, n, 1, dtype=torch.int32, device=device)
        with torch.set_grad_enabled(grad):
            return self._run(features, points, labels, prompts.to(device=device, dtype=dtype))

    def decode_clicks(self, features: ImageFeatures, points_xy: list[tuple[float, float]], labels: list[int],
                      prompt: torch.Tensor | None = None) -> Decoded:
        """Decode one object from clicks (pixel coordinates of the original image; label 1 = in, 0 = out),
        optionally keeping the object's [SEG] embedding as an extra prompt token."""
        device, dtype = self._param.device, self._param.dtype
        height, width = features.original_size
        size = self.sam2.config.image_size
        scale = torch.tensor([size / width, size / height], device=device, dtype=dtype)
        points = torch.tensor(points_xy, device=device, dtype=dtype).view(1, 1, -1, 2) * scale
        label_t = torch.tensor(labels, dtype=torch.int32, device=device).view(1, 1, -1)
        extra = None if prompt is None else prompt.view(1, -1).to(device=device, dtype=dtype)
        with torch.no_grad():
            return self._run(features, points, label_t, extra)

    def _run(self, features: ImageFeatures, points: torch.Tensor, labels: torch.Tensor,
             extra_tokens: torch.Tensor | None) -> Decoded:
        sam2 = self.sam2
        sparse, dense = sam2.prompt_encoder(input_points=points, input_labels=labels, input_boxes=None,
                                            input_masks=None)
        if extra_tokens is not None:
            sparse = torch.cat([sparse, extra_tokens.view(1, -1, 1, extra_tokens.shape[-1])], dim=2)
        masks, ious, _, object_scores = sam2.mask_decoder(
            image_embeddings=features.embeddings[-1],
            image_positional_embeddings=sam2.get_image_wide_positional_embeddings(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
            high_resolution_features=features.embeddings[:-1],
        )
        best = ious[0].argmax(-1)
        pick = torch.arange(best.shape[0], device=best.device)
        return Decoded(masks[0, pick, best].float(), ious[0, pick, best].float(), object_scores[0, :, 0].float(),
                       masks[0].float())

    def logits_at(self, low_res_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Low-res logits → SAM2 input size → original (height, width), bilinear both times (Sa2VA's path)."""
        side = self.sam2.config.image_size
        logits = F.interpolate(low_res_logits[:, None], size=(side, side), mode="bilinear", align_corners=False)
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)[:, 0]


def binary_masks(logits: torch.Tensor) -> list[np.ndarray]:
    """sigmoid(logit) > 0.5, as numpy bool arrays."""
    return [m.cpu().numpy() for m in (logits > 0)]
