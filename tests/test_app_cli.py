"""`python app.py`: flags, and the message (not a traceback) when the model cannot be loaded."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import app
from chat.settings import MIB, AppSettings

ROOT = Path(__file__).resolve().parents[1]


def test_flags_and_sizes():
    args = app.parse_args(["--model", "some/folder", "--quantization", "4bit", "--port", "7999",
                           "--max-file-size", "1.5GB"])
    assert (args.model, args.quantization, args.port, args.share) == ("some/folder", "4bit", 7999, False)
    assert args.max_file_size == int(1.5 * 2**30)
    assert app.parse_args([]).model is None  # load_chats picks app.DEFAULT_MODEL unless --agent is alone
    assert app.parse_size("200") == 200 * 2**20 and app.parse_size("500kb") == 500 * 2**10
    with pytest.raises(Exception):
        app.parse_size("lots")


def test_quantization_choice():
    assert app.choose_quantization("none", None) is None
    assert app.choose_quantization("8bit", "cpu") == "8bit"
    assert app.choose_quantization(None, "cpu") is None


@pytest.mark.parametrize("argv, expected", [
    (["--model", "/nonexistent/checkpoint/folder"], "No folder"),
    ([], "Could not download 'ByteDance/Sa2VA-Qwen3-VL-4B'"),  # the default model, with the hub offline
])
def test_unloadable_model_exits_with_a_message(argv, expected):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "SEGCHAT_MODEL": app.DEFAULT_MODEL}
    run = subprocess.run([sys.executable, "app.py", *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode != 0
    assert "Could not load the model" in run.stderr and expected in run.stderr
    assert "Traceback" not in run.stderr


def test_an_agent_alone_or_beside_the_model(tiny_dirs, tiny_plain_dirs, tiny_sam3_dir):
    agent = ["--agent", str(tiny_plain_dirs["qwen3_vl"]), "--concepts", str(tiny_sam3_dir)]
    chat, beside = app.load_chats(app.parse_args(agent))
    assert chat.mode == "agent" and beside is None
    limits = AppSettings(max_file_bytes=3 * MIB).model_limits  # what `main` loads them with
    chat, beside = app.load_chats(app.parse_args([*agent, "--model", str(tiny_dirs["qwen3_vl"])]), limits)
    assert (chat.mode, beside.mode) == ("seg", "agent")
    assert chat.limits == limits and beside.limits == limits
