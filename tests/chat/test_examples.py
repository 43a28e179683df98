"""The app's shipped examples: what the folder holds, and one example run through `chat.handlers`."""

import shutil

import av
import pytest
from PIL import Image

from chat import examples, handlers
from chat.examples import FOLDER, is_example_file, load_examples
from chat.session import Session
from chat.settings import MIB, AppSettings
from model.media.image import load_image
from model.media.kind import media_kind
from model.media.video_file import VideoFile
from tests.helpers import ANSWER, SETTINGS

EXAMPLES = load_examples()


def test_every_file_of_the_folder_is_listed_once_with_an_instruction():
    media = {p.name for p in FOLDER.iterdir() if p.is_file()} - {"__init__.py", "examples.json"}
    assert sorted(e.file.name for e in EXAMPLES) == sorted(media)
    assert all(e.instruction.strip() for e in EXAMPLES)
    kinds = [media_kind(e.file) for e in EXAMPLES]
    assert kinds.count("video") == 1 and 4 <= kinds.count("image") <= 6


def test_the_examples_are_small_and_open_within_the_app_limits():
    assert sum(e.file.stat().st_size for e in EXAMPLES) < 1 * MIB
    settings = AppSettings()
    for example in EXAMPLES:
        if media_kind(example.file) == "image":
            assert max(load_image(example.file, settings.image).size) <= 640
            assert Image.open(example.file).format == "JPEG"
        else:
            info = VideoFile(example.file, settings.video).info
            assert info.width <= 480 and info.duration_s <= 3.5 and info.codec == "h264"
            with av.open(str(example.file)) as container:
                assert not container.streams.audio


@pytest.fixture
def shipped(tmp_path, monkeypatch):
    """The examples from a copy of the folder standing in for it (a regression must not delete the real files)."""
    folder = tmp_path / "examples"
    shutil.copytree(FOLDER, folder)
    monkeypatch.setattr(examples, "FOLDER", folder)
    copies = examples.load_examples()
    return {".jpg": copies[0], ".mp4": next(e for e in copies if e.file.suffix == ".mp4")}


@pytest.mark.parametrize("suffix", [".jpg", ".mp4"])
def test_an_example_runs_and_no_session_removes_its_file(tiny_chats, scripted, shipped, suffix):
    example = shipped[suffix]
    chat = scripted(tiny_chats["qwen3_vl"], ANSWER)
    for _ in range(2):  # a second session after the first one has ended
        session = Session(chat)
        final = list(handlers.ask(session, example.instruction, [example.file], SETTINGS))[-1]
        assert session.turns[-1].error is None and session.last_result is not None
        assert final[0]["content"] == example.instruction
        assert "the red apple" in final[2]["content"]
        list(handlers.ask(session, "x" * 10_000, [example.file], SETTINGS))  # refused: its file is not kept
        session.close()
        assert example.file.exists()


def test_a_copy_of_an_example_is_an_upload_removed_with_its_session(tiny_chats, scripted, tmp_path):
    example = EXAMPLES[0]
    copy = tmp_path / example.file.name
    copy.write_bytes(example.file.read_bytes())
    assert is_example_file(example.file) and not is_example_file(copy)
    session = Session(scripted(tiny_chats["qwen3_vl"], ANSWER))
    list(handlers.ask(session, example.instruction, [copy], SETTINGS))
    session.close()
    assert not copy.exists() and example.file.exists()
