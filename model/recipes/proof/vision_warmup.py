"""Vision warm-up for the proof of learning: the vision tower first learns to recognise each object it sees.

A real multimodal model starts from a pretrained vision encoder. The proof's starts from random weights, and the
language-model loss alone teaches it colour but not shape within the CPU budget (held-out shape words stayed at
chance). So, before the main training, each object's image tokens (pooled with weights from its mask) pass
through a throw-away linear head that names its shape, colour and size class, and the tower trains on the summed
cross-entropies. The labels are the training scenes' own objects, which their answers describe anyway ("From left
to right: a red square...", "the largest"); held-out scenes are never seen.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from model.data.synthetic import AREA_CLASSES, COLOURS, CORNERS, Scene, area_class
from model.loading import load_model_and_processor
from model.processing import SegChatProcessor
from model.recipes.proof.warmup import train_and_save

# What the head names about each object, and the classes of each.
PROPERTIES = {"shape": list(CORNERS), "colour": list(COLOURS), "size": list(AREA_CLASSES)}
WARMUP_LOG = "vision_warmup.jsonl"


class _Objects:
    """Per scene, the VLM pixels and, per object, its token weights (mask area per token) and labels."""

    def __init__(self, processor: SegChatProcessor, scenes: Sequence[Scene]):
        vision = processor.encode_images([Image.fromarray(s.image) for s in scenes])
        self.pixels = vision.tensors["pixel_values"]
        self.grid = vision.tensors["image_grid_thw"]
        merge = processor.image_processor.merge_size
        self.first_row = np.cumsum([0] + [int(g.prod()) for g in self.grid])
        self.weights: list[torch.Tensor] = []  # [objects, tokens] per scene
        self.labels: list[torch.Tensor] = []  # [objects, len(PROPERTIES)] class indices
        for scene, (_, h, w) in zip(scenes, self.grid.tolist()):
            masks = torch.from_numpy(np.stack(scene.object_masks)).float()[:, None]
            area = F.adaptive_avg_pool2d(masks, (h // merge, w // merge)).flatten(1)
            self.weights.append(area / area.sum(1, keepdim=True))
            values = [(o.shape, o.colour, area_class(m)) for o, m in zip(scene.objects, scene.object_masks)]
            self.labels.append(torch.tensor([[classes.index(v) for classes, v in zip(PROPERTIES.values(), row)]
                                             for row in values]))

    def __len__(self) -> int:
        return len(self.weights)

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor], torch.Tensor]:
        pixels = torch.cat([self.pixels[self.first_row[i]:self.first_row[i + 1]] for i in indices])
        labels = torch.cat([self.labels[i] for i in indices])
        return pixels, self.grid[list(indices)], [self.weights[i] for i in indices], labels


def _object_logits(vision_tower: nn.Module, head: nn.Linear, pixels: torch.Tensor, grid: torch.Tensor,
                   weights: list[torch.Tensor]) -> torch.Tensor:
    tokens = vision_tower(pixels, grid_thw=grid).pooler_output  # merged tokens, scene after scene
    pooled, start = [], 0
    for w in weights:
        pooled.append(w @ tokens[start:start + w.shape[1]])
        start += w.shape[1]
    return head(torch.cat(pooled))


def warm_up_vision(model_dir: str | Path, out_dir: str | Path, scenes: Sequence[Scene], steps: int,
                   batch_size: int = 16, lr: float = 1e-3, seed: int = 0, log_every: int = 100,
                   progress: bool = True) -> Path:
    """Copy the (Qwen-layout) model in `model_dir` to `out_dir` with its vision tower trained on object names.

    Also writes `<out_dir>/vision_warmup.jsonl` (training loss and accuracy per property, means over `log_every`
    steps).
    Returns `out_dir`.
    """
    torch.manual_seed(seed)
    model, processor = load_model_and_processor(model_dir, device="cpu", dtype="fp32")
    if processor.family.name != "qwen_vl":
        raise ValueError("the vision warm-up reads Qwen-VL merged image tokens; this model is "
                         + processor.family.name)
    vision_tower = model.vision_tower()
    objects = _Objects(processor, scenes)
    sizes = [len(classes) for classes in PROPERTIES.values()]
    head = nn.Linear(model.config.text_hidden_size, sum(sizes))
    optimizer = torch.optim.AdamW([*vision_tower.parameters(), *head.parameters()], lr=lr)
    rng = np.random.default_rng(seed)
    vision_tower.train()

    def step() -> dict[str, float]:
        pixels, grid, weights, labels = objects.batch(rng.integers(0, len(objects), batch_size).tolist())
        per_property = _object_logits(vision_tower, head, pixels, grid, weights).split(sizes, dim=1)
        loss = sum(F.cross_entropy(logits, labels[:, i]) for i, logits in enumerate(per_property))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return {"loss": loss.item(), **{f"{name}_acc": (logits.argmax(1) == labels[:, i]).float().mean().item()
                                        for i, (name, logits) in enumerate(zip(PROPERTIES, per_property))}}

    return train_and_save(model, model_dir, out_dir, WARMUP_LOG, step, steps, log_every, "vision warm-up", progress)
