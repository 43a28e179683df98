"""The official Qwen-VL prompt comes from the checkpoint's chat template, as the official processor renders it:
Qwen2.5-VL's template adds a default system turn (the Sa2VA-Qwen2.5-VL parity departure), Qwen3-VL's adds none."""

import pytest

from model.sa2va.official import official_prompt

# Written for this test with the behaviours of the two published templates that matter here.
WITH_DEFAULT_SYSTEM = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ item['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
WITHOUT_SYSTEM = WITH_DEFAULT_SYSTEM.replace(
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}", "")


@pytest.fixture
def processor(tiny_chats):
    processor = tiny_chats["qwen2_5_vl"].processor
    saved = processor.tokenizer.chat_template
    yield processor
    processor.tokenizer.chat_template = saved


def test_default_system_turn_of_the_template_is_kept(processor):
    processor.tokenizer.chat_template = WITH_DEFAULT_SYSTEM
    pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    prompt = official_prompt(processor, "<image>Please segment the cat.", "", [[pad] * 3, [pad] * 2])
    assert prompt == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                      "<|vision_start|>" + "<|image_pad|>" * 3 + "<|vision_end|><|vision_start|>"
                      + "<|image_pad|>" * 2 + "<|vision_end|>Please segment the cat.<|im_end|>\n"
                      "<|im_start|>assistant\n")
    text_only = official_prompt(processor, "Why?", "Please segment the cat.\nSure, [SEG].\n", None)
    assert text_only.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                                "Please segment the cat.\nSure, [SEG].\nWhy?<|im_end|>")


def test_template_without_system_turn(processor):
    processor.tokenizer.chat_template = WITHOUT_SYSTEM
    pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    prompt = official_prompt(processor, "Segment it.", "ignored for images", [[pad] * 2])
    assert prompt == ("<|im_start|>user\n<|vision_start|><|image_pad|><|image_pad|><|vision_end|>Segment it."
                      "<|im_end|>\n<|im_start|>assistant\n")
