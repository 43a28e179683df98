"""ReasonSeg reader: a folder of `xxx.jpg` + `xxx.json` (LabelMe style) pairs.

JSON keys used: `text` (list of instructions, or one string), `is_sentence` (bool: long vs short query),
`shapes` (list of {"label": "target" | "ignore" | "flag", "points": [[x, y], ...]}).
Rasterisation follows the ReasonSeg convention: `flag` shapes are dropped, polygons are painted largest area first
(so a smaller shape drawn later wins where they overlap), `target` pixels form the mask and `ignore` pixels the
ignore mask. Each instruction in `text` becomes its own Sample; all share the image's mask.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.data.masks import image_size, parse_polygon, rasterize_polygon
from model.errors import DatasetError
from model.data.sample import LazySamples, Sample, count_seg

DEFAULT_ANSWER = "Sure, [SEG]."
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
_LABELS = {"target", "ignore", "flag"}


@dataclass(frozen=True)
class _Entry:
    json_path: Path
    image_path: Path
    height: int
    width: int
    instruction: str
    index: int
    is_sentence: bool
    shapes: tuple[tuple[str, np.ndarray], ...]  # (label, Nx2 polygon), flags already dropped


def load_reasonseg(root: str | Path, answer_template: str = DEFAULT_ANSWER) -> LazySamples[_Entry]:
    """Read every `*.json` under `root` (non-recursive); one Sample per instruction, sorted by file name.

    `answer_template` is the training answer and must contain exactly one `[SEG]`.
    meta: id (file stem), split ("long" if `is_sentence` else "short"), instruction_index.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(root, "ReasonSeg root is not a directory")
    if count_seg(answer_template) != 1:
        raise ValueError(f"answer_template must contain exactly one [SEG]: {answer_template!r}")
    entries: list[_Entry] = []
    for json_path in sorted(root.glob("*.json")):
        entries.extend(_read_annotation(json_path))
    return LazySamples(entries, lambda e: _build(e, answer_template))


def _read_annotation(json_path: Path) -> list[_Entry]:
    try:
        anno = json.loads(json_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(json_path, f"invalid JSON: {err}") from None
    if not isinstance(anno, dict):
        raise DatasetError(json_path, "top level must be an object")
    image_path = next((p for p in (json_path.with_suffix(s) for s in _IMAGE_SUFFIXES) if p.exists()), None)
    if image_path is None:
        raise DatasetError(json_path, f"missing image {json_path.with_suffix('.jpg').name}")
    height, width = image_size(image_path, json_path)

    texts = anno.get("text")
    if isinstance(texts, str):
        texts = [texts]
    if not (isinstance(texts, list) and texts and all(isinstance(t, str) and t.strip() for t in texts)):
        raise DatasetError(json_path, "'text' must be a non-empty list of non-empty strings")
    shapes_raw = anno.get("shapes")
    if not isinstance(shapes_raw, list):
        raise DatasetError(json_path, "'shapes' must be a list")

    shapes: list[tuple[str, np.ndarray]] = []
    for i, shape in enumerate(shapes_raw):
        label = str(shape.get("label", "")).lower() if isinstance(shape, dict) else ""
        if label not in _LABELS:
            raise DatasetError(json_path, f"shape {i}: label must be one of {sorted(_LABELS)}, got {label!r}")
        if label == "flag":
            continue
        shapes.append((label, parse_polygon(shape.get("points"), json_path, f"shape {i}")))
    if not any(label == "target" for label, _ in shapes):
        raise DatasetError(json_path, "no 'target' polygon")

    return [
        _Entry(json_path, image_path, height, width, text, k, bool(anno.get("is_sentence", False)), tuple(shapes))
        for k, text in enumerate(texts)
    ]


def rasterize_shapes(
    shapes: tuple[tuple[str, np.ndarray], ...], height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """Paint (label, polygon) shapes largest area first; return (target mask, ignore mask), both bool HxW."""
    filled = [(label, rasterize_polygon(points, height, width)) for label, points in shapes]
    filled.sort(key=lambda item: int(item[1].sum()), reverse=True)
    labels = np.zeros((height, width), dtype=np.uint8)  # 0 background, 1 target, 2 ignore
    for label, region in filled:
        labels[region] = 1 if label == "target" else 2
    return labels == 1, labels == 2


def _build(entry: _Entry, answer: str) -> Sample:
    target, ignore = rasterize_shapes(entry.shapes, entry.height, entry.width)
    return Sample(
        media_path=entry.image_path,
        instruction=entry.instruction,
        answer=answer,
        masks=[target],
        ignore=ignore,
        meta={
            "id": entry.json_path.stem,
            "split": "long" if entry.is_sentence else "short",
            "instruction_index": entry.index,
        },
    )
