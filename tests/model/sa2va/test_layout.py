"""Refusal of checkpoints the converter does not know: the error names the folder, what was found and the supported
layouts, and nothing is written to the conversion cache."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from model.errors import CheckpointError
from model.loading import load_model_and_processor
from model.sa2va.convert.checkpoint import convert_checkpoint
from model.sa2va.convert.layout import key_family

ROOT = Path(__file__).resolve().parents[3]
SAM2_KEYS = [f"grounding_encoder.sam2_model.{name}.weight" for name in (
    "image_encoder.trunk.patch_embed.proj", "sam_prompt_encoder.no_mask_embed", "sam_mask_decoder.iou_token",
    "memory_attention.norm", "memory_encoder.out_proj")] + ["grounding_encoder.sam2_model.maskmem_tpos_enc"]
QWEN3 = {"model_type": "sa2va_chat", "architectures": ["Sa2VAChatModelQwen"],
         "text_config": {"model_type": "qwen3_vl_text"}, "vision_config": {"model_type": "qwen3_vl"}}
INTERNVL = {"model_type": "sa2va_chat", "architectures": ["Sa2VAChatModel"], "llm_config": {"model_type": "qwen2"},
            "vision_config": {"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": 8,
                               "image_size": 28, "patch_size": 14}}


def write_checkpoint(folder: Path, config: dict, keys: list[str]) -> Path:
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(config))
    save_file({key: torch.zeros(2) for key in keys}, folder / "model.safetensors")
    return folder


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("SEGCHAT_CACHE", str(root))
    return root


def refuse(folder: Path, cache: Path) -> str:
    with pytest.raises(CheckpointError) as caught:
        load_model_and_processor(folder, device="cpu")
    message = str(caught.value)
    assert str(folder) in message and "Supported: Sa2VA checkpoints with a SAM2 grounding encoder" in message
    assert "\n" not in message  # one paragraph
    assert not cache.exists() or list(cache.iterdir()) == []  # nothing converted, no temporary folder left
    return message


def test_key_families():
    assert key_family("grounding_encoder.sam2_model.image_encoder.trunk.blocks.0.proj.weight") \
        == "grounding_encoder.sam2_model.image_encoder"
    assert key_family("grounding_encoder.sam3_model.backbone.x") == "grounding_encoder.sam3_model"
    assert key_family("language_model.model.layers.0.attention.wqkv.weight") == "language_model.model"
    assert key_family("model.lm_head.weight") == "model.lm_head"
    assert key_family("mlp1.0.weight") == "mlp1"


def test_unknown_model_type_is_refused(tmp_path, cache):
    folder = write_checkpoint(tmp_path / "llava", {"model_type": "llava"}, ["x.weight"])
    assert "not a Sa2VA config (model_type='llava'" in refuse(folder, cache)


def test_unknown_flavour_is_refused(tmp_path, cache):
    config = {"model_type": "sa2va_chat", "vision_config": {"model_type": "siglip_vision_model"}}
    folder = write_checkpoint(tmp_path / "siglip", config, ["model.model.x.weight"])
    assert "unsupported flavour" in refuse(folder, cache)


def test_sam3_grounding_encoder_is_refused(tmp_path, cache):
    keys = ["model.model.embed.weight", "text_hidden_fcs.0.weight", "grounding_encoder.sam3_model.backbone.0.weight",
            "grounding_encoder.sam3_model.detector.1.weight"]
    message = refuse(write_checkpoint(tmp_path / "sa2va-sam3", QWEN3, keys), cache)
    assert "grounding encoder is not SAM2" in message
    assert "`grounding_encoder.sam3_model.*` (2 tensors)" in message and "SAM 3-based" in message


def test_missing_and_unexpected_families_are_named(tmp_path, cache):
    keys = ["vision_model.x.weight", "language_model.model.x.weight", "text_hidden_fcs.0.weight",
            "vision_tower.extra.weight", *SAM2_KEYS]  # no mlp1, an unknown vision_tower
    message = refuse(write_checkpoint(tmp_path / "odd", INTERNVL, keys), cache)
    assert "it lacks `mlp1.*`" in message
    assert "the internvl flavour does not have: `vision_tower.*` (1 tensors)" in message


def test_unknown_language_model_is_refused_before_writing(tmp_path):
    config = {**INTERNVL, "llm_config": {"model_type": "gpt_neox", "architectures": ["GPTNeoXForCausalLM"]}}
    keys = ["vision_model.x.weight", "mlp1.0.weight", "language_model.model.x.weight", "text_hidden_fcs.0.weight",
            *SAM2_KEYS]
    folder = write_checkpoint(tmp_path / "neox", config, keys)
    (folder / "added_tokens.json").write_text(json.dumps({"<IMG_CONTEXT>": 9}))
    with pytest.raises(CheckpointError, match="unsupported Sa2VA language model: model_type='gpt_neox'"):
        convert_checkpoint(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_app_shows_the_refusal_as_one_paragraph(tmp_path):
    folder = write_checkpoint(tmp_path / "sa2va-sam3", QWEN3, ["model.model.x.weight", "text_hidden_fcs.0.weight",
                                                              "grounding_encoder.sam3_model.x.weight"])
    env = {**os.environ, "SEGCHAT_CACHE": str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, "app.py", "--model", str(folder)], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode != 0 and "Traceback" not in run.stderr
    message = [line for line in run.stderr.splitlines() if line.startswith("Could not load the model")]
    assert len(message) == 1 and "grounding encoder is not SAM2" in message[0] and "Supported:" in message[0]
