"""What every VLM family provides to the turn pipeline."""

import itertools
from dataclasses import dataclass, field

import torch
from PIL import Image

from model.config import SegChatConfig
from model.prompting import PromptBuilder

_media_keys = itertools.count()


@dataclass
class VisionInputs:
    """The media of a conversation as the VLM sees it: image-token runs for the prompt and tensors for forward.

    `regions` are region prompts read from the image features (InternVL's `<vp>` tokens): per region, the bool
    cells of the image-token grid whose features fill its tokens, in prompt order after every image token.

    `key` names these media for a cached context (`model.context_cache`): equal prompt ids with other media behind
    them are another context. Media a follow-up grows from the conversation's (`extended`, `with_regions`) keep the
    key they grew from and what was added, so a context holding the former continues with the addition alone."""

    runs: list[list[int]]
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    regions: list[torch.Tensor] = field(default_factory=list)
    key: int = field(default_factory=lambda: next(_media_keys), compare=False)
    grown_from: "tuple[int, VisionInputs] | None" = field(default=None, compare=False, repr=False)

    @property
    def placeholders(self) -> int:
        """How many prompt tokens these media fill (image tokens and `<vp>` tokens)."""
        return sum(len(run) for run in self.runs) + sum(int(cells.sum()) for cells in self.regions)

    def to(self, device: torch.device, dtype: torch.dtype) -> "VisionInputs":
        moved = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else None) for k, v in self.tensors.items()}
        return VisionInputs(self.runs, moved, self.regions)

    @classmethod
    def concat(cls, parts: list["VisionInputs"]) -> "VisionInputs":
        """Several media (a batch's samples, or a conversation's images) in order, as one input."""
        keys = parts[0].tensors.keys()
        return cls([run for part in parts for run in part.runs],
                    {k: torch.cat([part.tensors[k] for part in parts]) for k in keys},
                    [cells for part in parts for cells in part.regions])

    def extended(self, added: "VisionInputs") -> "VisionInputs":
        """These media followed by `added` (a follow-up's new pictures)."""
        grown = VisionInputs.concat([self, added])
        grown.grown_from = (self.key, added)
        return grown

    def with_regions(self, cells: list[torch.Tensor]) -> "VisionInputs":
        return VisionInputs(self.runs, self.tensors, self.regions + cells,
                            grown_from=(self.key, VisionInputs([], regions=cells)))


class Family:
    """Base class; one subclass per VLM family, in its own module."""

    name: str
    uses_image_processor: bool = False  # a transformers image processor, saved with the checkpoint

    def __init__(self, config: SegChatConfig, prompts: PromptBuilder, image_processor=None):
        self.config = config
        self.prompts = prompts
        self.image_processor = image_processor

    def encode_images(self, images: list[Image.Image], as_video: bool = False) -> VisionInputs:
        """Turn RGB images (or a video's LLM frames) into prompt runs and model tensors."""
        raise NotImplementedError

    def split_pictures(self, vision: VisionInputs) -> list[VisionInputs]:
        """`vision` (without regions) as one `VisionInputs` per picture, in prompt order."""
        raise NotImplementedError

    def token_types(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Extra forward inputs that depend on the prompt ids (e.g. Qwen-VL's media token types for M-RoPE)."""
        return {}
