"""Overlays, legend/answer HTML escaping, PNG zip, COCO RLE and H.264 export."""

from __future__ import annotations

import io
import json
import re
import zipfile
from html.parser import HTMLParser

import av
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from chat.render import colored_answer_html, legend_html
from model.media.export import masks_to_coco_rle, masks_to_png_zip, write_coco_rle_json, write_h264_mp4
from model.media.render import overlay, palette

EVIL = '<script>alert("x")</script>'


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()

    def handle_starttag(self, tag, attrs):
        self.tags.add(tag)


def _tags(markup: str) -> set[str]:
    parser = _Tags()
    parser.feed(markup)
    return parser.tags


def _square(h: int, w: int, top: int, left: int, size: int) -> np.ndarray:
    mask = np.zeros((h, w), bool)
    mask[top : top + size, left : left + size] = True
    return mask


def test_palette_distinct_and_stable():
    colors = palette(24)
    assert len(set(colors)) == 24
    assert palette(5) == colors[:5]
    assert all(0 <= c <= 255 and isinstance(c, int) for rgb in colors for c in rgb)
    assert (0, 0, 0) not in colors


def test_overlay_blends_and_outlines():
    image = np.full((30, 30, 3), 100, np.uint8)
    masks = [_square(30, 30, 5, 5, 10), _square(30, 30, 10, 10, 10)]
    colors = [(200, 0, 0), (0, 0, 200)]
    out = overlay(image, masks, colors, alpha=0.5)
    assert tuple(out[0, 0]) == (100, 100, 100)  # no mask
    assert tuple(out[7, 7]) == (150, 50, 50)  # inside the first mask only
    assert tuple(out[5, 5]) == (200, 0, 0)  # its outline is opaque
    assert tuple(out[15, 15]) == (50, 50, 150)  # overlap: the later mask is on top
    assert tuple(image[7, 7]) == (100, 100, 100)  # input untouched
    plain = overlay(image, masks[:1], colors, alpha=0.5, outline=False)
    assert tuple(plain[5, 5]) == (150, 50, 50)


def test_overlay_default_colors_and_errors():
    image = np.zeros((8, 8, 3), np.uint8)
    out = overlay(image, [np.ones((8, 8), bool)], alpha=1.0, outline=False)
    assert tuple(out[4, 4]) == palette(1)[0]
    with pytest.raises(ValueError, match="does not match"):
        overlay(image, [np.ones((4, 8), bool)])
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, [], alpha=1.5)
    with pytest.raises(ValueError, match="H×W×3 uint8"):
        overlay(image.astype(np.float32), [])


def test_legend_escapes_labels():
    markup = legend_html([EVIL, None], [(1, 2, 3), (4, 5, 6)])
    assert "<script" not in markup
    assert "&lt;script&gt;" in markup
    assert "object 2" in markup and "rgb(1, 2, 3)" in markup
    assert _tags(markup) <= {"div", "span"}


def test_colored_answer_highlights_phrases():
    text = "The red cup sits in the cupboard; a Cup Holder holds the red cup."
    markup = colored_answer_html(text, ["cup holder", "red cup"], [(10, 20, 30), (40, 50, 60)])
    assert markup.count("rgb(40, 50, 60)") == 2  # both mentions of "red cup"
    assert markup.count("rgb(10, 20, 30)") == 1
    assert ">Cup Holder</span>" in markup  # case-insensitive, original casing kept
    assert "cupboard" in markup and ">cupboard" not in markup  # whole words only


def test_colored_answer_prefers_longer_phrases():
    markup = colored_answer_html("the red cup", ["cup", "red cup"], [(1, 1, 1), (2, 2, 2)])
    assert ">red cup</span>" in markup and "rgb(1, 1, 1)" not in markup


def test_colored_answer_escapes_text_and_labels():
    text = f"Found {EVIL} and <img src=x onerror=alert(1)> & more"
    markup = colored_answer_html(text, [EVIL, '"><b>'], None)
    assert "<script" not in markup and "<img" not in markup
    assert "&lt;script&gt;" in markup and "&amp; more" in markup
    assert _tags(markup) == {"span"}


def test_png_zip_safe_names_and_content(tmp_path):
    still = _square(12, 16, 2, 3, 5)
    clip = np.stack([_square(12, 16, t, t, 4) for t in range(3)])
    labels = ["Red car", "../../etc/passwd", None, "日本 <cup>"]
    path = masks_to_png_zip([still, still, clip, still], labels, tmp_path / "masks.zip")
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
        assert "01_red_car.png" in names and "03_object/00002.png" in names
        for name in names:
            assert re.fullmatch(r"[a-z0-9_]+(/[0-9]+)?\.(png|json)", name), name
        assert len({n.split("/")[0] for n in names}) == 5  # four objects + labels.json
        first = np.asarray(Image.open(io.BytesIO(zf.read("01_red_car.png"))))
        assert np.array_equal(first > 0, still) and first.max() == 255
        frame2 = np.asarray(Image.open(io.BytesIO(zf.read("03_object/00002.png"))))
        assert np.array_equal(frame2 > 0, clip[2])
        index = json.loads(zf.read("labels.json"))
    assert index["02_etc_passwd"] == "../../etc/passwd" and index["03_object"] is None


# pycocotools' decode trips a numpy 2 DeprecationWarning inside its own code.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_coco_rle_round_trip_image_and_video(tmp_path):
    rng = np.random.default_rng(0)
    still = rng.random((20, 24)) > 0.5
    clip = rng.random((4, 20, 24)) > 0.7
    data = masks_to_coco_rle([still, clip], ["a", None], [np.float32(0.9), 0.5])
    text = json.dumps(data)  # numpy scalars must not leak into the result
    loaded = json.loads(text)
    def decode(rle: dict) -> np.ndarray:
        return mask_utils.decode({**rle, "counts": rle["counts"].encode()})

    seg = loaded["objects"][0]["segmentation"]
    assert seg["size"] == [20, 24]
    assert np.array_equal(decode(seg), still)
    frames = loaded["objects"][1]["segmentations"]
    assert len(frames) == 4
    for rle, expected in zip(frames, clip):
        assert np.array_equal(decode(rle), expected)
    assert loaded["objects"][0]["score"] == pytest.approx(0.9)
    path = write_coco_rle_json([still], ["a"], tmp_path / "m.json")
    assert json.loads(path.read_text())["objects"][0]["segmentation"] == seg


def test_coco_rle_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="labels"):
        masks_to_coco_rle([np.zeros((2, 2), bool)], [])
    with pytest.raises(ValueError, match="scores"):
        masks_to_coco_rle([np.zeros((2, 2), bool)], ["a"], [0.1, 0.2])


def test_h264_mp4_decodes_back(tmp_path):
    frames = (np.full((33, 47, 3), 8 * i, np.uint8) for i in range(30))  # odd size
    path = write_h264_mp4(frames, tmp_path / "out.mp4", fps=29.97)
    data = path.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")  # faststart: playable while loading
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert float(stream.average_rate) == pytest.approx(29.97, abs=0.01)
        decoded = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    assert len(decoded) == 30
    assert decoded[0].shape == (34, 48, 3)  # padded to even, nothing cropped
    assert abs(float(decoded[20].mean()) - 160) < 4


def test_h264_mp4_errors_leave_no_file(tmp_path):
    target = tmp_path / "bad.mp4"
    with pytest.raises(ValueError, match="no frames"):
        write_h264_mp4([], target, fps=10)
    assert not target.exists()
    mixed = [np.zeros((10, 10, 3), np.uint8), np.zeros((12, 10, 3), np.uint8)]
    with pytest.raises(ValueError, match="differs from the first frame"):
        write_h264_mp4(mixed, target, fps=10)
    assert not target.exists()
