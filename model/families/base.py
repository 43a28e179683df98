"""What every VLM family provides to the turn pipeline."""

from dataclasses import dataclass, field

import torch
from PIL import Image

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
    uses_image_processor: bool = False  # a transformers image processor, saved with the checkpoint

    def __init__(self, config: SegChatConfig, prompts: PromptBuilder, image_processor=None):
        self.config = config
        self.prompts = prompts
        self.image_processor = image_processor

    def encode_images(self, images: list[Image.Image], as_video: bool = False) -> VisionInputs:
        """Turn RGB images (or a video's LLM frames) into prompt runs and model tensors."""
        raise NotImplementedError

    def token_types(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Extra forward inputs that depend on the prompt ids (e.g. Qwen-VL's media token types for M-RoPE)."""
        return {}
