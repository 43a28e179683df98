"""Regions in the app: drawn in the editor (`chat.drawing`), sent as JSON to `/ask`, shown back as numbered marks
in the person's message, and bad ones refused with the session still usable."""

import numpy as np
import pytest
from gradio_client import Client, handle_file
from PIL import Image

from chat import drawing, handlers, inputs
from chat.session import Session
from model.errors import InputError
from model.media.masks import encode_rle
from model.media.render import palette
from model.regions import Region
from tests.helpers import ANSWER, serving, write_image, write_video


@pytest.fixture
def chat(tiny_chats, scripted):
    return scripted(tiny_chats["internvl"], ANSWER)


def layer(height: int, width: int, top: int, left: int, bottom: int, right: int) -> np.ndarray:
    pixels = np.zeros((height, width, 4), dtype=np.uint8)
    pixels[top:bottom, left:right] = (255, 23, 68, 255)
    return pixels


def test_a_stroke_becomes_spread_clicks_inside_it_and_exact_keeps_the_stroke():
    stroke = layer(60, 90, 10, 20, 16, 80)[..., 3] > 0  # a horizontal scribble
    clicks = drawing.drawn_regions([stroke], (90, 60))[0]
    assert 2 <= len(clicks.points) <= drawing.MAX_CLICKS
    assert all(stroke[int(y), int(x)] for x, y in clicks.points)
    xs = [x for x, _ in clicks.points]
    assert min(xs) < 30 and max(xs) > 70  # spread along the stroke, not bunched
    dab = layer(60, 90, 30, 40, 33, 43)[..., 3] > 0
    assert len(drawing.drawn_regions([dab], (90, 60))[0].points) >= 1
    exact = drawing.drawn_regions([stroke], (90, 60), exact=True)[0]
    assert np.array_equal(exact.mask, stroke)


def test_layers_drawn_at_another_scale_are_fitted_and_another_picture_is_refused():
    half = layer(30, 45, 5, 10, 8, 40)[..., 3] > 0
    fitted = drawing.drawn_regions([half], (90, 60), exact=True)[0].mask
    assert fitted.shape == (60, 90) and fitted[12, 40] and not fitted[40, 40]
    with pytest.raises(InputError, match="another picture"):
        drawing.drawn_regions([layer(50, 50, 5, 5, 20, 20)[..., 3] > 0], (90, 60))
    assert drawing.layer_masks({"background": None, "layers": [np.zeros((5, 5, 4), np.uint8)]}) == []


def test_drawn_regions_reach_the_model_and_the_question_shows_them_numbered(chat, tmp_path):
    session = Session(chat)
    photo = write_image(tmp_path / "a.png", 90, 60)
    handlers_run = list(handlers.ask(session, "Look.", [photo]))
    assert handlers_run
    drawn = [layer(60, 90, 10, 10, 30, 40)[..., 3] > 0, layer(60, 90, 35, 50, 55, 85)[..., 3] > 0]
    list(handlers.ask(session, "Region 1?", None, drawn=drawn[:1]))
    assert session.turns[-1].regions[0].points and session.turns[-1].error is None  # strokes read as clicks
    handlers.undo(session)
    final = list(handlers.ask(session, "Compare region 1 and region 2.", None, drawn=drawn, exact=True))[-1]
    turn = session.turns[-1]
    assert turn.error is None and len(turn.regions) == 2
    assert all(np.array_equal(a, b) for a, b in zip(session.conversation.regions, drawn))
    view = [m["content"]["path"] for m in final if m["role"] == "user" and isinstance(m["content"], dict)][-1]
    marked = np.asarray(Image.open(view))
    photo_pixels = np.asarray(Image.open(photo))
    first, second = palette(2)
    for mask, colour in zip(session.conversation.regions, (first, second)):
        edge = mask & ~np.roll(mask, 1, axis=0)  # its top outline row: drawn in the region's colour
        assert (marked[edge] == colour).all()
    assert np.array_equal(marked[~(session.conversation.regions[0] | session.conversation.regions[1])],
                          photo_pixels[~(session.conversation.regions[0] | session.conversation.regions[1])])
    # a retry sends the same regions again: the same numbers, the conversation as before the turn plus them
    list(handlers.retry(session))
    assert len(session.conversation.regions) == 2 and session.turns[-1].error is None


def test_a_bad_region_is_an_error_turn_and_the_session_goes_on(chat, tmp_path):
    session = Session(chat)
    list(handlers.ask(session, "Look.", [write_image(tmp_path / "a.png", 90, 60)]))
    final = list(handlers.ask(session, "What is region 1?", None, regions=[Region(box=(10, 10, 300, 40))]))[-1]
    assert "inside the image" in final[-1]["content"] and session.conversation.regions == []
    list(handlers.ask(session, "What is region 1?", None, regions=[Region(box=(10, 10, 30, 40))]))
    assert session.turns[-1].error is None and len(session.conversation.regions) == 1


def test_regions_drawn_on_a_video_frame_are_followed_through_the_clip(chat, tmp_path):
    session = Session(chat)
    video = write_video(tmp_path / "a.mp4")
    with pytest.raises(InputError, match="no video in this conversation"):
        handlers.drawing_frame(session, 2)
    final = list(handlers.ask(session, "Region 1?", [video], drawn=[layer(48, 64, 5, 5, 20, 20)[..., 3] > 0]))[-1]
    assert "Send the video first" in final[-1]["content"]
    list(handlers.ask(session, "Look.", [video]))
    picture = handlers.drawing_frame(session, 2)
    assert np.array_equal(picture, session.media.video.clip.read([2])[0])
    with pytest.raises(InputError, match="from 0 to 5"):
        handlers.drawing_frame(session, 6)
    stroke = layer(48, 64, 10, 8, 30, 40)[..., 3] > 0
    final = list(handlers.ask(session, "What is region 1?", None, drawn=[stroke], exact=True, frame=2))[-1]
    assert session.turns[-1].error is None
    [tracked] = session.conversation.regions
    assert len(tracked) == 6 and np.array_equal(tracked[2], stroke)  # as drawn on its frame, tracked on the others
    view = np.asarray(Image.open([m["content"]["path"] for m in final
                                  if m["role"] == "user" and isinstance(m["content"], dict)][-1]))
    assert np.array_equal(view[~stroke], picture[~stroke])  # the frame it was drawn on, marked inside the stroke
    assert (view[stroke & ~np.roll(stroke, 1, axis=0)] == palette(1)[0]).all()
    # an object of a video answer can be pointed at: its mask on the first frame where it is
    index = next(i for i, mask in enumerate(session.last_result.masks) if mask[0].any())
    handlers.point_at(session, index)
    list(handlers.ask(session, "And region 2?", None))
    assert session.turns[-1].error is None
    assert np.array_equal(session.conversation.regions[1][0], session.turns[-2].result.masks[index][0])


def texts(chat: list[dict]) -> list[str]:
    return [block["text"] for m in chat for block in m["content"] if block["type"] == "text"]


REGIONS_JSON = [{"points": [[20, 15]], "labels": [1]}, {"box": [40, 10, 80, 50]}]


def test_regions_json_is_parsed_and_bad_json_is_a_clear_error():
    mask = np.zeros((6, 8), bool)
    mask[1:3, 2:5] = True
    parsed = inputs.regions(REGIONS_JSON + [{"mask": encode_rle(mask)}])
    assert parsed[0].points == [(20.0, 15.0)] and parsed[1].box == (40.0, 10.0, 80.0, 50.0)
    assert np.array_equal(parsed[2].mask, mask)
    assert inputs.regions(None) == inputs.regions("") == inputs.regions([]) == []
    for bad, message in [("{", "JSON list"), ({"points": []}, "must be a list"), ([{"point": [1, 2]}], "some of"),
                         ([{"points": [[1]]}], r"\[x, y\] pairs"), ([{"points": [["a", 2]]}], "must be a number"),
                         ([{"box": [1, 2, 3]}], "x0, y0, x1, y1"), ([{"mask": {"size": [2, 2]}}], "COCO RLE"),
                         ([{"mask": {"size": [99999, 99999], "counts": "0"}}], "larger than any image"),
                         ([{"mask": {"size": [4, 4], "counts": "?!"}}], "not valid COCO RLE"),
                         ([{"labels": [2], "points": [[1, 1]]}], "from 0 to 1")]:
        with pytest.raises(InputError, match=message):
            inputs.regions(bad)


@pytest.fixture(scope="module")
def url(tiny_chats):
    with serving(tiny_chats["internvl"]) as address:
        yield address


def test_ask_endpoint_takes_regions_and_refuses_bad_ones(url, tmp_path):
    client = Client(url, verbose=False, download_files=False)
    message = {"text": "What are region 1 and region 2?", "files": [handle_file(str(write_image(tmp_path / "a.png")))]}
    chat = client.predict(message, "sa2va", 5, "first", REGIONS_JSON, api_name="/ask")[0]
    user_files = [block["file"]["path"] for m in chat if m["role"] == "user" for block in m["content"]
                  if block["type"] == "file"]
    assert any("regions" in path for path in user_files)  # the question shows its numbered marks
    with pytest.raises(Exception, match="must be a list"):
        client.predict({"text": "region 1?", "files": []}, "sa2va", 5, "first", {"box": 1}, api_name="/ask")
    chat = client.predict({"text": "And region 3?", "files": []}, "sa2va", 5, "first", [], api_name="/ask")[0]
    assert "has regions 1 to 2" in texts(chat)[-1]
    chat = client.predict({"text": "Still fine?", "files": []}, "sa2va", 5, "first", api_name="/ask")[0]
    assert not texts(chat)[-1].startswith("⚠️")


def test_ask_about_an_object_of_the_last_answer(chat, tmp_path):
    session = Session(chat)
    list(handlers.ask(session, "Look.", [write_image(tmp_path / "a.png", 90, 60)]))
    result = session.last_result
    index = next(i for i, mask in enumerate(result.masks) if mask.any())
    shown = handlers.point_at(session, index)
    assert f"region 1 is object {index + 1}, {result.labels[index]}" in shown[-1]["content"]
    list(handlers.ask(session, "What is region 1 used for?", None))
    assert session.turns[-1].error is None and session.pending_regions == []
    assert np.array_equal(session.conversation.regions[0], result.masks[index])
    with pytest.raises(InputError, match="no object 9"):
        handlers.point_at(session, 8)
