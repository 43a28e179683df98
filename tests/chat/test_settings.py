"""The app's limits (`chat.settings.AppSettings`): the page states the numbers that refuse an upload, in the same
words, and the README states the defaults."""

import math
import re
from pathlib import Path

import pytest

from chat import handlers
from chat.session import Session
from chat.settings import MIB, AppSettings, WorkBudget
from chat.ui import build_demo, limits_text
from tests.helpers import ANSWER, write_bomb_png, write_video

README = Path(__file__).resolve().parents[2] / "README.md"


def refusal(chat, settings: AppSettings, file: Path) -> str:
    return list(handlers.ask(Session(chat), "look", [file], settings))[-1][-1]["content"]


def sparse_file(path: Path, size: int) -> Path:
    """A file of `size` bytes that takes no disk space (the limits are checked before anything reads it)."""
    with path.open("wb") as f:
        f.truncate(size)
    return path


@pytest.mark.parametrize("settings, stated", [
    (AppSettings(), ["50 MiB", "40 Mpx", "100 MiB", "120 s"]),
    (AppSettings(max_image_bytes=int(1.5 * MIB), max_image_pixels=2_500_000, max_file_bytes=int(2.25 * MIB),
                 max_video_s=0.5), ["1.5 MiB", "2.5 Mpx", "2.25 MiB", "0.5 s"]),
], ids=["defaults", "changed"])
def test_the_page_states_the_limits_that_refuse(tiny_chats, scripted, tmp_path, settings, stated):
    chat = scripted(tiny_chats["qwen3_vl"], ANSWER)
    image_bytes, pixels, upload_bytes, seconds = stated
    shown = limits_text(settings)
    page = build_demo(chat, settings)
    assert [b.value for b in page.blocks.values() if getattr(b, "elem_id", None) == "limits"] == [shown]
    assert (f"Images up to {image_bytes} and {pixels}; videos up to {upload_bytes}, {seconds} and 4096 px on the "
            "long side.") in shown

    heavy = sparse_file(tmp_path / "heavy.png", settings.max_image_bytes + MIB // 2)
    assert f"the limit is {image_bytes}." in refusal(chat, settings, heavy)
    wide = write_bomb_png(tmp_path / "wide.png", side=math.isqrt(settings.max_image_pixels) + 1)
    assert f"the limit is {pixels}." in refusal(chat, settings, wide)
    huge = sparse_file(tmp_path / "huge.mp4", settings.max_file_bytes + MIB // 2)
    assert f"the limit is {upload_bytes}." in refusal(chat, settings, huge)
    long = write_video(tmp_path / "long.mp4", frames=int(settings.max_video_s) + 2, fps=1)
    assert f"the limit is {seconds}." in refusal(chat, settings, long)


def test_the_model_is_loaded_with_the_limits_the_page_states():
    settings = AppSettings(max_image_pixels=2_500_000, max_file_bytes=int(2.25 * MIB))
    assert (settings.model_limits.media, settings.model_limits.video) == (settings.image, settings.video)


def test_the_readme_states_the_default_limits():
    section = README.read_text(encoding="utf-8").split("## Chat app", 1)[1].split("\n## ", 1)[0]
    section = " ".join(section.split())  # lines wrap anywhere
    pages = [limits_text(AppSettings()), limits_text(AppSettings(budget=WorkBudget.for_device("cuda")))]
    quantities = {q for page in pages for q in re.findall(r"\d[\d.]* (?:MiB|Mpx|s|px|frames)\b", page)}
    assert len(quantities) == 9 and all(q in section for q in quantities), quantities
