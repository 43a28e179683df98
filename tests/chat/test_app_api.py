"""The app through its HTTP API (`gradio_client`) against a real local server with a tiny model."""

import io
import json
import threading
import zipfile

import httpx
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from chat.examples import load_examples
from tests.helpers import SETTINGS, serving, serving_concepts, write_bomb_png, write_image


@pytest.fixture(scope="module")
def url(tiny_chats):
    with serving(tiny_chats["qwen3_vl"]) as address:
        yield address


def ask(client: Client, text: str, path=None) -> tuple:
    message = {"text": text, "files": [handle_file(str(path))] if path else []}
    return client.predict(message, "sa2va", 5, "first", api_name="/ask")


def texts(chat: list[dict]) -> list[str]:
    return [block["text"] for m in chat for block in m["content"] if block["type"] == "text"]


def test_only_ask_refine_and_download_are_public(url):
    api = Client(url, verbose=False).view_api(print_info=False, return_format="dict")
    assert set(api["named_endpoints"]) == {"/ask", "/refine", "/download"}
    assert api["unnamed_endpoints"] == {}


def test_three_turn_conversation_with_refine_and_download(url, tmp_path):
    client = Client(url, verbose=False)
    image = write_image(tmp_path / "photo.png", 80, 60)
    chat, _, canvas, _, legend, *_ , files = ask(client, "Segment the apple.", image)
    assert Image.open(canvas).size == (80, 60)
    assert "the red apple" in legend and "the cup" in legend
    assert {p.rsplit("_", 1)[-1] for p in files} >= {"masks.zip", "rle.json", "overlay.png"}
    ask(client, "And the cup?")
    chat, _, canvas, *_ = ask(client, "Which is bigger?")
    user_texts = [t for t in texts([m for m in chat if m["role"] == "user"])]
    assert user_texts == ["Segment the apple.", "And the cup?", "Which is bigger?"]
    uploads = [b for m in chat if m["role"] == "user" for b in m["content"] if b["type"] == "file"]
    assert len(uploads) == 1
    overlays = [b for m in chat if m["role"] == "assistant" for b in m["content"] if b["type"] == "file"]
    assert len(overlays) == 3
    assert Image.open(canvas).size == (80, 60)

    canvas, files = client.predict(0, 40, 30, "include", api_name="/refine")
    assert Image.open(canvas).size == (80, 60)
    downloaded = client.predict(api_name="/download")
    assert [p.rsplit("/", 1)[-1] for p in downloaded] == [p.rsplit("/", 1)[-1] for p in files]
    with zipfile.ZipFile(next(p for p in downloaded if p.endswith(".zip"))) as zf:
        assert "01_the_red_apple.png" in zf.namelist()


def test_a_shipped_example_runs_through_the_app(url):
    # A click on an example is a private event (it fills the message box, then runs /ask): its message goes
    # through /ask here, the click itself through the browser tests.
    example = load_examples()[0]
    client = Client(url, verbose=False, download_files=False)
    chat, _, canvas, _, legend, *_ = ask(client, example.instruction, example.file)
    assert texts([m for m in chat if m["role"] == "user"]) == [example.instruction]
    assert "the red apple" in legend and "the cup" in legend
    shown = Image.open(io.BytesIO(httpx.get(canvas["url"]).raise_for_status().content))
    assert shown.size == Image.open(example.file).size


def test_two_concurrent_sessions_never_see_each_other(url, tmp_path):
    sizes = {"alpha": (72, 48), "beta": (40, 88)}
    results = {}

    def user(name: str) -> None:
        client = Client(url, verbose=False)
        image = write_image(tmp_path / f"{name}.png", *sizes[name], seed=len(name))
        ask(client, f"{name} question one", image)
        results[name] = ask(client, f"{name} question two")

    threads = [threading.Thread(target=user, args=(name,)) for name in sizes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for name, other in (("alpha", "beta"), ("beta", "alpha")):
        chat, _, canvas, *_ = results[name]
        shown = " ".join(texts(chat))
        assert f"{name} question two" in shown and other not in shown
        names = [b["file"]["orig_name"] if isinstance(b["file"], dict) else b["file"]
                 for m in chat for b in m["content"] if b["type"] == "file" and m["role"] == "user"]
        assert len(names) == 1 and names[0].endswith(f"{name}.png")
        assert Image.open(canvas).size == sizes[name]


def test_bad_files_return_errors_and_the_session_keeps_working(url, tmp_path):
    client = Client(url, verbose=False)
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    chat = ask(client, "look", corrupt)[0]
    assert texts(chat)[-1].startswith("⚠️") and "corrupt.jpg" in texts(chat)[-1]

    chat = ask(client, "look", write_bomb_png(tmp_path / "bomb.png"))[0]
    assert texts(chat)[-1].startswith("⚠️") and "too large" in texts(chat)[-1]

    oversized = tmp_path / "huge.png"
    oversized.write_bytes(bytes(SETTINGS.max_file_bytes + 1))
    with pytest.raises(Exception, match="(?i)file size|too large|exceeds"):
        ask(client, "look", oversized)

    chat, _, canvas, *_ = ask(client, "and this one?", write_image(tmp_path / "fine.png", 50, 40))
    assert not texts(chat)[-1].startswith("⚠️")
    assert Image.open(canvas).size == (50, 40)


@pytest.fixture(scope="module")
def concept_url(concept_chat):
    with serving_concepts(concept_chat) as address:
        yield address


def test_find_endpoint_returns_every_instance_counts_and_downloads(concept_url, tmp_path):
    client = Client(concept_url, verbose=False)
    assert "/find" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    chat = client.predict("car", 0.0, api_name="/find")[0]
    assert texts(chat)[-1].startswith("⚠️") and "no image" in texts(chat)[-1]  # nothing to look in yet

    ask(client, "Segment the apple.", write_image(tmp_path / "photo.png", 80, 60))
    chat, canvas, _, legend, shown, target, files = client.predict("car, yellow school bus", 0.0, api_name="/find")
    assert "Find all: car, yellow school bus" in texts(chat)
    assert "car × 10 · yellow school bus × 10" in legend and legend.count("segchat-legend-item") == 20
    assert Image.open(canvas).size == (80, 60)
    with zipfile.ZipFile(next(p for p in files if p.endswith(".zip"))) as zf:
        assert len([n for n in zf.namelist() if n.endswith(".png")]) == 20
    coco = json.loads(open(next(p for p in files if p.endswith(".json"))).read())
    assert [o["id"] for o in coco["objects"]] == list(range(1, 21))
    assert all(0 <= o["score"] <= 1 for o in coco["objects"])

    chat, _, _, legend, *_ = client.predict("car", 1.0, api_name="/find")
    assert "car: not found" in legend and "(not found)" in legend
    assert any(t.startswith("ℹ️") and "car" in t and "is not in the image." in t for t in texts(chat))
    chat, *_ = client.predict(" , ", 0.5, api_name="/find")
    assert texts(chat)[-1].startswith("⚠️")
    chat, canvas, *_ = ask(client, "And the cup?")  # the conversation goes on
    assert not texts(chat)[-1].startswith("⚠️")


def test_a_client_chooses_the_agent_beside_the_model(tiny_chats, agent_chat, tmp_path):
    from tests.helpers import scripted_rounds

    call = '<tool_call>{"name": "segment", "arguments": {"phrases": ["cup"]}}</tool_call><|im_end|>'
    keep = '<tool_call>{"name": "keep", "arguments": {"candidates": [1]}}</tool_call><|im_end|>'
    with serving(tiny_chats["qwen3_vl"], agent=agent_chat) as address:
        client = Client(address, verbose=False)
        assert "/use" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
        chat = ask(client, "Which item makes a salad?", write_image(tmp_path / "a.png", 80, 60))[0]
        assert "the red apple" in " ".join(texts(chat))
        client.predict("agent", api_name="/use")
        with scripted_rounds(agent_chat, call, keep, "The cup.<|im_end|>"):
            chat, _, _, _, legend, *_ = ask(client, "Which holds coffee?")
        assert "How I found it" in texts(chat)[-1] and "cup" in legend
        with pytest.raises(Exception, match="not in the list of choices"):
            client.predict("root", api_name="/use")
