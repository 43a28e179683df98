"""Fixtures: tiny random checkpoints of every family (built once per session, offline) and scripted answers.

Helpers live in `tests/helpers.py`."""

from pathlib import Path

import pytest

from model.tiny import build_tiny, build_tiny_plain, build_tiny_sam3
from tests.helpers import FAMILIES, ScriptedAnswer, script


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {family: build_tiny(root / family, family) for family in FAMILIES}


@pytest.fixture(scope="session")
def tiny_chats(tiny_dirs):
    from model import SegChat

    return {family: SegChat.from_pretrained(path) for family, path in tiny_dirs.items()}


@pytest.fixture(scope="module")
def own_chats(tiny_dirs):
    """Chats of the module's own per family, loaded on first use (its tests change their options), answering at
    most 24 tokens: `own_chats("qwen3_vl")`."""
    from model import SegChat

    loaded = {}

    def get(family: str) -> SegChat:
        if family not in loaded:
            loaded[family] = SegChat.from_pretrained(tiny_dirs[family])
            loaded[family].limits.max_new_tokens = 24
        return loaded[family]

    return get


@pytest.fixture(scope="session")
def tiny_plain_dirs(tmp_path_factory) -> dict[str, Path]:
    """Tiny plain VLMs (no [SEG], no SAM2: the hub instruct layout) of every family, for agent mode."""
    root = tmp_path_factory.mktemp("plain")
    return {family: build_tiny_plain(root / family, family) for family in FAMILIES}


@pytest.fixture(scope="session")
def tiny_sam3_dir(tmp_path_factory) -> Path:
    return build_tiny_sam3(tmp_path_factory.mktemp("tiny") / "sam3")


@pytest.fixture(scope="session")
def tiny_sam3_video_dir(tmp_path_factory) -> Path:
    return build_tiny_sam3(tmp_path_factory.mktemp("tiny") / "sam3_video", video=True)


@pytest.fixture(scope="session")
def video_concept_chat(tiny_dirs, tiny_sam3_video_dir):
    """A tiny qwen2_5_vl chat with the tiny full SAM 3 (detector + tracker: concepts in videos too)."""
    from model import SegChat

    return SegChat.from_pretrained(tiny_dirs["qwen2_5_vl"], concepts=tiny_sam3_video_dir)


@pytest.fixture(scope="session")
def concept_chat(tiny_dirs, tiny_sam3_dir):
    """A tiny qwen2_5_vl chat with tiny SAM 3 concept search (its own model, so tests may change it)."""
    from model import SegChat

    return SegChat.from_pretrained(tiny_dirs["qwen2_5_vl"], concepts=tiny_sam3_dir)


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


@pytest.fixture(scope="session")
def agent_chat(tiny_plain_dirs, tiny_sam3_dir):
    """A tiny plain qwen3_vl in agent mode with its own tiny SAM 3, whose random instances all pass the
    thresholds (drive it with `tests.helpers.scripted_rounds`)."""
    from model import SegChat
    from model.segmenters.concepts import ConceptOptions

    chat = SegChat.from_pretrained(tiny_plain_dirs["qwen3_vl"], concepts=tiny_sam3_dir)
    chat.concept_segmenter.options = ConceptOptions(score=0.0, presence=0.0)
    return chat


@pytest.fixture(scope="session")
def agent_video_chat(tiny_plain_dirs, tiny_sam3_video_dir):
    """`agent_chat` with the tiny full SAM 3 (detector + tracker): agent turns on videos."""
    from model import SegChat
    from model.segmenters.concepts import ConceptOptions

    chat = SegChat.from_pretrained(tiny_plain_dirs["qwen3_vl"], concepts=tiny_sam3_video_dir)
    chat.concept_segmenter.options = ConceptOptions(score=0.0, presence=0.0)
    return chat
