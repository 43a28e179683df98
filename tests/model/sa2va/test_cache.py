"""The converted cache: weights in the dtype the model is loaded with (never wider than the source), a tied head
stored once, tokenizer files byte for byte."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from model.loading import prepare_checkpoint
from model.modeling import SegChatModel
from model.sa2va.convert.checkpoint import convert_checkpoint
from tests.helpers import shared_path


def _converted(folder: Path) -> dict[str, torch.dtype]:
    dtypes = {}
    for path in folder.glob("*.safetensors"):
        with safe_open(path, "pt") as f:
            dtypes.update({k: f.get_slice(k).get_dtype() for k in f.keys()})
    return dtypes


def _weight_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


@pytest.fixture(scope="module")
def fp32_qwen3vl(tmp_path_factory) -> Path:
    """The Qwen3-VL oracle with fp32 weights, as the releases store them, and without its output head (tied)."""
    oracle = shared_path("oracle", "sa2va-qwen3vl")
    folder = tmp_path_factory.mktemp("fp32") / "sa2va-qwen3vl"
    shutil.copytree(oracle, folder, ignore=shutil.ignore_patterns("reference", "*.safetensors"))
    state = {k: v.float() for k, v in load_file(oracle / "model.safetensors").items() if k != "model.lm_head.weight"}
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def test_cache_is_written_in_the_load_dtype(fp32_qwen3vl, tmp_path, monkeypatch):
    monkeypatch.setenv("SEGCHAT_CACHE", str(tmp_path / "cache"))
    bf16 = prepare_checkpoint(fp32_qwen3vl, dtype=torch.bfloat16)
    fp32 = prepare_checkpoint(fp32_qwen3vl, dtype=torch.float32)
    assert bf16 != fp32  # one cache entry per dtype
    assert set(_converted(bf16).values()) == {"BF16"}
    assert set(_converted(fp32).values()) == {"F32"}
    source = _weight_bytes(fp32_qwen3vl)
    assert _weight_bytes(fp32) < 1.01 * source
    assert _weight_bytes(bf16) < 0.51 * source
    assert prepare_checkpoint(fp32_qwen3vl, dtype=torch.bfloat16) == bf16  # converted once


def test_source_dtype_is_never_widened(tmp_path):
    oracle = shared_path("oracle", "sa2va-qwen3vl")  # bf16 weights
    out = convert_checkpoint(oracle, tmp_path / "native", dtype=torch.float32)
    assert set(_converted(out).values()) == {"BF16"}


def test_tied_head_is_stored_once_and_tied_at_load(fp32_qwen3vl, tmp_path):
    out = convert_checkpoint(fp32_qwen3vl, tmp_path / "native", dtype=torch.bfloat16)
    keys = _converted(out)
    assert "vlm.lm_head.weight" not in keys and "vlm.model.language_model.embed_tokens.weight" in keys
    model = SegChatModel.from_pretrained(out)
    embeddings = model.vlm.get_input_embeddings().weight
    assert model.vlm.lm_head.weight.data_ptr() == embeddings.data_ptr()
    source = load_file(fp32_qwen3vl / "model.safetensors")["model.model.language_model.embed_tokens.weight"]
    assert torch.equal(embeddings, source.bfloat16())


def test_tokenizer_files_are_copied_byte_for_byte(tmp_path):
    oracle = shared_path("oracle", "sa2va-qwen3vl")
    out = convert_checkpoint(oracle, tmp_path / "native")
    for name in ("tokenizer.json", "vocab.json", "merges.txt", "chat_template.jinja", "tokenizer_config.json"):
        assert (out / name).read_bytes() == (oracle / name).read_bytes(), name


def test_auto_map_is_dropped_from_tokenizer_config(tmp_path):
    oracle = shared_path("oracle", "sa2va-internvl-qwen2")
    folder = tmp_path / "with-auto-map"
    shutil.copytree(oracle, folder, ignore=shutil.ignore_patterns("reference"))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["auto_map"] = {"AutoTokenizer": ["tokenization_x.XTokenizer", None]}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    out = convert_checkpoint(folder, tmp_path / "native")
    assert "auto_map" not in json.loads((out / "tokenizer_config.json").read_text())
    assert (out / "tokenizer.json").read_bytes() == (oracle / "tokenizer.json").read_bytes()
