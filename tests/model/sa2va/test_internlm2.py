"""InternLM2 checkpoints (Sa2VA-8B/26B): the native tokenizer against the official class's ids (fixture made by
tests/fixtures/internlm2_tokenizer/make_reference.py), the fused projection's split, and the Sa2VA-8B-layout oracle
(made by tests/fixtures/make_internlm2_oracle.py; its parity is test_parity's) through a SegChat conversation, with
`<s>` first and `<|im_end|>` as its stop word. Tiny Sa2VA-8B/26B-layout checkpoints are in test_published."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model import SegChat
from model.errors import CheckpointError
from model.internlm2_tokenizer import InternLM2Tokenizer, load_tokenizer
from model.sa2va.convert.internvl_keys import split_internlm2_wqkv

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
INTERNLM2_TOKENIZER = FIXTURES / "internlm2_tokenizer"
ORACLE = FIXTURES / "oracle" / "sa2va-internlm2"
REFERENCE = json.loads((INTERNLM2_TOKENIZER / "reference.json").read_text())
MARKUP = ("<|", "<img", "</", "<IMG", "[SEG]", "<s>", "<unk>", "<p>", "<vp>", "<quad", "<ref", "<box")


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(INTERNLM2_TOKENIZER)


def test_the_native_class_is_chosen_and_matches_the_official_vocabulary(tokenizer):
    assert isinstance(tokenizer, InternLM2Tokenizer)
    assert len(tokenizer) == REFERENCE["len_tokenizer"]
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (REFERENCE["bos_token_id"], REFERENCE["eos_token_id"])
    assert tokenizer.convert_tokens_to_ids("[SEG]") == 649 and tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>") == 642


def test_ids_equal_the_official_tokenizer_on_every_reference_string(tokenizer):
    assert len(REFERENCE["cases"]) >= 300
    for case in REFERENCE["cases"]:
        assert tokenizer.encode(case["text"]) == case["ids"], case["text"]
        assert tokenizer.encode(case["text"], add_special_tokens=False) == case["ids_no_special"], case["text"]


def test_bos_first_as_the_official_encode_adds_it(tokenizer):
    prompts = [c for c in REFERENCE["cases"] if c["text"].startswith("<|im_start|>")]
    assert prompts and all(c["ids"][0] == tokenizer.bos_token_id for c in prompts)
    assert tokenizer("")["input_ids"] == [tokenizer.bos_token_id]


def test_decoding_equals_the_official_class(tokenizer):
    """Every string decodes as the official class decodes it: added tokens set apart by spaces, spaces before
    punctuation squeezed, markup included."""
    marked = [c for c in REFERENCE["cases"] if any(m in c["text"] for m in MARKUP)]
    assert len(marked) > 50
    for case in REFERENCE["cases"]:
        assert tokenizer.decode(case["ids_no_special"]) == case["decoded"], case["text"]


def test_save_and_reload_keeps_the_class(tokenizer, tmp_path):
    tokenizer.save_pretrained(tmp_path)
    again = load_tokenizer(tmp_path)
    assert isinstance(again, InternLM2Tokenizer)
    text = REFERENCE["cases"][-1]["text"]
    assert again.encode(text) == tokenizer.encode(text)


def test_missing_tokenizer_model_is_a_clear_error(tmp_path):
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "InternLM2Tokenizer"}))
    with pytest.raises(CheckpointError, match="needs tokenizer.model, which is missing"):
        load_tokenizer(tmp_path)


def fuse_wqkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """InternLM2's fused projection: per kv head, its query heads then its key and value rows."""
    hidden = q.shape[1]
    head_dim = k.shape[0] // kv_heads
    groups = q.shape[0] // (kv_heads * head_dim)
    parts = [q.reshape(kv_heads, groups, head_dim, hidden), k.reshape(kv_heads, 1, head_dim, hidden),
             v.reshape(kv_heads, 1, head_dim, hidden)]
    return torch.cat(parts, dim=1).reshape(-1, hidden)


def test_wqkv_fuse_is_the_inverse_of_the_converter_split():
    q, k, v = torch.randn(12, 5), torch.randn(6, 5), torch.randn(6, 5)
    parts = dict(split_internlm2_wqkv("l.attention.wqkv.weight", fuse_wqkv(q, k, v, kv_heads=2), 4, 2))
    assert torch.equal(parts["l.self_attn.q_proj.weight"], q) and torch.equal(parts["l.self_attn.v_proj.weight"], v)


@pytest.mark.slow
def test_sa2va_8b_layout_loads_and_answers(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGCHAT_CACHE", str(tmp_path / "cache"))
    chat = SegChat.from_pretrained(ORACLE, device="cpu", dtype="fp32")
    processor = chat.processor
    assert isinstance(processor.tokenizer, InternLM2Tokenizer)
    assert chat.model.config.template == "internlm2_chat"
    tokenizer = processor.tokenizer
    assert processor.prompts.stop_ids == [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.eos_token_id]
    conversation = chat.new_conversation()
    assert conversation.history[0] == processor.tokenizer.bos_token_id
    image = np.zeros((64, 96, 3), np.uint8)
    image[16:48, 20:60] = (200, 30, 30)
    reply = conversation.ask("Please segment the red object.", image=image)
    assert reply.token_ids and isinstance(reply.text, str)
    assert conversation.history.count(processor.tokenizer.bos_token_id) == 1
    assert conversation.ask("And why?").token_ids
