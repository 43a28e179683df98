"""Losses of the [SEG] path: per-mask sigmoid BCE and Dice, weighted with the LM cross-entropy (LISA's weights)."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LossWeights:
    ce: float = field(default=1.0, metadata={"help": "weight of the answer's cross-entropy",
                                             "aliases": ["--ce-weight"]})
    bce: float = field(default=2.0, metadata={"help": "weight of the masks' BCE", "aliases": ["--bce-weight"]})
    dice: float = field(default=0.5, metadata={"help": "weight of the masks' Dice loss", "aliases": ["--dice-weight"]})


def mask_losses(logits: torch.Tensor, targets: torch.Tensor,
                valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed over the N masks of [N, H, W] `logits` / `targets`: (mean BCE per mask, soft Dice loss per mask).

    Pixels where `valid` ([H, W]) is 0 count in neither loss.
    """
    weight = torch.ones_like(targets[0]) if valid is None else valid.to(targets)
    pixels = weight.sum().clamp_min(1.0)
    bce = F.binary_cross_entropy_with_logits(logits, targets, weight=weight.expand_as(targets), reduction="none")
    probs = logits.sigmoid() * weight
    # Smoothing of 1 keeps an empty target with an empty prediction at zero loss.
    dice = 1 - (2 * (probs * targets).sum((1, 2)) + 1) / (probs.sum((1, 2)) + targets.sum((1, 2)) + 1)
    return (bce.sum((1, 2)) / pixels).sum(), dice.sum()
