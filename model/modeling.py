"""The SegChat network: a vision-language model, a `[SEG]` projector and SAM2, as one `PreTrainedModel`.

This is the one `[SEG]` → mask path. Inference (`model.inference`), the official Sa2VA semantics
(`model.sa2va.official`), the video segmenter and training all go through `project`, `encode_image`,
`decode_masks` and `upsample`; `forward` is the teacher-forced training pass and returns the loss.
The model never preprocesses: pixels and prompt ids come from `model.processing.SegChatProcessor`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModelForImageTextToText, PreTrainedModel, Sam2VideoModel
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.utils import ModelOutput

from model.config import SegChatConfig
from model.lean_hiera import streamline_hiera
from model.losses import LossWeights, mask_losses
from model.seg_capture import SegCapture

# Module-name prefixes of the VLM's vision side (never quantized; frozen unless a fine-tune trains vision).
VISION_PREFIXES = ("vlm.model.visual", "vlm.model.vision_tower", "vlm.model.multi_modal_projector")


@dataclass
class ImageFeatures:
    """SAM2 image embeddings of one image (computed once, reused by every object, follow-up and click).

    `embeddings`: the multi-level maps `Sam2VideoModel.get_image_embeddings` returns, each [1, C_l, h_l, w_l];
    `original_size`: (height, width) of the image the masks are wanted at.
    """

    embeddings: list[torch.Tensor]
    original_size: tuple[int, int]


@dataclass
class MaskPrediction:
    """SAM2 mask-decoder outputs for N objects of one image."""

    low_res_logits: torch.Tensor  # [N, h, w]: the multimask output with the best predicted IoU
    iou_scores: torch.Tensor  # [N]: its predicted IoU
    object_scores: torch.Tensor  # [N]: object-presence logits (> 0: the object is there)
    candidates: torch.Tensor  # [N, k, h, w]: every multimask output (training supervises each)


@dataclass
class SegChatOutput(ModelOutput):
    """What `SegChatModel.forward` returns. Losses are scalars; `loss` = `text_loss` + `mask_loss`.

    `text_loss` is the weighted LM cross-entropy; `mask_loss` the weighted BCE + Dice averaged over the batch's
    masks (zero when the batch has none); `ce`, `bce` and `dice` are the unweighted parts; `logits` are the LM
    logits [B, L, V]; `seg_states` the hidden states at the `[SEG]` inputs, [N, hidden], sample by sample.
    """

    loss: torch.Tensor | None = None
    text_loss: torch.Tensor | None = None
    mask_loss: torch.Tensor | None = None
    ce: torch.Tensor | None = None
    bce: torch.Tensor | None = None
    dice: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    seg_states: torch.Tensor | None = None
    n_masks: int | None = None

    def as_floats(self) -> dict[str, float]:
        return {"loss": self.loss.item(), "ce": self.ce.item(), "bce": self.bce.item(), "dice": self.dice.item()}


class SegChatModel(PreTrainedModel):
    config_class = SegChatConfig
    base_model_prefix = "segchat"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _no_split_modules = ["sam2", "projector"]

    def __init__(self, config: SegChatConfig):
        super().__init__(config)
        self.vlm = AutoModelForImageTextToText.from_config(config.vlm_config)
        self.sam2 = Sam2VideoModel(config.sam2_config)
        streamline_hiera(self.sam2)
        hidden = config.text_hidden_size
        self.projector = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, config.prompt_dim))
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.vlm.get_input_embeddings()

    def language_model(self) -> nn.Module:
        """The decoder stack of the VLM (the part that is quantized and LoRA-tuned)."""
        return self.vlm.model.language_model

    def vision_tower(self) -> nn.Module:
        """The VLM's image encoder."""
        inner = self.vlm.model
        return inner.visual if hasattr(inner, "visual") else inner.vision_tower

    def image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """InternVL's image features of `pixel_values` (tiles), [tiles, tokens per tile, hidden]."""
        return self.vlm.model.get_image_features(pixel_values=pixel_values, return_dict=True).pooler_output

    def with_region_features(self, inputs: dict, regions: list[torch.Tensor],
                             features: torch.Tensor | None = None) -> dict:
        """The VLM's forward inputs with region prompts (`VisionInputs.regions`), as pre-encoded features that fill
        the prompt's image-token slots in order: every tile's image features, then per region the last tile's (the
        whole-image thumbnail) at the region's cells (Sa2VA's `<vp>` runs).

        `features` are the inputs' `image_features` when the caller already has them, else they are computed
        here. Inputs without pixel values (a follow-up continuing a cached context that holds the image) get the
        regions' rows alone, read from the last tile of `features`. Without regions or features, `inputs` are
        returned as is."""
        if not regions and features is None:
            return inputs
        inputs = dict(inputs)
        pixels = inputs.pop("pixel_values", None)
        if features is None:
            features = self.image_features(pixels)
        thumbnail = features[-1]
        rows = [features.flatten(0, 1)] if pixels is not None else []
        rows += [thumbnail[cells.flatten().to(thumbnail.device)] for cells in regions]
        if rows:
            inputs["mm_encoder_outputs"] = {"image": BaseModelOutputWithPooling(pooler_output=torch.cat(rows)[None])}
        return inputs

    # ------------------------------------------------------------------------------------------ [SEG] states

    def seg_capture(self, seg_token_id: int, **options) -> SegCapture:
        """Hooks reading the hidden state at each `[SEG]` input: the final norm's output, or its input (the last
        decoder layer's output) for checkpoints trained on the pre-norm state. Options: see `SegCapture`."""
        pre_norm = self.config.seg_hidden_state == "last_layer"
        return SegCapture(self.vlm, self.language_model().norm, seg_token_id, read_input=pre_norm, **options)

    def project(self, seg_states: torch.Tensor) -> torch.Tensor:
        """`[SEG]` hidden states [N, hidden] → SAM2 prompt embeddings [N, C], on the projector's device and dtype."""
        weight = self.projector[0].weight
        return self.projector(seg_states.to(device=weight.device, dtype=weight.dtype))

    # ------------------------------------------------------------------------------------------ SAM2

    @property
    def _sam_param(self) -> torch.Tensor:
        return next(self.sam2.parameters())

    def encode_image(self, pixel_values: torch.Tensor, original_size: tuple[int, int] | None = None,
                     grad: bool = False) -> list[ImageFeatures]:
        """SAM2 embeddings of B images, `pixel_values` [B, 3, S, S] from `SegChatProcessor.sam_pixels`.

        `original_size` is the (height, width) the masks are wanted at (default: S x S). `grad=True` keeps the
        autograd graph (training the image encoder)."""
        param = self._sam_param
        pixels = pixel_values.to(device=param.device, dtype=param.dtype)
        if grad:
            # transformers wraps get_image_embeddings in no_grad; its undecorated body keeps the graph.
            levels = type(self.sam2).get_image_embeddings.__wrapped__(self.sam2, pixels)
        else:
            with torch.no_grad():
                levels = self.sam2.get_image_embeddings(pixels)
        size = original_size or tuple(pixel_values.shape[-2:])
        return [ImageFeatures([level[i:i + 1] for level in levels], size) for i in range(pixels.shape[0])]

    def decode_masks(self, features: ImageFeatures, prompts: torch.Tensor) -> MaskPrediction:
        """N objects in one mask-decoder call; `prompts` [N, C] are projected `[SEG]` states.

        Each object's sparse prompt is Sa2VA's: a dummy point labelled -1 (plus the encoder's pad point) followed
        by the `[SEG]` embedding. Gradients flow when the caller has them enabled."""
        n = prompts.shape[0]
        param = self._sam_param
        points = torch.zeros(1, n, 1, 2, device=param.device, dtype=param.dtype)
        labels = -torch.ones(1, n, 1, dtype=torch.int32, device=param.device)
        return self._decode(features, points, labels, prompts.to(device=param.device, dtype=param.dtype))

    def decode_points(self, features: ImageFeatures, points_xy: list[tuple[float, float]], labels: list[int],
                      box: tuple[float, float, float, float] | None = None) -> MaskPrediction:
        """One object from clicks and/or a box: pixel (x, y) of the original image, label 1 = in, 0 = out;
        `box` (x0, y0, x1, y1) in the same pixels."""
        param = self._sam_param
        height, width = features.original_size
        size = self.sam2.config.image_size
        scale = torch.tensor([size / width, size / height], device=param.device, dtype=param.dtype)
        points = label_t = boxes = None
        if points_xy:
            points = torch.tensor(points_xy, device=param.device, dtype=param.dtype).view(1, 1, -1, 2) * scale
            label_t = torch.tensor(labels, dtype=torch.int32, device=param.device).view(1, 1, -1)
        if box is not None:
            boxes = torch.tensor(box, device=param.device, dtype=param.dtype).view(1, 1, 4) * scale.repeat(2)
        return self._decode(features, points, label_t, None, boxes)

    def _decode(self, features: ImageFeatures, points: torch.Tensor | None, labels: torch.Tensor | None,
                extra_tokens: torch.Tensor | None, boxes: torch.Tensor | None = None) -> MaskPrediction:
        sam2 = self.sam2
        sparse, dense = sam2.prompt_encoder(input_points=points, input_labels=labels, input_boxes=boxes,
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
        return MaskPrediction(masks[0, pick, best].float(), ious[0, pick, best].float(),
                              object_scores[0, :, 0].float(), masks[0].float())

    def upsample(self, low_res_logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """[N, h, w] logits → SAM2 input size → (height, width), bilinear both times (Sa2VA's path)."""
        side = self.sam2.config.image_size
        logits = F.interpolate(low_res_logits[:, None], size=(side, side), mode="bilinear", align_corners=False)
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)[:, 0]

    # ------------------------------------------------------------------------------------------ training

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                labels: torch.Tensor | None = None, seg_token_id: int | None = None,
                sam_pixel_values: torch.Tensor | None = None, masks: list[torch.Tensor] | None = None,
                mask_valid: list[torch.Tensor | None] | None = None, loss_weights: LossWeights = LossWeights(),
                **vision_inputs) -> SegChatOutput:
        """The teacher-forced pass: LM cross-entropy on `labels`, and BCE + Dice through the `[SEG]` path.

        `input_ids` [B, L] (with `attention_mask`, `labels` and the VLM's `vision_inputs` such as `pixel_values`
        and `image_grid_thw`, all from the processor); `masks[b]` [n_b, H, W] float, one per `[SEG]` of sample b,
        `mask_valid[b]` [H, W] (0 on ignore pixels) or None; `sam_pixel_values` [B, 3, S, S].
        Every multimask candidate learns the target: inference keeps the one with the best predicted IoU, and the
        IoU head is not trained, so training only that pick would chase a moving choice.
        """
        masks = masks or []
        n_masks = sum(len(m) for m in masks)
        if n_masks and (seg_token_id is None or sam_pixel_values is None):
            raise ValueError("masks need seg_token_id and sam_pixel_values")
        with self.seg_capture(seg_token_id if n_masks else -1, skip_first=False, keep_graph=True) as capture:
            out = self.vlm(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **vision_inputs)
        ce = out.loss if out.loss is not None else out.logits.new_zeros(())
        zero = ce.new_zeros(())
        bce, dice, states = zero, zero, capture.stacked()
        if n_masks:
            if states is None or states.shape[0] != n_masks:
                raise ValueError(f"found {0 if states is None else states.shape[0]} [SEG] states for {n_masks} masks")
            prompts = self.project(states)
            trains_encoder = any(p.requires_grad for p in self.sam2.vision_encoder.parameters())
            features = self.encode_image(sam_pixel_values, grad=trains_encoder)
            valid = mask_valid or [None] * len(masks)
            start = 0
            for sample, targets, sample_valid in zip(features, masks, valid):
                if not len(targets):
                    continue
                decoded = self.decode_masks(sample, prompts[start:start + len(targets)])
                start += len(targets)
                k = decoded.candidates.shape[1]
                logits = self.upsample(decoded.candidates.flatten(0, 1), tuple(targets.shape[-2:]))
                expanded = targets.to(logits.device).repeat_interleave(k, dim=0)
                sample_bce, sample_dice = mask_losses(logits, expanded,
                                                      None if sample_valid is None else sample_valid.to(logits.device))
                bce, dice = bce + sample_bce / k, dice + sample_dice / k
            bce, dice = bce / n_masks, dice / n_masks
        text_loss = loss_weights.ce * ce
        mask_loss = loss_weights.bce * bce + loss_weights.dice * dice
        return SegChatOutput(text_loss + mask_loss, text_loss, mask_loss, ce, bce, dice, out.logits, states, n_masks)
