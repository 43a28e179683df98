"""A plain vision-language checkpoint (a hub instruct model: no `[SEG]`, no SAM2), loaded for agent mode.

`PlainVLM` offers what `SegChat` needs of a model (`vlm`, `get_input_embeddings`, an empty `seg_capture`), so the
same conversation code drives it; it segments through SAM 3 only (`model.agent.loop`).
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

from torch import nn
from transformers import AutoConfig

from model.config import FAMILIES, SegChatConfig

# The chat layout (prompts/templates.json) of each language model a native VLM family is built on.
TEMPLATES = {"qwen2": "qwen_chat", "qwen2_5_vl_text": "qwen_chat", "qwen3": "qwen_chat", "qwen3_vl_text": "qwen_chat",
             "internlm2": "internlm2_chat", "phi3": "phi3_chat"}


def is_plain_vlm(config: dict) -> bool:
    """Whether a checkpoint's config.json is a native transformers VLM of a family SegChat knows."""
    return config.get("model_type") in FAMILIES


def plain_config(folder: Path) -> SegChatConfig:
    """A SegChatConfig describing a plain VLM folder (no `[SEG]` token); Qwen pixel bounds from its processor."""
    vlm_config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    text_type = vlm_config.get_text_config().model_type
    if text_type not in TEMPLATES:
        raise ValueError(f"no chat layout is known for a {text_type} language model")
    bounds = {}
    processor_file = folder / "preprocessor_config.json"
    if processor_file.is_file():
        saved = json.loads(processor_file.read_text())
        size = saved.get("size") or {}
        bounds = {"qwen_min_pixels": saved.get("min_pixels") or size.get("shortest_edge"),
                  "qwen_max_pixels": saved.get("max_pixels") or size.get("longest_edge")}
    return SegChatConfig(vlm_config=vlm_config.to_dict(), family=vlm_config.model_type, seg_token=None,
                         template=TEMPLATES[text_type], **{k: v for k, v in bounds.items() if v})


class PlainVLM(nn.Module):
    """A native VLM in the place of `SegChatModel`: it generates text; it has no `[SEG]` path and no SAM2."""

    def __init__(self, vlm: nn.Module, config: SegChatConfig):
        super().__init__()
        self.vlm = vlm
        self.config = config
        self.sam2 = None

    def get_input_embeddings(self) -> nn.Module:
        return self.vlm.get_input_embeddings()

    @contextmanager
    def seg_capture(self, seg_token_id: int | None, **options):
        """Nothing to capture: a plain VLM has no `[SEG]` token."""
        yield SimpleNamespace(states=[])
