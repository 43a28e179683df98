"""Hostile input against a real server on 127.0.0.1 (gradio_client and raw HTTP) with the tiny model.

Every case asserts: a clear message, the server alive, the same session usable afterwards with its history intact,
and another session unaffected. The server's log must show refusals as one line each, without tracebacks.
"""

import json
import io
import logging
import math
import os
import tempfile
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from tests.helpers import SETTINGS, serving, write_bomb_png, write_image, write_video


@pytest.fixture(scope="module")
def temp_dir():
    """Gradio's upload cache in a folder of this module's own, to see what is left behind."""
    previous = os.environ.get("GRADIO_TEMP_DIR")
    with tempfile.TemporaryDirectory(prefix="segchat-hostile-") as folder:
        os.environ["GRADIO_TEMP_DIR"] = folder
        yield Path(folder)
    if previous is None:
        os.environ.pop("GRADIO_TEMP_DIR", None)
    else:
        os.environ["GRADIO_TEMP_DIR"] = previous


@pytest.fixture(scope="module")
def url(tiny_chats, temp_dir):
    with serving(tiny_chats["qwen3_vl"]) as address:
        yield address


@pytest.fixture(scope="module")
def bystander(url, tmp_path_factory):
    """Another session, started before the attacks, that must keep working."""
    client = connect(url)
    image = write_image(tmp_path_factory.mktemp("bystander") / "calm.png", 40, 30)
    ask(client, "bystander question", image)
    return client


def connect(url: str) -> Client:
    """A client that leaves the chat's files on the server: `gradio_client` would otherwise download every image of
    the whole chat again on each call (a fresh TLS context per file), which made a long chat's turns slow here."""
    return Client(url, verbose=False, download_files=False)


def opened(file: dict) -> Image.Image:
    """The image behind a file the server returned (see `connect`)."""
    response = httpx.get(file["url"])
    response.raise_for_status()
    return Image.open(io.BytesIO(response.content))


def ask(client: Client, text, path=None, video=("sa2va", 5, "first")) -> tuple:
    message = {"text": text, "files": [handle_file(str(path))] if path else []}
    return client.predict(message, *video, api_name="/ask")


def texts(chat: list[dict]) -> list[str]:
    return [b["text"] for m in chat for b in m["content"] if b["type"] == "text"]


def user_texts(chat: list[dict]) -> list[str]:
    return texts([m for m in chat if m["role"] == "user"])


def last_text(chat: list[dict]) -> str:
    return texts(chat)[-1]


def raw_call(client: Client, api_name: str, data: list) -> dict:
    """Call an endpoint in `client`'s session with a JSON body `gradio_client` would refuse to send (NaN, lone
    surrogates); returns the final message of the event stream."""
    body = {"data": data, "fn_index": client._infer_fn_index(api_name, None), "session_hash": client.session_hash,
            "event_data": None, "trigger_id": None}
    raw = json.dumps(body, ensure_ascii=True, allow_nan=True)
    httpx.post(client.sse_data_url, content=raw, headers={"content-type": "application/json"}).raise_for_status()
    with httpx.stream("GET", client.sse_url, params={"session_hash": client.session_hash},
                      timeout=120) as response:
        for line in response.iter_lines():
            if line.startswith("data:"):
                event = json.loads(line[5:])
                if event.get("msg") == "process_completed":
                    return event
    raise AssertionError("the event stream ended without a result")


@pytest.fixture(scope="module")
def session(url, tmp_path_factory):
    """The attacked session, shared by the cases; `session.history` is what its chat must show."""
    client = connect(url)
    ask(client, "first question", write_image(tmp_path_factory.mktemp("session") / "first.png", 64, 48))
    client.history = ["first question"]
    return client


@pytest.fixture
def still_fine(bystander):
    """`check(client, kept)`: the client's chat holds its history plus the `kept` attacking message (if any) and it
    still answers; so does the bystander."""
    def check(client: Client, kept: list[str]) -> None:
        history = getattr(client, "history", [])
        history += [*kept, "follow-up after the attack"]
        chat, _, canvas, *_ = ask(client, "follow-up after the attack")
        assert user_texts(chat) == history
        assert not last_text(chat).startswith("⚠️") and opened(canvas).size
        chat = ask(bystander, "bystander follow-up")[0]
        assert "bystander question" in user_texts(chat) and not last_text(chat).startswith("⚠️")
    return check


# ------------------------------------------------------------------------------------------ media

def _cmyk(path):
    Image.new("CMYK", (40, 30), (10, 200, 30, 0)).save(path)
    return path, (40, 30)


def _sixteen_bit(path):
    Image.fromarray(np.arange(1200, dtype=np.uint16).reshape(30, 40) * 50).save(path)
    return path, (40, 30)


def _palette_alpha(path):
    image = Image.new("P", (40, 30))
    image.info["transparency"] = 0
    image.save(path, transparency=0)
    return path, (40, 30)


def _exif_rotated(path):
    image = Image.new("RGB", (40, 30), (200, 0, 0))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90° for display
    image.save(path, exif=exif)
    return path, (30, 40)


@pytest.mark.parametrize("make, name", [(_cmyk, "cmyk.jpg"), (_sixteen_bit, "deep.png"),
                                        (_palette_alpha, "palette.png"), (_exif_rotated, "phone.jpg")])
def test_odd_images_are_answered(session, still_fine, tmp_path, make, name):
    path, size = make(tmp_path / name)
    chat, _, canvas, *_ = ask(session, "what is this?", path)
    assert not last_text(chat).startswith("⚠️") and opened(canvas).size == size
    still_fine(session, ["what is this?"])


def _truncated(path):
    write_image(path, 64, 48)
    path.write_bytes(path.read_bytes()[:200])
    return path


def _fake(path):
    path.write_text("this is not a picture")
    return path


def _strip(path):
    return write_image(path, 3000, 12)


def _video_strip(path):
    return write_video(path, frames=3, width=1640, height=16)


def _corrupt_video(path):
    write_video(path, frames=8)
    data = bytearray(path.read_bytes())
    data[len(data) // 3:] = bytes(len(data) - len(data) // 3)
    path.write_bytes(bytes(data))
    return path


def _audio_only(path):
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=16000)
        for i in range(4):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 16000, i * 1024
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def _over_long(path):
    return write_video(path, frames=int(SETTINGS.max_video_s) + 5, width=16, height=16, fps=1)


def _lying_extension(path):
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(64))  # an mp4 header and nothing else
    return path


@pytest.mark.parametrize("make, name, expected", [
    (lambda p: write_bomb_png(p), "bomb.png", "too large"),
    (_truncated, "cut.png", "cut.png"),
    (_fake, "fake.png", "fake.png"),
    (_strip, "strip.png", "times the other"),
    (_video_strip, "strip.mp4", "times the other"),
    (_corrupt_video, "broken.mp4", "broken.mp4"),
    (_audio_only, "song.mp4", "only audio"),
    (_over_long, "long.mp4", "the limit is"),
    (_lying_extension, "empty.mp4", "empty.mp4"),
])
def test_bad_media_is_a_message_and_nothing_breaks(session, still_fine, tmp_path, make, name, expected):
    chat = ask(session, "look at this", make(tmp_path / name))[0]
    assert last_text(chat).startswith("⚠️") and expected in last_text(chat)
    still_fine(session, ["look at this"])


def test_an_oversized_upload_is_refused_by_the_server(session, still_fine, tmp_path):
    huge = tmp_path / "huge.png"
    huge.write_bytes(bytes(SETTINGS.max_file_bytes + 1))
    with pytest.raises(Exception, match="(?i)file size|too large|exceeds"):
        ask(session, "look", huge)
    still_fine(session, [])


def test_a_video_over_the_work_budget_is_sampled_with_a_notice(url, still_fine, tmp_path):
    client = connect(url)  # a session of its own: its media becomes a video
    frames = SETTINGS.budget.frames * 3
    chat = ask(client, "segment the video", write_video(tmp_path / "clip.mp4", frames=frames))[0]
    assert any(f"at most {SETTINGS.budget.frames} per turn" in t for t in texts(chat))
    still_fine(client, ["segment the video"])


# ------------------------------------------------------------------------------------------ text

@pytest.mark.parametrize("text, expected", [
    ("\ud800", "not valid text"),
    ("before \udfff after", "not valid text"),
    ("x" * 1_000_000, "characters long"),
    ("\U0001f600" * 3000, "tokens long"),
    ("   ", "Please type"),
])
def test_refused_text_is_not_kept_or_echoed(session, still_fine, text, expected):
    event = raw_call(session, "/ask", [{"text": text, "files": []}, None, "sa2va", 5, "first", []])
    assert event["success"]
    chat = event["output"]["data"][0]
    assert expected in json.dumps(chat, ensure_ascii=False)
    echoed = json.dumps(event, ensure_ascii=True)
    assert "ud800" not in echoed.lower() and "udfff" not in echoed.lower() and len(echoed) < 50_000
    still_fine(session, [])


# Malformed regions are refused before the turn (an error, the message not kept); regions that do not fit the image
# are the conversation's refusal, shown in the chat under the message.
@pytest.mark.parametrize("regions, expected, kept", [
    ([{"points": [[math.nan, 3]]}], "finite", False),
    ("not json", "JSON list", False),
    ([{"box": [0, 0, 1e30, 5]}], "inside the image", True),
    ([{"points": [[1, 1]]}] * 50, "at most 8", True),
])
def test_bad_regions_are_refused_with_a_message(session, still_fine, regions, expected, kept):
    text = "what is region 1?"
    event = raw_call(session, "/ask", [{"text": text, "files": []}, None, "sa2va", 5, "first", regions])
    shown = json.dumps(event["output"]["data"][0]) if kept else (event["output"].get("error") or "")
    assert event["success"] == kept and expected in shown
    still_fine(session, [text] if kept else [])


def test_typed_control_tokens_are_text(session, still_fine, tiny_chats):
    added = [t.content for t in tiny_chats["qwen3_vl"].processor.tokenizer.added_tokens_decoder.values()]
    typed = " ".join(added) + " <think> <tool_call>"
    chat = ask(session, typed)[0]
    assert not last_text(chat).startswith("⚠️") and typed.replace("<", "&lt;").replace(">", "&gt;") in texts(chat)
    still_fine(session, [typed.replace("<", "&lt;").replace(">", "&gt;")])


# ------------------------------------------------------------------------------------------ endpoints

@pytest.mark.parametrize("args, expected", [
    ([math.nan, 10, 10, "include"], "finite"),
    ([math.inf, 10, 10, "include"], "finite"),
    (["abc", 10, 10, "include"], "must be a number"),
    ([[0], 10, 10, "include"], "must be a number"),
    ([True, 10, 10, "include"], "must be a number"),
    ([-1, 10, 10, "include"], "no object 0"),
    ([7, 10, 10, "include"], "no object 8"),
    ([0.5, 10, 10, "include"], "whole number"),
    ([0, math.nan, 10, "include"], "finite"),
    ([0, 10, -math.inf, "include"], "finite"),
    ([0, "x", 10, "include"], "must be a number"),
    ([0, 1e9, 10, "include"], "outside"),
])
def test_refine_validates_its_inputs(session, still_fine, args, expected):
    event = raw_call(session, "/refine", [None, *args])
    assert not event["success"] and expected in (event["output"].get("error") or "")
    still_fine(session, [])


# Gradio's own radio and slider checks run before the app's (with a traceback in the server log, see the README):
# the client still gets a clear message.
@pytest.mark.parametrize("options, expected", [
    (["evil", 5, "first"], "not in the list of choices"),
    (["sa2va", math.nan, "first"], "finite"),
    (["sa2va", 0, "first"], "less than minimum value 1"),
    (["sa2va", 5, "sideways"], "not in the list of choices"),
])
def test_ask_validates_its_options(session, still_fine, options, expected):
    event = raw_call(session, "/ask", [{"text": "hello", "files": []}, None, *options, []])
    assert not event["success"] and expected in (event["output"].get("error") or "")
    still_fine(session, [])


def test_several_files_and_stateless_calls_are_refused(session, still_fine, tmp_path, url):
    images = [handle_file(str(write_image(tmp_path / f"{i}.png"))) for i in range(2)]
    chat = session.predict({"text": "two", "files": images}, "sa2va", 5, "first", api_name="/ask")[0]
    assert "one image or video at a time" in last_text(chat)
    with pytest.raises(Exception, match="no segmentation yet"):
        connect(url).predict(api_name="/download")
    still_fine(session, [])


def test_a_path_outside_the_upload_folder_is_refused(session, still_fine):
    event = raw_call(session, "/ask", [{"text": "read this", "files": [{"path": "/etc/passwd", "meta": {
        "_type": "gradio.FileData"}}]}, None, "sa2va", 5, "first", []])
    assert not event["success"] and "root:" not in json.dumps(event)
    still_fine(session, [])


def test_a_client_that_disconnects_mid_answer_leaves_the_server_and_others_working(url, still_fine, tmp_path):
    client = connect(url)
    ask(client, "a question", write_image(tmp_path / "a.png"))
    job = client.submit({"text": "a long answer please", "files": []}, "sa2va", 5, "first", api_name="/ask")
    job.cancel()
    client.close()
    other = connect(url)
    ask(other, "first question", write_image(tmp_path / "b.png"))
    still_fine(other, ["first question"])


def test_refusals_are_logged_as_one_line_without_content(session, caplog):
    with caplog.at_level(logging.INFO, logger="chat.handlers"):
        raw_call(session, "/refine", [None, "secret-looking-value", 10, 10, "include"])
        raw_call(session, "/ask", [{"text": "\ud800 private words", "files": []}, None, "sa2va", 5, "first", []])
    lines = [r for r in caplog.records if r.name == "chat.handlers"]
    assert [r.getMessage() for r in lines] == ["refine refused: InputError", "ask refused: InputError"]
    assert all(r.exc_info is None for r in lines)


def test_the_server_removes_every_session_file_and_upload_when_it_stops(tiny_chats, tmp_path, monkeypatch):
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "sessions"))  # where session folders go
    (tmp_path / "sessions").mkdir()
    with serving(tiny_chats["qwen3_vl"]) as address:
        clients = [Client(address, verbose=False) for _ in range(3)]
        for i, client in enumerate(clients):
            ask(client, "segment", write_image(tmp_path / f"photo{i}.png", seed=i))
            client.predict(0, 5, 5, "include", api_name="/refine")
            client.predict(api_name="/download")
        served = [p for p in (tmp_path / "gradio").rglob("*") if p.is_file()]
        assert any(p.name.endswith("photo0.png") for p in served) and any(p.suffix == ".zip" for p in served)
        assert len(list((tmp_path / "sessions").glob("segchat-*"))) == 3
    assert [p for p in tmp_path.joinpath("gradio").rglob("*") if p.is_file()] == []
    assert list((tmp_path / "sessions").glob("segchat-*")) == []  # (the clients download into the same folder)
