"""Every published Sa2VA layout (`model.sa2va.published`).

- The tensor names and shapes the module derives from a config equal those of the official-code oracles.
- Every release's config.json converts at full size: the native modules built from it take every converted tensor
  with its shape (tensors on the meta device, nothing allocated).
- A tiny checkpoint in each InternVL-flavour layout converts, loads with `SegChat.from_pretrained` and answers: an
  image turn with a [SEG], a follow-up, a video turn, and `predict_forward` on an image and a video, each answer
  ending where the official code ends it (about two seconds each: SAM2 reads 1024-px input whatever its width). The
  Qwen-VL flavours are checked end to end by their oracles (test_parity).
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import LogitsProcessorList

from model import SegChat
from model.internlm2_tokenizer import InternLM2Tokenizer
from model.media.masks import VideoMask
from model.sa2va.convert.layout import check_layout
from model.sa2va.convert.sa2va import (build_native_modules, convert_config, convert_state_dict, detect_flavour,
                                       read_shapes)
from model.sa2va.published import (INTERNVIT_300M, PHI3_MINI_128K, RELEASES, Sam2Dims, internvl_config,
                                   official_shapes)
from tests.helpers import SHARED, ScriptedAnswer, script
from tests.model.sa2va.layouts import tiny_checkpoint

ORACLES = {"sa2va-internvl-qwen2": SHARED / "oracle" / "sa2va-internvl-qwen2",
           "sa2va-qwen3vl": SHARED / "oracle" / "sa2va-qwen3vl",
           "sa2va-qwen2_5vl": Path(__file__).resolve().parents[2] / "fixtures" / "oracle" / "sa2va-qwen2_5vl"}

# The InternVL2-4B layout (Phi-3-mini-128k, `phi3_chat`): no release uses it, the converter supports it.
PHI3_LAYOUT = internvl_config(INTERNVIT_300M, PHI3_MINI_128K, "phi3_chat")
# A Sa2VA-1B saved with its head tied to the embeddings (no `language_model.lm_head.weight`).
TIED_1B = json.loads(json.dumps(RELEASES["Sa2VA-1B"].config))
TIED_1B["llm_config"]["tie_word_embeddings"] = True

LAYOUTS = {name: RELEASES[name].config for name in ("Sa2VA-1B", "Sa2VA-4B", "Sa2VA-8B", "Sa2VA-26B",
                                                    "Sa2VA-InternVL3-2B")}
LAYOUTS.update({"InternVL2-4B (Phi-3)": PHI3_LAYOUT, "Sa2VA-1B (tied head)": TIED_1B})


@pytest.mark.parametrize("name", sorted(ORACLES))
def test_official_shapes_equal_the_oracles(name):
    folder = ORACLES[name]
    if not folder.exists():
        pytest.skip(f"{folder} is absent: this test needs the shared material beside the repository")
    config = json.loads((folder / "config.json").read_text())
    assert official_shapes(config, Sam2Dims(trunk_width=16)) == read_shapes(folder)  # the oracles' narrow trunk


def test_deriving_shapes_leaves_the_config_as_published():
    config = RELEASES["Sa2VA-Qwen3-VL-4B"].config
    before = json.dumps(config, sort_keys=True)
    first = official_shapes(config)
    assert official_shapes(config) == first and json.dumps(config, sort_keys=True) == before


@pytest.mark.parametrize("name", [*RELEASES, "InternVL2-4B (Phi-3)"])
def test_every_release_converts_at_full_size(name):
    config, sam2 = (RELEASES[name].config, RELEASES[name].sam2) if name in RELEASES else (PHI3_LAYOUT, Sam2Dims())
    shapes = official_shapes(config, sam2)
    flavour = detect_flavour(config)
    check_layout(Path(name), flavour, shapes)
    converted = convert_config(config, shapes, image_token_id=0)
    assert converted["template"] == config["template"]
    assert converted["vlm_config"]["tie_word_embeddings"] is False
    vlm, sam2_model, projector = build_native_modules(converted)
    native = {f"{prefix}.{k}": tuple(v.shape) for prefix, module in
              (("vlm", vlm), ("sam2", sam2_model), ("projector", projector)) for k, v in module.state_dict().items()}
    tensors = ((k, torch.empty(shape, device="meta")) for k, shape in shapes.items())
    assert {k: tuple(t.shape) for k, t in convert_state_dict(tensors, flavour, converted)} == native


# --- tiny checkpoints that answer ----------------------------------------------------------------------------


@pytest.fixture(scope="module", params=sorted(LAYOUTS))
def layout_chat(request, tmp_path_factory):
    """(layout name, SegChat) for a tiny checkpoint of the layout, converted on load (fp32, CPU)."""
    root = tmp_path_factory.mktemp("layout")
    folder = tiny_checkpoint(root / "checkpoint", LAYOUTS[request.param])
    patch = pytest.MonkeyPatch()
    patch.setenv("SEGCHAT_CACHE", str(root / "cache"))
    try:
        yield request.param, SegChat.from_pretrained(folder, device="cpu", dtype="fp32")
    finally:
        patch.undo()


def _image(height: int = 64, width: int = 96) -> np.ndarray:
    image = np.zeros((height, width, 3), np.uint8)
    image[16:48, 20:60] = (200, 30, 30)
    return image


def _scripted(chat: SegChat, answer: str) -> list[int]:
    """Make the chat's generations answer `answer` followed by the template's first stop word; its ids."""
    ids = script(chat, answer + chat.processor.prompts.template.stop[0])
    chat.generate_options = {"logits_processor": [ScriptedAnswer(ids)]}
    return ids


def test_conversation_image_follow_up_and_video(layout_chat):
    name, chat = layout_chat
    processor = chat.processor
    config = chat.model.config
    assert config.template == LAYOUTS[name]["template"]
    assert config.vlm_config.get_text_config().tie_word_embeddings == (name == "Sa2VA-1B (tied head)")
    if LAYOUTS[name]["llm_config"]["model_type"] == "internlm2":
        assert isinstance(processor.tokenizer, InternLM2Tokenizer)
    conversation = chat.new_conversation()
    try:
        # ScriptedAnswer repeats its last token until generation stops: equal ids mean it stopped at the stop word
        ids = _scripted(chat, "It is <p>the red box</p> [SEG].")
        reply = conversation.ask("Please segment the red object.", image=_image())
        assert reply.token_ids == ids
        assert reply.text == "It is the red box."
        assert [s.label for s in reply.segments] == ["the red box"]
        assert reply.segments[0].mask.shape == (64, 96)

        ids = _scripted(chat, "Because it is red.")
        reply = conversation.ask("Why?")
        assert reply.token_ids == ids and reply.text == "Because it is red." and not reply.segments
        start = processor.prompts.start_ids
        assert conversation.history[: len(start)] == start
        if start:  # InternLM2's <s>: once, at the start of the conversation
            assert conversation.history.count(start[0]) == 1

        ids = _scripted(chat, "Here: [SEG].")
        frames = [Image.fromarray(np.roll(_image(), 4 * t, axis=1)) for t in range(2)]
        reply = conversation.ask("Segment the box.", video=frames)
        assert reply.token_ids == ids
        mask = reply.segments[0].mask
        assert isinstance(mask, VideoMask) and mask.shape == (2, 64, 96)
    finally:
        chat.generate_options = {}


def test_predict_forward_image_and_video(layout_chat, monkeypatch):
    _, chat = layout_chat
    stop = chat.processor.prompts.template.stop[0]
    ids = script(chat, "Sure, [SEG]." + stop)
    vlm = chat.model.vlm
    monkeypatch.setattr(vlm, "generate", partial(vlm.generate, logits_processor=LogitsProcessorList(
        [ScriptedAnswer(ids)])))
    out = chat.predict_forward(image=Image.fromarray(_image()), text="<image>Please segment the red object.")
    # the official prediction keeps the stop word, as the official code decodes every generated token
    assert out["prediction"] == chat.processor.tokenizer.decode(ids).strip()
    assert out["prediction"].endswith(stop)
    assert [m.shape for m in out["prediction_masks"]] == [(1, 64, 96)]
    frames = [Image.fromarray(np.roll(_image(), 4 * t, axis=1)) for t in range(2)]
    out = chat.predict_forward(video=frames, text="<image>Please segment the red object.")
    assert out["prediction"].endswith(stop)
    assert [m.shape for m in out["prediction_masks"]] == [(2, 64, 96)]
