"""Fixtures: tiny random checkpoints of every family (built once per session, offline) and scripted answers.

Helpers live in `tests/helpers.py`."""

from pathlib import Path

import pytest

from model.tiny import build_tiny
from tests.helpers import FAMILIES, ScriptedAnswer, script


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {family: build_tiny(root / family, family) for family in FAMILIES}


@pytest.fixture(scope="session")
def tiny_chats(tiny_dirs):
    from model import SegChat

    return {family: SegChat.from_pretrained(path) for family, path in tiny_dirs.items()}


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
