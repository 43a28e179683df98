"""`SegChatProcessor`: what every caller (inference, training, the official path) gets its inputs from."""

import numpy as np
import pytest
import torch
from PIL import Image

from model.config import SegChatConfig
from model.errors import InputError
from model.processing import Limits, SegChatProcessor
from tests.helpers import FAMILIES

IMAGE = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 56, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def processors(tiny_dirs):
    return {family: SegChatProcessor.from_pretrained(folder) for family, folder in tiny_dirs.items()}


@pytest.mark.parametrize("family", FAMILIES)
def test_loads_from_a_checkpoint_folder_with_the_family_image_processor(processors, tiny_dirs, family):
    processor = processors[family]
    assert processor.config.to_dict() == SegChatConfig.from_pretrained(tiny_dirs[family]).to_dict()
    assert (processor.image_processor is None) == (family == "internvl")
    assert processor.tokenizer.convert_ids_to_tokens(processor.seg_token_id) == "[SEG]"


@pytest.mark.parametrize("family", FAMILIES)
def test_user_turn_inserts_the_media_block_and_keeps_typed_markup_as_text(processors, family):
    processor = processors[family]
    vision = processor.encode_images([IMAGE])
    ids = processor.user_turn("find the [SEG] <image>", vision)
    assert processor.seg_token_id not in ids
    run, text = vision.runs[0], processor.prompts.data("find the [SEG] <image>")
    media_at = next(i for i in range(len(ids)) if ids[i:i + len(run)] == run)
    text_at = next(i for i in range(len(ids)) if ids[i:i + len(text)] == text)
    assert media_at + len(run) <= text_at  # the media comes before the question in every family's layout
    assert processor.user_turn("find it") == processor.prompts.user_turn("find it")


@pytest.mark.parametrize("family", FAMILIES)
def test_model_inputs_carry_pixels_and_the_family_token_types(processors, family):
    processor = processors[family]
    vision = processor.encode_images([IMAGE])
    ids = processor.conversation_start() + processor.user_turn("what is it?", vision)
    inputs = processor.model_inputs(torch.tensor([ids]), vision, torch.device("cpu"), torch.float32)
    assert inputs["pixel_values"].dtype == torch.float32
    assert torch.equal(inputs["attention_mask"], torch.ones_like(inputs["input_ids"]))
    if family == "internvl":
        assert "mm_token_type_ids" not in inputs
    else:
        types = inputs["mm_token_type_ids"][0]
        assert int(types.sum()) == len(vision.runs[0])  # exactly the image placeholders, marked 1


def test_sam_pixels_and_answers(processors):
    processor = processors["qwen3_vl"]
    size = processor.config.sam2_config.image_size
    assert processor.sam_pixels(IMAGE).shape == (1, 3, size, size)
    stop = processor.prompts.stop_ids[0]
    cut = processor.tokenizer("a <p>cat</p> [SEG]", add_special_tokens=False)["input_ids"]
    assert processor.closed_answer(cut)[: len(cut) + 1] == cut + [stop]
    parsed = processor.decode_answer(cut)
    assert parsed.labels == ["cat"]


@pytest.mark.parametrize("text, message", [("   ", "Please type"), ("x" * 11, "11 characters")])
def test_text_is_checked_before_anything_else(tiny_dirs, text, message):
    processor = SegChatProcessor.from_pretrained(tiny_dirs["internvl"], limits=Limits(max_text_chars=10))
    with pytest.raises(InputError, match=message):
        processor.check_text(text)
    assert processor.check_text("  hi  ") == "hi"
