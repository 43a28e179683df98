import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from model.errors import DatasetError
from model.data import load_jsonl, load_reasonseg, load_refcoco


def _image(path, h, w):
    Image.fromarray(np.full((h, w, 3), 128, np.uint8)).save(path)


def _png_mask(path, mask):
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)


def _rle(mask):
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}


def _square(x0, y0, x1, y1):
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


# ---------------------------------------------------------------- ReasonSeg

def _reasonseg(tmp_path, shapes, name="a", image=True, text=("what is red?", "the thing you sit on")):
    if image:
        _image(tmp_path / f"{name}.jpg", 20, 20)
    (tmp_path / f"{name}.json").write_text(json.dumps({"text": list(text), "is_sentence": True, "shapes": shapes}))
    return tmp_path / f"{name}.json"


def test_reasonseg_paints_largest_first_and_drops_flags(tmp_path):
    # The small target comes first in the file; painted in file order, the big ignore square would cover it.
    _reasonseg(tmp_path, [
        {"label": "target", "points": _square(5, 5, 10, 10)},
        {"label": "ignore", "points": _square(2, 2, 17, 17)},
        {"label": "flag", "points": _square(0, 0, 19, 19)},
    ])
    samples = load_reasonseg(tmp_path, answer_template="It is [SEG].")
    assert len(samples) == 2  # one per instruction
    first, second = samples
    target = np.zeros((20, 20), bool)
    target[5:11, 5:11] = True
    ignore = np.zeros((20, 20), bool)
    ignore[2:18, 2:18] = True
    ignore &= ~target
    assert len(first.masks) == 1
    np.testing.assert_array_equal(first.masks[0], target)
    np.testing.assert_array_equal(first.ignore, ignore)
    assert (first.instruction, second.instruction) == ("what is red?", "the thing you sit on")
    assert first.answer == "It is [SEG]."
    assert first.meta == {"id": "a", "split": "long", "instruction_index": 0}
    assert first.media_path == tmp_path / "a.jpg"


@pytest.mark.parametrize("shapes, image, problem", [
    ([{"label": "target", "points": _square(1, 1, 5, 5)}], False, "missing image"),
    ([{"label": "target", "points": [[1, 1], [5, 5]]}], True, "at least 3"),
    ([{"label": "target", "points": [[1, 1], ["a", 5], [5, 1]]}], True, "non-numeric"),
    ([{"label": "thing", "points": _square(1, 1, 5, 5)}], True, "label"),
    ([{"label": "ignore", "points": _square(1, 1, 5, 5)}], True, "no 'target'"),
])
def test_reasonseg_malformed(tmp_path, shapes, image, problem):
    json_path = _reasonseg(tmp_path, shapes, name="bad", image=image)
    with pytest.raises(DatasetError, match=problem) as err:
        load_reasonseg(tmp_path)
    assert err.value.path == json_path and "bad.json" in str(err.value)


def test_reasonseg_invalid_json(tmp_path):
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(DatasetError, match="broken.json: invalid JSON"):
        load_reasonseg(tmp_path)


# ---------------------------------------------------------------- RefCOCO

def _coco(tmp_path, rle_mask=None, polygon=None, with_image=True):
    (tmp_path / "images").mkdir(exist_ok=True)
    if with_image:
        _image(tmp_path / "images" / "img1.jpg", 10, 12)
    if rle_mask is None:
        rle_mask = np.zeros((10, 12), bool)
        rle_mask[6:9, 1:4] = True
    instances = {
        "images": [{"id": 7, "file_name": "img1.jpg", "height": 10, "width": 12}],
        "annotations": [
            {"id": 1, "image_id": 7, "segmentation": [polygon or [2, 1, 8, 1, 8, 4, 2, 4]]},
            {"id": 2, "image_id": 7, "segmentation": _rle(rle_mask)},
        ],
    }
    refs = [
        {"ref_id": 10, "ann_id": 1, "image_id": 7, "split": "val",
         "sentences": [{"sent": "left box", "sent_id": 100}, {"sent": "the top one", "sent_id": 101}]},
        {"ref_id": 11, "ann_id": 2, "image_id": 7, "split": "testA", "sentences": [{"sent": "bottom", "sent_id": 102}]},
    ]
    (tmp_path / "instances.json").write_text(json.dumps(instances))
    (tmp_path / "refs.json").write_text(json.dumps(refs))


def test_refcoco_polygon_and_rle(tmp_path):
    _coco(tmp_path)
    samples = load_refcoco(tmp_path)
    assert [s.instruction for s in samples] == ["left box", "the top one", "bottom"]
    poly = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects([[2, 1, 8, 1, 8, 4, 2, 4]], 10, 12)))
    np.testing.assert_array_equal(samples[0].masks[0], poly.astype(bool))
    assert samples[0].masks[0].sum() > 0
    expected = np.zeros((10, 12), bool)
    expected[6:9, 1:4] = True
    np.testing.assert_array_equal(samples[2].masks[0], expected)
    assert samples[2].answer == "Sure, [SEG]."
    assert samples[2].media_path == tmp_path / "images" / "img1.jpg"
    assert samples[1].meta == {"ref_id": 10, "ann_id": 1, "image_id": 7, "sent_id": 101, "split": "val"}


def test_refcoco_split_filter_and_templates(tmp_path):
    _coco(tmp_path)
    samples = load_refcoco(tmp_path, split="testA", instruction_template="Please segment {sent}.")
    assert len(samples) == 1 and samples[0].instruction == "Please segment bottom."


@pytest.mark.parametrize("kwargs, problem", [
    ({"rle_mask": np.zeros((5, 5), bool)}, r"RLE size \[5, 5\] != image size \[10, 12\]"),
    ({"polygon": [1, 1, 3, 3]}, "at least 3"),
    ({"with_image": False}, "missing image file"),
])
def test_refcoco_malformed_instances(tmp_path, kwargs, problem):
    _coco(tmp_path, **kwargs)
    with pytest.raises(DatasetError, match=problem) as err:
        load_refcoco(tmp_path)
    assert err.value.path == tmp_path / "instances.json"


def test_refcoco_unknown_ann_id_names_refs_file(tmp_path):
    _coco(tmp_path)
    refs = json.loads((tmp_path / "refs.json").read_text())
    refs[1]["ann_id"] = 99
    (tmp_path / "refs.json").write_text(json.dumps(refs))
    with pytest.raises(DatasetError, match="refs.json: ref 1: ann_id 99"):
        load_refcoco(tmp_path)


# ---------------------------------------------------------------- JSONL

def _jsonl_fixture(tmp_path):
    _image(tmp_path / "img.png", 8, 10)
    m1 = np.zeros((8, 10), bool)
    m1[1:3, 1:4] = True
    m2 = np.zeros((8, 10), bool)
    m2[5:8, 6:10] = True
    _png_mask(tmp_path / "m1.png", m1)
    frames = tmp_path / "clip"
    frames.mkdir()
    for i in range(2):
        _image(frames / f"{i:03d}.jpg", 8, 10)
    (tmp_path / "clip.mp4").write_bytes(b"")  # a video file: its size is unknown, masks must agree with each other
    lines = [
        {"image": "img.png", "instruction": "the top left thing", "answer": "It is [SEG].", "masks": ["m1.png"],
         "meta": {"split": "short"}},
        {"image": "img.png", "instruction": "both", "answer": "<p>a</p> [SEG] and <p>b</p> [SEG].",
         "masks": [_rle(m2), "m1.png"]},
        {"video": "clip", "instruction": "track it", "answer": "[SEG]", "masks": [["m1.png", _rle(m2)]]},
        {"image": "img.png", "instruction": "eval only", "masks": ["m1.png"]},  # no answer: ground truth only
    ]
    return lines, m1, m2


def _write_lines(path, lines):
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def test_jsonl_png_rle_multi_object_and_video(tmp_path):
    lines, m1, m2 = _jsonl_fixture(tmp_path)
    samples = load_jsonl(_write_lines(tmp_path / "data.jsonl", lines))
    assert len(samples) == 4
    single, double, video, eval_only = samples
    np.testing.assert_array_equal(single.masks[0], m1)
    assert single.meta == {"split": "short"} and single.media_path == tmp_path / "img.png"
    assert len(double.masks) == 2
    np.testing.assert_array_equal(double.masks[0], m2)
    np.testing.assert_array_equal(double.masks[1], m1)
    assert video.masks[0].shape == (2, 8, 10)
    np.testing.assert_array_equal(video.masks[0], np.stack([m1, m2]))
    assert eval_only.answer is None and len(eval_only.masks) == 1


@pytest.mark.parametrize("bad, problem", [
    ("{\"image\": ", "invalid JSON"),
    ({"image": "img.png", "instruction": "x", "answer": "[SEG] and [SEG]", "masks": ["m1.png"]},
     r"2 \[SEG\] but 1 masks"),
    ({"image": "img.png", "instruction": "x", "answer": "[SEG]", "masks": [{"size": [4, 4], "counts": "04"}]},
     r"mask size \[4, 4\] != image size \[8, 10\]"),
    ({"image": "nope.png", "instruction": "x", "answer": "[SEG]", "masks": ["m1.png"]}, "missing image"),
    ({"image": "img.png", "instruction": "x", "answer": "[SEG]", "masks": ["gone.png"]}, "missing mask file"),
    ({"video": "clip", "instruction": "x", "answer": "[SEG]", "masks": [["m1.png"]]}, "1 frames"),
    ({"video": "clip.mp4", "instruction": "x", "answer": "[SEG]",
      "masks": [["m1.png", {"size": [4, 4], "counts": "04"}]]}, "disagree"),
])
def test_jsonl_malformed_names_file_and_line(tmp_path, bad, problem):
    lines, _, _ = _jsonl_fixture(tmp_path)
    path = _write_lines(tmp_path / "data.jsonl", [lines[0], "", bad])
    with pytest.raises(DatasetError, match=problem) as err:
        load_jsonl(path)
    assert err.value.line == 3
    assert str(err.value).startswith(f"{path}:3: ")
