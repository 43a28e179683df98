"""VLM families: how each one lays out media in the prompt and where its [SEG] state is read."""

from model.config import SegChatConfig
from model.families.base import Family, VisionInputs
from model.families.internvl import InternVLFamily
from model.families.qwen_vl import QwenVLFamily
from model.prompting import PromptBuilder

_FAMILIES: dict[str, type[Family]] = {
    "internvl": InternVLFamily,
    "qwen2_5_vl": QwenVLFamily,
    "qwen3_vl": QwenVLFamily,
}


def make_family(config: SegChatConfig, prompts: PromptBuilder, image_processor=None) -> Family:
    return _FAMILIES[config.family](config, prompts, image_processor)


def needs_image_processor(config: SegChatConfig) -> bool:
    """Whether the checkpoint's family encodes images with a transformers image processor saved beside it."""
    return _FAMILIES[config.family].uses_image_processor


__all__ = ["Family", "VisionInputs", "make_family", "needs_image_processor"]
