"""Shared fixtures: tiny random checkpoints of every family (built once per session, offline)."""

from pathlib import Path

import pytest
import torch
from transformers import LogitsProcessor

from model.tiny import build_tiny

SHARED = Path(__file__).resolve().parents[2] / "shared"
FAMILIES = ["internvl", "qwen2_5_vl", "qwen3_vl"]


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or skip the test when the folder is absent (a user's clone)."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: this test needs the shared material beside the repository")
    return path


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {family: build_tiny(root / family, family) for family in FAMILIES}


@pytest.fixture(scope="session")
def tiny_chats(tiny_dirs):
    from model import SegChat

    return {family: SegChat.from_pretrained(path) for family, path in tiny_dirs.items()}


class ScriptedAnswer(LogitsProcessor):
    """Makes greedy decoding emit `token_ids` in order (tests need answers with known [SEG]s)."""

    def __init__(self, token_ids: list[int]):
        self.token_ids = token_ids
        self.prompt_len = 0
        self.last_len = -1

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if input_ids.shape[1] != self.last_len + 1:  # a new generate call
            self.prompt_len = input_ids.shape[1]
        self.last_len = input_ids.shape[1]
        step = min(input_ids.shape[1] - self.prompt_len, len(self.token_ids) - 1)
        forced = torch.full_like(scores, -1e9)
        forced[:, self.token_ids[step]] = 0
        return forced


def script(chat, text: str) -> list[int]:
    """Token ids of an answer written with markup, e.g. 'It is <p>red</p> [SEG].<|im_end|>'."""
    return chat.processor.tokenizer(text, add_special_tokens=False)["input_ids"]


@pytest.fixture
def scripted():
    """`scripted(chat, answer)` forces the chat's next answers to `answer`; restores it afterwards."""
    touched = []

    def apply(chat, answer: str):
        touched.append(chat)
        chat.generate_options = {"logits_processor": [ScriptedAnswer(script(chat, answer))]}
        return chat

    yield apply
    for chat in touched:
        chat.generate_options = {}
