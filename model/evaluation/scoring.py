"""Scoring one prediction against one sample, and the set-level summary.

Rules (also written into every report):
- The answer is generated freely; no [SEG] in it means an empty prediction.
- A sample's prediction is the union of the masks of all its [SEG]s, compared with the union of its ground-truth
  masks (order-free, so an answer may name the objects in any order; extra objects cost IoU).
- Ignore pixels count in neither intersection nor union.
- Empty union (prediction and ground truth both empty outside the ignore region): IoU = `empty_iou` (LISA: 1.0);
  such a sample adds nothing to cIoU.
- Video: per-frame unions over the clip; J&F (DAVIS) per sample, averaged over samples.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from model.media.masks import decode_rle, encode_rle
from model.metrics import MetricAccumulator, iou, j_and_f

RULES = {
    "generation": "free (greedy, no teacher forcing); no [SEG] = empty prediction",
    "objects": "union of predicted masks vs union of ground-truth masks per sample",
    "ignore": "ignore pixels excluded from intersection and union",
    "empty_union": "IoU = empty_iou when prediction and ground truth are both empty; adds nothing to cIoU",
    "video": "J&F (DAVIS, boundary tolerance 0.008 of the diagonal) per sample, mean over samples",
}


def union(masks: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    out = np.zeros(shape, dtype=bool)
    for mask in masks:
        out |= np.asarray(mask, dtype=bool)
    return out


@dataclass
class Scored:
    """One sample's outcome; image masks travel as RLE so results gather cheaply across processes."""

    index: int
    group: str | None
    text: str
    n_pred: int
    n_gt: int
    iou: float
    pred: dict | None = None  # image samples: RLE of the predicted union
    gt: dict | None = None
    ignore: dict | None = None
    video: dict[str, float] = field(default_factory=dict)  # J, F, JF
    agent: dict[str, int] = field(default_factory=dict)  # agent mode: tool_calls and rounds of the turn


def score(index: int, group: str | None, text: str, preds: list[np.ndarray], gts: list[np.ndarray],
          ignore: np.ndarray | None, empty_iou: float) -> Scored:
    if not gts:
        raise ValueError(f"sample {index} has no ground-truth mask")
    shape = gts[0].shape
    for pred in preds:
        if np.shape(pred) != shape:
            raise ValueError(f"sample {index}: predicted mask {np.shape(pred)} != ground truth {shape}")
    pred_u, gt_u = union(preds, shape), union(gts, shape)
    if len(shape) == 3:
        jf = j_and_f(pred_u, gt_u)
        return Scored(index, group, text, len(preds), len(gts), jf["J"], video=jf)
    inter, uni = iou(pred_u, gt_u, ignore)
    return Scored(index, group, text, len(preds), len(gts), inter / uni if uni else empty_iou,
                  encode_rle(pred_u), encode_rle(gt_u), None if ignore is None else encode_rle(ignore))


def summarize(results: list[Scored], empty_iou: float) -> dict:
    """gIoU / cIoU overall and per group (image samples), J&F (video samples), and answer statistics."""
    acc = MetricAccumulator(empty_iou)
    for r in results:
        if r.pred is not None:
            acc.add(decode_rle(r.pred), decode_rle(r.gt), None if r.ignore is None else decode_rle(r.ignore),
                    split=r.group)
    videos = [r.video for r in results if r.video]
    summary: dict = {"n": len(results),
                     "no_seg_rate": sum(r.n_pred == 0 for r in results) / max(1, len(results)),
                     "seg_count_match_rate": sum(r.n_pred == r.n_gt for r in results) / max(1, len(results))}
    if any(r.pred is not None for r in results):
        summary["image"] = acc.result()
    if videos:
        summary["video"] = {k: float(np.mean([v[k] for v in videos])) for k in ("J", "F", "JF")} | {"n": len(videos)}
    return summary
