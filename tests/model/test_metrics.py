import numpy as np
import pytest

from model.metrics import MetricAccumulator, boundary_f, giou_ciou, iou, j_and_f


def _mask(shape, *boxes):
    m = np.zeros(shape, dtype=bool)
    for y0, y1, x0, x1 in boxes:
        m[y0:y1, x0:x1] = True
    return m


def test_iou_counts_and_ignore():
    pred = _mask((4, 4), (0, 2, 0, 2))  # 4 px
    gt = _mask((4, 4), (0, 2, 1, 3))  # 4 px, overlap 2
    assert iou(pred, gt) == (2, 6)
    ignore = _mask((4, 4), (0, 1, 0, 4))  # drops the top row: pred 2 px, gt 2 px, overlap 1
    assert iou(pred, gt, ignore) == (1, 3)


def test_iou_rejects_shape_mismatch():
    with pytest.raises(ValueError):
        iou(np.zeros((2, 2), bool), np.zeros((2, 3), bool))


def test_giou_differs_from_ciou():
    # Sample A: 1 px hit exactly (IoU 1). Sample B: 3 of 9 px (IoU 1/3).
    preds = [_mask((5, 5), (0, 1, 0, 1)), _mask((5, 5), (0, 1, 0, 3))]
    gts = [_mask((5, 5), (0, 1, 0, 1)), _mask((5, 5), (0, 3, 0, 3))]
    out = giou_ciou(preds, gts)
    assert out["n"] == 2
    assert out["giou"] == pytest.approx((1 + 1 / 3) / 2)
    assert out["ciou"] == pytest.approx(4 / 10)


def test_empty_prediction_and_both_empty():
    empty, gt = np.zeros((3, 3), bool), _mask((3, 3), (0, 1, 0, 1))
    assert giou_ciou([empty], [gt])["giou"] == 0.0
    assert giou_ciou([gt], [empty])["giou"] == 0.0
    both = giou_ciou([empty, empty], [empty, gt])
    assert both["giou"] == pytest.approx(0.5)  # both-empty counts as IoU 1.0 (LISA)
    assert both["ciou"] == 0.0  # adds nothing to total I or U
    assert giou_ciou([empty], [empty], empty_iou=0.0)["giou"] == 0.0


def test_ignore_only_overlap_counts_as_empty():
    pred, gt = _mask((3, 3), (0, 1, 0, 1)), _mask((3, 3), (0, 1, 0, 1))
    ignore = _mask((3, 3), (0, 1, 0, 1))
    assert giou_ciou([pred], [gt], [ignore], empty_iou=0.25)["giou"] == 0.25


def test_accumulator_per_split():
    acc = MetricAccumulator()
    full, half = _mask((2, 2), (0, 2, 0, 2)), _mask((2, 2), (0, 1, 0, 2))
    assert acc.add(full, full, split="short") == 1.0
    assert acc.add(half, full, split="long") == 0.5
    acc.add(half, full, split="long")
    res = acc.result()
    assert list(res) == ["all", "long", "short"]
    assert res["all"]["n"] == 3 and res["long"]["n"] == 2
    assert res["all"]["giou"] == pytest.approx(2 / 3)
    assert res["all"]["ciou"] == pytest.approx((4 + 2 + 2) / 12)
    assert res["long"]["giou"] == pytest.approx(0.5)


def test_j_and_f_shifted_square():
    gt = _mask((20, 20), (5, 15, 5, 15))
    pred = _mask((20, 20), (5, 15, 7, 17))  # shifted right by 2 px
    # J = 80 / 120. With a 1 px tolerance, of the 36 boundary px of either square 20 lie within 1 px (4-neighbour
    # disk) of the other boundary: 9 on the top edge, 9 on the bottom, and 2 at the ends of the inner vertical edge.
    assert boundary_f(pred, gt, tolerance=1) == pytest.approx(20 / 36)
    out = j_and_f(pred[None], gt[None], tolerance=1)
    assert out["J"] == pytest.approx(2 / 3)
    assert out["F"] == pytest.approx(20 / 36)
    assert out["JF"] == pytest.approx((2 / 3 + 20 / 36) / 2)
    # The default 0.008 of the diagonal rounds up to 1 px at this size.
    assert boundary_f(pred, gt) == boundary_f(pred, gt, tolerance=1)
    # A 2 px tolerance covers the shift completely.
    assert boundary_f(pred, gt, tolerance=2) == pytest.approx(1.0)


def test_j_and_f_averages_frames_with_empty_conventions():
    gt = np.stack([_mask((10, 10), (2, 6, 2, 6)), np.zeros((10, 10), bool), _mask((10, 10), (2, 6, 2, 6))])
    pred = np.stack([gt[0], np.zeros((10, 10), bool), np.zeros((10, 10), bool)])
    out = j_and_f(pred, gt)
    # frame 0 perfect (1, 1); frame 1 both empty (1, 1); frame 2 missed (0, 0)
    assert out["J"] == pytest.approx(2 / 3)
    assert out["F"] == pytest.approx(2 / 3)
