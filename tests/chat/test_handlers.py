"""The chat's plain functions (what the Gradio callbacks call): turns, rendering, exports, refinement, state."""

import json
import zipfile

import av
import numpy as np
import pytest
from PIL import Image

from chat import handlers
from chat.session import Session, close_session
from model.errors import InputError
from model.media.render import palette
from tests.helpers import ANSWER, SETTINGS, write_bomb_png, write_image


@pytest.fixture
def chat(tiny_chats, scripted):
    return scripted(tiny_chats["qwen3_vl"], ANSWER)


def run(turns):
    """Drain a streaming handler; returns every chat state it yielded."""
    return list(turns)


def test_image_turn_streams_then_renders_colours_overlay_and_downloads(chat, tmp_path):
    session = Session(chat)
    states = run(handlers.ask(session, "Which item makes a salad?", [write_image(tmp_path / "a.png")]))
    assert len(states) >= 3  # the question at once, answer pieces, the final chat
    final = states[-1]
    assert [m["role"] for m in final] == ["user", "user", "assistant", "assistant"]
    red, cup = palette(2)
    assert f"rgb({red[0]}, {red[1]}, {red[2]})" in final[2]["content"]
    assert f"rgb({cup[0]}, {cup[1]}, {cup[2]})" in final[2]["content"]
    overlay = Image.open(final[3]["content"]["path"])
    assert overlay.size == (96, 64)

    result = session.last_result
    assert result.labels == ["the red apple", "the cup"]
    zip_path, json_path, overlay_path = handlers.downloads(session)
    with zipfile.ZipFile(zip_path) as zf:
        assert {"01_the_red_apple.png", "02_the_cup.png", "labels.json"} <= set(zf.namelist())
        png = np.asarray(Image.open(zf.open("01_the_red_apple.png")))
        assert np.array_equal(png > 0, result.masks[0])
    objects = json.loads(json_path.read_text())["objects"]
    assert [o["label"] for o in objects] == ["the red apple", "the cup"]
    assert objects[0]["segmentation"]["size"] == [64, 96]
    assert overlay_path == result.overlay


def test_follow_up_keeps_the_image_and_undo_retry_clear_rewind(chat, tmp_path):
    session = Session(chat)
    run(handlers.ask(session, "first", [write_image(tmp_path / "a.png")]))
    history_after_first = list(session.conversation.history)
    media = session.media
    final = run(handlers.ask(session, "second", None))[-1]
    assert session.media is media and session.turns[-1].result.media is media
    assert sum(m["role"] == "user" and isinstance(m["content"], dict) for m in final) == 1  # no re-upload

    chat_after_undo = handlers.undo(session)
    assert session.conversation.history == history_after_first
    assert [m["content"] for m in chat_after_undo if m["role"] == "user"][0] == "first"
    assert len(session.turns) == 1

    run(handlers.retry(session))
    assert len(session.turns) == 1 and session.turns[0].upload is not None
    assert session.last_result.media is session.media

    assert handlers.clear(session) == []
    assert session.media is None and session.last_result is None
    assert session.conversation.history == chat.new_conversation().history


def test_stop_keeps_the_partial_answer_and_leaves_the_conversation_as_it_was(chat, tmp_path):
    session = Session(chat)
    run(handlers.ask(session, "first", [write_image(tmp_path / "a.png")]))
    before = list(session.conversation.history)
    turns = handlers.ask(session, "second", None)
    next(turns)
    handlers.stop(session)
    final = run(turns)[-1]
    assert session.turns[-1].stopped and "(stopped)" in final[-1]["content"]
    assert session.conversation.history == before
    run(handlers.ask(session, "third", None))  # the model is free again
    assert session.turns[-1].result is not None


@pytest.mark.parametrize("make, message", [
    (lambda p: p.with_suffix(".jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg") and p.with_suffix(".jpg"),
     "could not be read"),
    (lambda p: write_bomb_png(p.with_suffix(".png")), "too large"),
    (lambda p: p.with_suffix(".mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 broken") and p.with_suffix(".mp4"),
     "video"),
])
def test_bad_uploads_become_chat_messages_and_the_session_goes_on(chat, tmp_path, make, message):
    session = Session(chat)
    final = run(handlers.ask(session, "look", [make(tmp_path / "bad")]))[-1]
    assert final[-1]["role"] == "assistant" and final[-1]["content"].startswith("⚠️")
    assert message in final[-1]["content"]
    assert session.media is None
    run(handlers.ask(session, "look again", [write_image(tmp_path / "ok.png")]))
    assert session.turns[-1].error is None and session.last_result is not None


def test_oversized_upload_and_long_text_are_refused(chat, tmp_path):
    session = Session(chat)
    big = tmp_path / "big.png"
    big.write_bytes(b"\x89PNG" + bytes(SETTINGS.max_file_bytes))
    assert "limit" in run(handlers.ask(session, "look", [big], SETTINGS))[-1][-1]["content"]
    assert "limit" in run(handlers.ask(session, "x" * 10_000, None))[-1][-1]["content"]


def test_user_and_model_text_cannot_inject_markup(chat, tmp_path):
    session = Session(chat)
    final = run(handlers.ask(session, "<img src=x onerror=alert(1)> [SEG]", [write_image(tmp_path / "a.png")]))[-1]
    assert "<img" not in final[0]["content"] and "&lt;img" in final[0]["content"]


def test_refine_reuses_cached_embeddings_and_never_calls_the_llm(chat, tmp_path, monkeypatch):
    session = Session(chat)
    run(handlers.ask(session, "segment", [write_image(tmp_path / "a.png")]))
    before = session.last_result.masks[1].copy()
    monkeypatch.setattr(chat, "generate", lambda *a, **k: pytest.fail("refinement called the LLM"))
    monkeypatch.setattr(chat.segmenter, "encode", lambda *a, **k: pytest.fail("refinement re-encoded"))
    old_files = handlers.downloads(session)
    result = handlers.refine(session, 1, 10, 20, include=True)
    assert result.clicks == {1: [(10.0, 20.0, 1)]}
    assert not np.array_equal(result.masks[1], before)
    assert handlers.downloads(session) != old_files  # downloads follow the refined masks
    handlers.refine(session, 1, 50, 30, include=False)
    assert len(result.clicks[1]) == 2
    with pytest.raises(InputError, match="outside"):
        handlers.refine(session, 1, 500, 10)
    with pytest.raises(InputError, match="no object 9"):
        handlers.refine(session, 8, 5, 5)
    handlers.reset_refinement(session, 1)
    assert np.array_equal(result.masks[1], before) and 1 not in result.clicks


def test_refine_before_any_answer_is_a_message(chat):
    with pytest.raises(InputError, match="no segmentation yet"):
        handlers.refine(Session(chat), 0, 1, 1)


def test_legend_and_toggling(chat, tmp_path):
    session = Session(chat)
    image = write_image(tmp_path / "a.png")
    run(handlers.ask(session, "segment", [image]))
    view = handlers.canvas(session)
    assert view.objects == [("1. the red apple", 0), ("2. the cup", 1)] and view.visible == [0, 1]
    assert "1. the red apple" in view.legend and "2. the cup" in view.legend
    hidden = handlers.set_visible(session, [])
    assert hidden.visible == []
    assert np.array_equal(np.asarray(Image.open(hidden.image)), np.asarray(Image.open(image)))


def test_video_turn_writes_a_playable_h264_overlay_and_per_frame_rle(chat, tmp_path):
    from model.media.export import write_h264_mp4

    frames = [np.full((48, 64, 3), 40 * t, dtype=np.uint8) for t in range(6)]
    video = write_h264_mp4(frames, tmp_path / "clip.mp4", fps=10)
    session = Session(chat)
    final = run(handlers.ask(session, "segment", [video], SETTINGS))[-1]
    assert session.turns[-1].error is None
    overlay = final[3]["content"]["path"]
    with av.open(overlay) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert sum(1 for _ in container.decode(stream)) == SETTINGS.video_max_frames
    objects = json.loads(handlers.downloads(session)[1].read_text())["objects"]
    assert len(objects[0]["segmentations"]) == SETTINGS.video_max_frames
    assert handlers.canvas(session).video == session.last_result.overlay
    with pytest.raises(InputError, match="video"):
        handlers.refine(session, 0, 1, 1)
    run(handlers.ask(session, "and the cup?", None, SETTINGS))  # follow-up on the same video
    assert session.turns[-1].error is None and session.last_result.media.kind == "video"


def test_closing_a_session_frees_its_files(chat, tmp_path):
    session = Session(chat)
    run(handlers.ask(session, "segment", [write_image(tmp_path / "a.png")]))
    assert any(session.workdir.iterdir())
    close_session(session)
    assert not session.workdir.exists() and session.turns == []
    close_session(None)


def test_a_video_turn_probes_its_file_once(chat, tmp_path, monkeypatch):
    from model.media import video_file
    from model.media.export import write_h264_mp4

    frames = [np.full((48, 64, 3), 30 * t, dtype=np.uint8) for t in range(6)]
    video = write_h264_mp4(frames, tmp_path / "clip.mp4", fps=10)
    probes = []
    probe = video_file.probe_video
    monkeypatch.setattr(video_file, "probe_video", lambda *a, **k: probes.append(a) or probe(*a, **k))
    session = Session(chat)
    run(handlers.ask(session, "segment", [video], SETTINGS))  # upload -> answer -> overlay and downloads
    assert session.turns[-1].error is None and session.last_result.overlay.suffix == ".mp4"
    assert len(probes) == 1


def test_an_animated_gif_upload_is_a_video(chat, tmp_path):
    frames = [Image.fromarray(np.full((48, 64, 3), 40 * t, dtype=np.uint8)) for t in range(3)]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100)
    session = Session(chat)
    run(handlers.ask(session, "segment", [gif], SETTINGS))
    assert session.turns[-1].error is None and session.media.kind == "video"
    assert session.last_result.masks[0].shape == (3, 48, 64)


@pytest.fixture
def concept_session(concept_chat, scripted):
    from model.segmenters.concepts import ConceptOptions

    segmenter = concept_chat.concept_segmenter
    segmenter.options = ConceptOptions(presence=0.0)
    yield Session(scripted(concept_chat, ANSWER))
    segmenter.options = ConceptOptions()


def test_find_all_and_find_every_one_give_instances_counts_and_not_found(concept_session, tmp_path):
    session = concept_session
    run(handlers.ask(session, "Which item makes a salad?", [write_image(tmp_path / "a.png")]))
    history = list(session.conversation.history)
    final = handlers.find(session, "car; yellow school bus", threshold=0.0)
    assert {"role": "user", "content": "Find all: car; yellow school bus"} in final
    assert "× 10" in final[-2]["content"] and final[-1]["content"]["path"].endswith("overlay.png")
    result = session.last_result
    assert result.labels == ["car"] * 10 + ["yellow school bus"] * 10 and all(result.found)
    view = handlers.canvas(session)
    assert "car × 10 · yellow school bus × 10" in view.legend
    with zipfile.ZipFile(handlers.downloads(session)[0]) as zf:
        assert len([n for n in zf.namelist() if n.endswith(".png")]) == 20

    handlers.find(session, "", threshold=0.0, exemplar=3)  # "Find every one" on the fourth car
    assert session.turns[-1].text == "Find every one: car" and set(session.last_result.labels) == {"car"}

    handlers.find(session, "car", threshold=1.0)
    result = session.last_result
    assert result.found == [False] and "car: not found" in handlers.canvas(session).legend
    assert handlers.canvas(session).objects == [("1. car (not found)", 0)]
    assert session.turns[-1].warnings == ["'car' is not in the image."]
    with zipfile.ZipFile(handlers.downloads(session)[0]) as zf:
        assert [n for n in zf.namelist() if n.endswith(".png")] == []  # nothing that is not there

    final = handlers.find(session, "", threshold=0.0, exemplar=0)  # not found: the phrase alone
    assert session.turns[-1].error is None and session.last_result.labels[0] == "car"
    assert session.conversation.history == history  # searches never enter the language model's context
    handlers.undo(session)
    assert session.turns[-1].text == "Find all: car"


def test_find_without_image_or_with_bad_phrases_is_a_message(concept_session, tmp_path):
    session = concept_session
    final = handlers.find(session, "car", threshold=0.5)
    assert final[-1]["content"].startswith("⚠️") and "no image" in final[-1]["content"]
    run(handlers.ask(session, "look", [write_image(tmp_path / "a.png")]))
    for text in ("", " , ;", "x" * 500):
        assert handlers.find(session, text, threshold=0.5)[-1]["content"].startswith("⚠️")
    run(handlers.ask(session, "still there?", None))
    assert session.turns[-1].error is None and session.last_result.labels == ["the red apple", "the cup"]


def test_find_all_on_a_video_tracks_every_instance_into_the_overlay_and_downloads(video_concept_chat, scripted,
                                                                                  tmp_path):
    from model.media.export import write_h264_mp4
    from model.segmenters.concepts import ConceptOptions

    base = np.random.default_rng(0).integers(0, 255, (48, 70, 3), dtype=np.uint8)
    video = write_h264_mp4([np.ascontiguousarray(base[:, t:t + 64]) for t in range(6)], tmp_path / "clip.mp4", fps=10)
    segmenter = video_concept_chat.concept_segmenter
    segmenter.options = ConceptOptions(max_video_instances=4)
    try:
        session = Session(scripted(video_concept_chat, ANSWER))
        run(handlers.ask(session, "segment", [video], SETTINGS))
        final = handlers.find(session, "car", threshold=0.0)
        result = session.last_result
        assert session.turns[-1].error is None and result.media.kind == "video"
        assert result.labels == ["car"] * len(result.masks) and 1 <= len(result.masks) <= 4 and all(result.found)
        assert handlers.canvas(session).objects[0] == ("1. car", 0)
        with av.open(final[-1]["content"]["path"]) as container:
            assert sum(1 for _ in container.decode(container.streams.video[0])) == SETTINGS.video_max_frames
        objects = json.loads(handlers.downloads(session)[1].read_text())["objects"]
        assert [o["id"] for o in objects] == list(range(1, len(result.masks) + 1))
        assert all(len(o["segmentations"]) == SETTINGS.video_max_frames and o["score"] > 0 for o in objects)
    finally:
        segmenter.options = ConceptOptions()


def test_an_agent_turn_shows_its_answer_masks_and_how_it_found_them(agent_chat, tmp_path):
    from tests.helpers import scripted_rounds

    session = Session(agent_chat)
    call = '<tool_call>{"name": "segment", "arguments": {"phrases": ["cup"]}}</tool_call><|im_end|>'
    keep = '<tool_call>{"name": "keep", "arguments": {"candidates": [1, 2]}}</tool_call><|im_end|>'
    with scripted_rounds(agent_chat, call, keep, "Two cups.<|im_end|>"):
        updates = run(handlers.ask(session, "Which things hold coffee?", [write_image(tmp_path / "a.png")]))
    assert any("Looking for “cup”…" in str(update) for update in updates)  # the steps stream
    answer = next(m["content"] for m in updates[-1] if m["role"] == "assistant" and isinstance(m["content"], str))
    assert ">Two cups.</span><details><summary>How I found it</summary>" in answer
    assert "SAM 3 found 1: cup" in answer and "keep: &lt;tool_call&gt;" in answer  # model text is escaped
    assert session.last_result.labels == ["cup", "cup"] and session.last_result.overlay.exists()
    with pytest.raises(InputError, match="SAM2, which a plain vision-language model"):
        handlers.refine(session, 0, 5, 5)


def test_switching_to_the_agent_sends_it_the_current_image_and_undo_switches_back(chat, agent_chat, tmp_path):
    from tests.helpers import scripted_rounds

    session = Session(chat)
    run(handlers.ask(session, "Which item makes a salad?", [write_image(tmp_path / "a.png")], SETTINGS))
    first = session.last_result
    session.switch(agent_chat)
    call = '<tool_call>{"name": "segment", "arguments": {"phrases": ["cup"]}}</tool_call><|im_end|>'
    keep = '<tool_call>{"name": "keep", "arguments": {"candidates": [1]}}</tool_call><|im_end|>'
    with scripted_rounds(agent_chat, call, keep, "The cup.<|im_end|>"):
        final = run(handlers.ask(session, "And which holds coffee?", None, SETTINGS))[-1]
    assert session.turns[-1].error is None and session.chat is agent_chat
    assert session.last_result.labels == ["cup"] and session.last_result.masks[0].shape == first.masks[0].shape
    assert [m["content"] for m in final if m["role"] == "user" and isinstance(m["content"], str)] == [
        "Which item makes a salad?", "And which holds coffee?"]  # one chat, the image shown once
    handlers.undo(session)  # back to before the agent's turn: the agent still answers, and gets the image
    assert session.chat is agent_chat and session.last_result is first
    with scripted_rounds(agent_chat, "A salad bowl.<|im_end|>") as seen:
        run(handlers.ask(session, "What is it?", None, SETTINGS))
    assert seen[0] is not None and session.turns[-1].answer == "A salad bowl."
    session.switch(chat)
    run(handlers.ask(session, "And now?", None, SETTINGS))
    assert session.last_result.labels == ["the red apple", "the cup"]  # the [SEG] model got the image again
