"""What every VLM family provides to the turn pipeline."""

from dataclasses import dataclass, field

import torch
from PIL import Image
from torch import nn

from model.config import SegChatConfig
from model.prompting import PromptBuilder
from model.seg_capture import SegCapture


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

    def seg_capture(self, vlm: nn.Module, seg_token_id: int, **options) -> SegCapture:
        """Hooks reading the hidden state that becomes a mask prompt: the final norm's output, or its input
        (the last decoder layer's output) for checkpoints trained on the pre-norm state."""
        pre_norm = self.config.seg_hidden_state == "last_layer"
        return SegCapture(vlm, vlm.model.language_model.norm, seg_token_id, read_input=pre_norm, **options)
