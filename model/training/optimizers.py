"""AdamW for training: the [SEG] projector may take a larger learning rate, and the mask losses may keep an AdamW
state of their own.

Why a second state: Adam divides each step by the running size of the gradients it sees. In the language model,
the text loss's gradients are orders of magnitude larger than those that reach it from the mask losses through
the `[SEG]` states, so with one state the masks barely move the shared layers. Training from scratch, the Dice
loss then stalls near 0.6 while the text loss falls, and it does so with the CE weight at 1 or at 0.01. With a
state per loss, each takes steps of its own size, whatever the other's gradients.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import get_cosine_schedule_with_warmup


def param_groups(model: nn.Module, lr: float, projector_lr_scale: float = 1.0) -> list[dict]:
    """The trainable parameters: the projector's at `lr * projector_lr_scale`, all others at `lr`."""
    params = [p for p in model.parameters() if p.requires_grad]
    projector = {id(p) for p in model.projector.parameters()}
    groups = [{"params": [p for p in params if id(p) not in projector], "lr": lr},
              {"params": [p for p in params if id(p) in projector], "lr": lr * projector_lr_scale}]
    return [g for g in groups if g["params"]]


def adamw(groups: list[dict], weight_decay: float = 0.0) -> torch.optim.AdamW:
    """AdamW, fused into one kernel where every parameter allows it (a few per cent of a small model's CPU step)."""
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, weight_decay=weight_decay, fused=fused)


class MaskOptimizer:
    """A second AdamW over the same parameters, with the main one's LR schedule (linear warm-up over `warmup_steps`,
    then a cosine decay to 0 at `total_steps`), stepped on the mask losses' gradients only.

    Use: `grads = take_gradients(parts.masks)` before the text loss's backward (the graph is kept for it), then,
    after the main optimizer's step, `step(grads)`. One process, no gradient accumulation.
    """

    def __init__(self, groups: list[dict], weight_decay: float, warmup_steps: int, total_steps: int,
                 max_grad_norm: float):
        self.params = [p for g in groups for p in g["params"]]
        self.optimizer = adamw([dict(g) for g in groups], weight_decay)
        self.scheduler = get_cosine_schedule_with_warmup(self.optimizer, warmup_steps, total_steps)
        self.max_grad_norm = max_grad_norm

    def take_gradients(self, mask_loss: torch.Tensor) -> list[torch.Tensor | None] | None:
        """Gradients of `mask_loss` (None for a batch without masks), leaving `.grad` and the graph untouched."""
        if not mask_loss.requires_grad:
            return None
        return list(torch.autograd.grad(mask_loss, self.params, retain_graph=True, allow_unused=True))

    def step(self, grads: list[torch.Tensor | None] | None) -> None:
        """Step on `grads` (from `take_gradients`), once the main optimizer has stepped and cleared `.grad`."""
        if grads is not None:
            for p, g in zip(self.params, grads):
                p.grad = g
            if self.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad()
        self.scheduler.step()

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
