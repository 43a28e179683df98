"""Segmentation metrics: IoU, gIoU / cIoU (ReasonSeg, RefCOCO), and video J&F (DAVIS definition)."""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from model.media.masks import erode


def iou(pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None) -> tuple[int, int]:
    """(intersection, union) pixel counts of two bool masks of equal shape; `ignore` pixels count in neither."""
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} != ground-truth shape {gt.shape}")
    if ignore is not None:
        ignore = np.asarray(ignore, dtype=bool)
        if ignore.shape != gt.shape:
            raise ValueError(f"ignore shape {ignore.shape} != ground-truth shape {gt.shape}")
        keep = ~ignore
        pred, gt = pred & keep, gt & keep
    return int(np.count_nonzero(pred & gt)), int(np.count_nonzero(pred | gt))


def _sample_iou(inter: int, union: int, empty_iou: float) -> float:
    return inter / union if union else empty_iou


def giou_ciou(
    preds: Sequence[np.ndarray],
    gts: Sequence[np.ndarray],
    ignores: Sequence[np.ndarray | None] | None = None,
    empty_iou: float = 1.0,
) -> dict[str, float]:
    """gIoU (mean of per-sample IoU) and cIoU (total intersection / total union) over paired masks.

    Ignore pixels are excluded from both intersection and union. When a sample's union is empty (prediction and
    ground truth both empty outside the ignore region) its IoU is `empty_iou`; LISA's evaluation uses 1.0. Such a
    sample adds nothing to cIoU. cIoU of a set whose total union is empty is `empty_iou`.
    Returns {"giou", "ciou", "n"}; gIoU and cIoU are 0.0 for an empty set.
    """
    acc = MetricAccumulator(empty_iou)
    if len(preds) != len(gts) or (ignores is not None and len(ignores) != len(gts)):
        raise ValueError("preds, gts (and ignores) must have the same length")
    for k, (pred, gt) in enumerate(zip(preds, gts)):
        acc.add(pred, gt, None if ignores is None else ignores[k])
    return acc.result()["all"]


class MetricAccumulator:
    """Accumulates gIoU / cIoU overall ("all") and per split (e.g. ReasonSeg "short" / "long")."""

    def __init__(self, empty_iou: float = 1.0) -> None:
        self.empty_iou = empty_iou
        self._iou_sum: dict[str, float] = defaultdict(float)
        self._inter: dict[str, int] = defaultdict(int)
        self._union: dict[str, int] = defaultdict(int)
        self._n: dict[str, int] = defaultdict(int)

    def add(self, pred: np.ndarray, gt: np.ndarray, ignore: np.ndarray | None = None,
            split: str | None = None) -> float:
        """Add one sample (to "all" and to `split` if given); return its IoU."""
        inter, union = iou(pred, gt, ignore)
        sample_iou = _sample_iou(inter, union, self.empty_iou)
        for key in ("all", split) if split is not None and split != "all" else ("all",):
            self._iou_sum[key] += sample_iou
            self._inter[key] += inter
            self._union[key] += union
            self._n[key] += 1
        return sample_iou

    def result(self) -> dict[str, dict[str, float]]:
        """{split: {"giou", "ciou", "n"}} with an "all" entry always present."""
        out = {}
        for key in ["all", *sorted(k for k in self._n if k != "all")]:
            n = self._n[key]
            out[key] = {
                "giou": self._iou_sum[key] / n if n else 0.0,
                "ciou": _sample_iou(self._inter[key], self._union[key], self.empty_iou) if n else 0.0,
                "n": n,
            }
        return out


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Mask pixels with a 4-neighbour outside the mask; the image border itself is not a boundary."""
    return mask & ~erode(mask)


def _dilate(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation by a disk of `radius` pixels (offsets with dy² + dx² <= radius²)."""
    out = mask.copy()
    h, w = mask.shape
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            if (dy or dx) and dy * dy + dx * dx <= radius * radius:
                out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] |= \
                    mask[max(-dy, 0):h + min(-dy, 0), max(-dx, 0):w + min(-dx, 0)]
    return out


def boundary_f(pred: np.ndarray, gt: np.ndarray, tolerance: float = 0.008) -> float:
    """DAVIS boundary F-measure of one frame.

    A boundary pixel matches if the other mask's boundary lies within `tolerance` pixels (if >= 1) or
    `ceil(tolerance * image diagonal)` pixels (if < 1; DAVIS uses 0.008). Both boundaries empty gives 1.0,
    exactly one empty gives 0.0.
    """
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} != ground-truth shape {gt.shape}")
    radius = int(tolerance) if tolerance >= 1 else math.ceil(tolerance * math.hypot(*gt.shape))
    pb, gb = _boundary(pred), _boundary(gt)
    n_pred, n_gt = int(pb.sum()), int(gb.sum())
    if n_pred == 0 or n_gt == 0:
        return 1.0 if n_pred == n_gt else 0.0
    precision = np.count_nonzero(pb & _dilate(gb, radius)) / n_pred
    recall = np.count_nonzero(gb & _dilate(pb, radius)) / n_gt
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def j_and_f(pred_video: np.ndarray, gt_video: np.ndarray, tolerance: float = 0.008) -> dict[str, float]:
    """Region Jaccard J and boundary F-measure F of TxHxW bool videos, each averaged over frames; JF = (J + F) / 2.

    A frame where both masks are empty has J = 1 (DAVIS convention).
    """
    pred_video, gt_video = np.asarray(pred_video, dtype=bool), np.asarray(gt_video, dtype=bool)
    if pred_video.shape != gt_video.shape or pred_video.ndim != 3 or len(gt_video) == 0:
        raise ValueError(f"expected equal TxHxW shapes with T >= 1, got {pred_video.shape} and {gt_video.shape}")
    js = [_sample_iou(*iou(p, g), 1.0) for p, g in zip(pred_video, gt_video)]
    fs = [boundary_f(p, g, tolerance) for p, g in zip(pred_video, gt_video)]
    j, f = float(np.mean(js)), float(np.mean(fs))
    return {"J": j, "F": f, "JF": (j + f) / 2}
