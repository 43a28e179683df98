"""The proof's vision warm-up: it trains the vision tower, and only it, on the scenes' object names."""
import json

import pytest
from safetensors.torch import load_file

from model import SegChat
from model.data.synthetic import generate_scenes
from model.recipes.proof.vision_warmup import WARMUP_LOG, warm_up_vision


def test_warm_up_trains_the_vision_tower_only(tiny_dirs, tmp_path):
    source = tiny_dirs["qwen3_vl"]
    out = warm_up_vision(source, tmp_path / "warmed", generate_scenes(4, seed=5, size=64), steps=40, batch_size=4,
                         log_every=10, progress=False)
    log = [json.loads(line) for line in (out / WARMUP_LOG).read_text().splitlines()]
    assert [r["step"] for r in log] == [10, 20, 30, 40]
    assert log[-1]["loss"] < log[0]["loss"]

    before, after = load_file(source / "model.safetensors"), load_file(out / "model.safetensors")
    assert before.keys() == after.keys()
    changed = {k for k in before if not before[k].equal(after[k])}
    assert changed and all(k.startswith("vlm.model.visual.") for k in changed)
    SegChat.from_pretrained(out)  # a complete checkpoint: tokenizer and processor came along


def test_warm_up_needs_a_qwen_layout(tiny_dirs, tmp_path):
    with pytest.raises(ValueError, match="Qwen-VL"):
        warm_up_vision(tiny_dirs["internvl"], tmp_path / "warmed", generate_scenes(2, seed=5, size=64), steps=1)
