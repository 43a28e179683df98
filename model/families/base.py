"""What every VLM family provides to the turn pipeline."""

from dataclasses import dataclass, field

import torch
from PIL import Image
from torch import nn

from model.config import SegChatConfig
from model.prompting import PromptBuilder


@dataclass
class VisionInputs:
    """The media of a conversation as the VLM sees it: image-token runs for the prompt and tensors for forward."""

    runs: list[list[int]]
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)

    def to(self, device: torch.device, dtype: torch.dtype) -> "VisionInputs":
        moved = {k: v.to(device=device, dtype=dtype if v.is_floating_point() else None) for k, v in self.tensors.items()}
        return VisionInputs(self.runs, moved)


class Family:
    """Base class; one subclass per VLM family, in its own module."""

    name: str

    def __init__(self, config: SegChatConfig, prompts: PromptBuilder, image_processor=None):
        self.config = config
        self.prompts = prompts
        self.image_processor = image_processor

    def encode_images(self, images: list[Image.Image], as_video: bool = False) -> VisionInputs:
        """Turn RGB images (or a video's LLM frames) into prompt runs and model tensors."""
        raise NotImplementedError

    def forward_kwargs(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Extra per-call inputs that depend on the prompt ids (e.g. M-RoPE token types)."""
        return {}

    def seg_state_module(self, vlm: nn.Module) -> nn.Module:
        """The module whose output holds the hidden state that becomes a mask prompt."""
        text_model = vlm.model.language_model
        if self.config.seg_hidden_state == "last_layer":
            return text_model.layers[-1]
        return text_model.norm
