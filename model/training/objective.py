"""The teacher-forced training forward: LM cross-entropy on the answer + BCE and Dice through the [SEG] path.

It is an `nn.Module` holding the `SegChatModel`, so `accelerate` can place, wrap (DDP) and autocast it.
"""
from __future__ import annotations

import torch
from torch import nn

from model.families import Family
from model.modeling import SegChatModel
from model.segment import ImageFeatures, MaskDecoder
from model.training.examples import Batch
from model.training.losses import LossParts, LossWeights, combine, mask_losses


class SegObjective(nn.Module):
    def __init__(self, model: SegChatModel, family: Family, seg_token_id: int, weights: LossWeights = LossWeights()):
        super().__init__()
        self.model = model
        self.family = family
        self.seg_token_id = seg_token_id
        self.weights = weights
        self.decoder = MaskDecoder(model.sam2, model.config.pixel_mode("image"))

    def forward(self, batch: Batch) -> LossParts:
        vlm = self.model.vlm
        device = self.model.get_input_embeddings().weight.device
        ids = batch.input_ids.to(device)
        inputs = {"input_ids": ids, "attention_mask": batch.attention_mask.to(device),
                  "labels": batch.labels.to(device), **batch.vision.to(device, vlm.dtype).tensors,
                  **self.family.forward_kwargs(ids)}
        with self.family.seg_capture(vlm, self.seg_token_id, skip_first=False, keep_graph=True) as capture:
            ce = vlm(**inputs).loss
        n_masks = sum(len(m) for m in batch.masks)
        zero = ce.new_zeros(())
        if n_masks == 0:
            return combine(ce, zero, zero, 0, self.weights)
        states = capture.stacked()
        if states is None or states.shape[0] != n_masks:
            raise RuntimeError(f"found {0 if states is None else states.shape[0]} [SEG] states for {n_masks} masks")
        projector = self.model.projector
        prompts = projector(states.to(projector[0].weight.dtype))
        bce, dice = zero, zero
        for i, (embeddings, masks, valid) in enumerate(zip(self._image_embeddings(batch), batch.masks, batch.valid)):
            if not len(masks):
                continue
            start = sum(len(m) for m in batch.masks[:i])
            features = ImageFeatures(embeddings, tuple(masks.shape[-2:]))
            decoded = self.decoder.decode(features, prompts[start:start + len(masks)], grad=True)
            # Every multimask candidate learns the target: inference keeps the one with the best predicted IoU,
            # and the IoU head is not trained, so training only that pick would chase a moving choice.
            k = decoded.candidates.shape[1]
            logits = self.decoder.logits_at(decoded.candidates.flatten(0, 1), features.original_size)
            targets = masks.to(logits.device).repeat_interleave(k, dim=0)
            sample_bce, sample_dice = mask_losses(logits, targets, None if valid is None else valid.to(logits.device))
            bce, dice = bce + sample_bce / k, dice + sample_dice / k
        return combine(ce, bce, dice, n_masks, self.weights)

    def _image_embeddings(self, batch: Batch) -> list[list[torch.Tensor]]:
        """Per sample, SAM2's multi-level image embeddings (with a graph only when the encoder trains)."""
        sam2 = self.model.sam2
        param = next(sam2.parameters())
        pixels = batch.sam_pixels.to(device=param.device, dtype=param.dtype)
        if any(p.requires_grad for p in sam2.vision_encoder.parameters()):
            # transformers wraps get_image_embeddings in no_grad; its undecorated body keeps the graph.
            levels = type(sam2).get_image_embeddings.__wrapped__(sam2, pixels)
        else:
            with torch.no_grad():
                levels = sam2.get_image_embeddings(pixels)
        return [[level[i:i + 1] for level in levels] for i in range(batch.sam_pixels.shape[0])]
