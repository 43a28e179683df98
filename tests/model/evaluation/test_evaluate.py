"""Honest evaluation: scoring rules by hand, free generation end to end, report and overlays, the CLI."""
import json

import numpy as np
import pytest

from model.data.auto import load_dataset
from model.data.synthetic import write_jsonl
from model.evaluation.runner import run
from model.evaluation.scoring import score, summarize


def _mask(shape, *cells):
    m = np.zeros(shape, dtype=bool)
    for r, c in cells:
        m[r, c] = True
    return m


def test_scoring_rules_by_hand():
    gt = _mask((2, 3), (0, 0), (0, 1))
    pred = _mask((2, 3), (0, 1), (0, 2))
    assert score(0, None, "", [pred], [gt], None, 1.0).iou == pytest.approx(1 / 3)
    # The ignored pixel (0, 2) leaves the union: 1 / 2.
    assert score(0, None, "", [pred], [gt], _mask((2, 3), (0, 2)), 1.0).iou == pytest.approx(1 / 2)
    # Two objects in any order: the unions are compared.
    a, b = _mask((2, 3), (0, 0)), _mask((2, 3), (1, 2))
    assert score(0, None, "", [b, a], [a, b], None, 1.0).iou == 1.0
    # No [SEG] in the answer: an empty prediction.
    assert score(0, None, "", [], [gt], None, 1.0).iou == 0.0
    # Both empty: the stated empty-union value.
    empty = np.zeros((2, 3), bool)
    assert score(0, None, "", [], [empty], None, 1.0).iou == 1.0
    assert score(0, None, "", [], [empty], None, 0.0).iou == 0.0
    with pytest.raises(ValueError, match="predicted mask"):
        score(0, None, "", [np.zeros((3, 3), bool)], [gt], None, 1.0)


def test_giou_and_ciou_differ_as_computed_by_hand():
    big_gt = np.zeros((10, 10), bool)
    big_gt[:, :5] = True  # 50 pixels, predicted exactly
    small_gt = _mask((10, 10), (0, 0), (0, 1))  # 2 pixels, missed
    results = [score(0, "long", "", [big_gt], [big_gt], None, 1.0),
               score(1, "short", "", [_mask((10, 10), (9, 9))], [small_gt], None, 1.0),
               score(2, "short", "", [], [np.zeros((10, 10), bool)], None, 1.0)]
    metrics = summarize(results, 1.0)
    image = metrics["image"]
    assert image["all"]["giou"] == pytest.approx((1 + 0 + 1) / 3)
    assert image["all"]["ciou"] == pytest.approx(50 / (50 + 3))  # the empty sample adds nothing
    assert image["short"] == {"giou": pytest.approx(0.5), "ciou": pytest.approx(0.0), "n": 2}
    assert image["long"]["n"] == 1
    assert metrics["no_seg_rate"] == pytest.approx(1 / 3)


def test_video_samples_get_j_and_f():
    gt = np.zeros((2, 8, 8), bool)
    gt[:, 2:6, 2:6] = True
    perfect = score(0, None, "", [gt], [gt], None, 1.0)
    assert perfect.video == {"J": 1.0, "F": 1.0, "JF": 1.0}
    missed = score(1, None, "", [], [gt], None, 1.0)
    assert missed.video["JF"] == 0.0
    assert summarize([perfect, missed], 1.0)["video"] == {"J": 0.5, "F": 0.5, "JF": 0.5, "n": 2}


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    return write_jsonl(tmp_path_factory.mktemp("eval_scenes"), 3, seed=5, size=64)


def test_free_generation_without_seg_scores_zero(tiny_chats, scripted, scenes, tmp_path):
    chat = scripted(tiny_chats["qwen2_5_vl"], "I cannot tell.<|im_end|>")
    report = run(chat, load_dataset(scenes), tmp_path, {"model": "tiny"}, progress=False)
    assert report["metrics"]["no_seg_rate"] == 1.0
    assert report["metrics"]["image"]["all"]["giou"] == 0.0
    assert all(s["n_pred"] == 0 and s["text"] == "I cannot tell." for s in report["samples"])


def test_report_with_segments_and_worst_overlays(tiny_chats, scripted, scenes, tmp_path):
    chat = scripted(tiny_chats["qwen2_5_vl"], "It is <p>the shape</p> [SEG].<|im_end|>")
    report = run(chat, load_dataset(scenes), tmp_path, {"model": "tiny"}, worst=2, progress=False)
    assert [s["n_pred"] for s in report["samples"]] == [1, 1, 1]
    assert set(report["metrics"]["image"]) == {"all", "most_corners", "largest", "smallest"}
    assert len(report["overlays"]) == 2 and all((tmp_path / name).is_file() for name in report["overlays"])
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["rules"]["generation"].startswith("free")
    assert saved["metrics"] == report["metrics"]


def test_cli_writes_a_report(tiny_dirs, scenes, tmp_path):
    from model.evaluate import main

    report = main(["--model", str(tiny_dirs["qwen2_5_vl"]), "--data", str(scenes), "--out", str(tmp_path),
                   "--max-new-tokens", "4", "--limit", "2", "--worst", "1"])
    assert report["metrics"]["n"] == 2
    assert (tmp_path / "report.json").is_file()


@pytest.fixture
def reasonseg(tmp_path):
    """Two ReasonSeg-format samples (image + json polygons)."""
    from PIL import Image as PILImage

    folder = tmp_path / "reasonseg"
    folder.mkdir()
    for name, square in (("a", [[4, 4], [30, 4], [30, 30], [4, 30]]), ("b", [[20, 10], [60, 10], [60, 40], [20, 40]])):
        PILImage.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(
            folder / f"{name}.jpg")
        (folder / f"{name}.json").write_text(json.dumps({
            "text": ["what would hold the coffee?"], "is_sentence": True,
            "shapes": [{"label": "target", "shape_type": "polygon", "points": square}]}))
    return folder


def test_agent_mode_evaluation_records_tool_calls_and_rounds(agent_chat, reasonseg, tmp_path):
    from tests.helpers import scripted_rounds

    call = '<tool_call>{"name": "segment", "arguments": {"phrases": ["cup"]}}</tool_call><|im_end|>'
    keep = '<tool_call>{"name": "keep", "arguments": {"candidates": [1]}}</tool_call><|im_end|>'
    with scripted_rounds(agent_chat, call, keep, "The cup.<|im_end|>", "No idea.<|im_end|>"):
        report = run(agent_chat, load_dataset(reasonseg), tmp_path, {"model": "tiny"}, progress=False)
    first, second = report["samples"]
    assert first["agent"] == {"tool_calls": 2, "rounds": 3} and first["n_pred"] == 1 and first["text"] == "The cup."
    assert second["agent"] == {"tool_calls": 0, "rounds": 1} and second["n_pred"] == 0
    assert 0.0 <= report["metrics"]["image"]["all"]["giou"] <= 1.0


def test_cli_evaluates_a_plain_vlm_in_agent_mode(tiny_plain_dirs, tiny_sam3_dir, reasonseg, tmp_path):
    from model.evaluate import main

    report = main(["--model", str(tiny_plain_dirs["qwen2_5_vl"]), "--concepts", str(tiny_sam3_dir),
                   "--data", str(reasonseg), "--out", str(tmp_path), "--max-new-tokens", "4", "--worst", "0"])
    assert report["mode"] == "agent" and report["metrics"]["n"] == 2
    assert all(s["agent"]["rounds"] >= 1 for s in report["samples"])
