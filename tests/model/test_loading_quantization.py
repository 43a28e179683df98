"""bitsandbytes 4/8-bit loading quantizes the language model only, and the engine still answers with masks."""

import numpy as np
import pytest

pytest.importorskip("bitsandbytes")
import bitsandbytes as bnb  # noqa: E402
from torch import nn  # noqa: E402

from model import SegChat  # noqa: E402

IMAGE = np.random.default_rng(1).integers(0, 255, (40, 56, 3), dtype=np.uint8)
QUANTIZED = {"4bit": bnb.nn.Linear4bit, "8bit": bnb.nn.Linear8bitLt}


@pytest.mark.parametrize("kind", ["4bit", "8bit"])
def test_only_the_language_model_is_quantized(tiny_dirs, scripted, kind):
    chat = SegChat.from_pretrained(tiny_dirs["qwen2_5_vl"], quantization=kind)
    quantized = {name for name, module in chat.model.named_modules() if isinstance(module, QUANTIZED[kind])}
    plain = {name for name, module in chat.model.named_modules() if type(module) is nn.Linear}
    assert quantized and all(name.startswith("vlm.model.language_model.") for name in quantized)
    assert any(name.startswith("sam2.") for name in plain)
    assert "vlm.lm_head" in plain and "projector.0" in plain
    assert any(name.startswith("vlm.model.visual.") for name in plain)

    scripted(chat, "Sure, [SEG].<|im_end|>")
    reply = chat.new_conversation().ask("Segment it.", image=IMAGE)
    assert len(reply.segments) == 1 and reply.segments[0].mask.shape == IMAGE.shape[:2]


def test_unknown_quantization_is_refused(tiny_dirs):
    with pytest.raises(ValueError, match="4bit"):
        SegChat.from_pretrained(tiny_dirs["qwen2_5_vl"], quantization="2bit")


def test_a_plain_vlm_in_agent_mode_quantizes_its_language_model_only(tiny_plain_dirs, tiny_sam3_dir):
    chat = SegChat.from_pretrained(tiny_plain_dirs["qwen2_5_vl"], concepts=tiny_sam3_dir, quantization="4bit")
    quantized = {name for name, module in chat.model.named_modules() if isinstance(module, bnb.nn.Linear4bit)}
    plain = {name for name, module in chat.model.named_modules() if type(module) is nn.Linear}
    assert quantized and all(name.startswith("vlm.model.language_model.") for name in quantized)
    assert "vlm.lm_head" in plain and any(name.startswith("vlm.model.visual.") for name in plain)
