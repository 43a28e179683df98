"""RefCOCO-style reader: COCO instances + referring expressions, all JSON (no pickle).

Accepted layout (the `refer` toolkit's refcoco/refcoco+/refcocog folders with `refs(unc).p` saved as JSON)::

    root/
      instances.json   {"images": [{"id", "file_name", "height", "width"}, ...],
                        "annotations": [{"id", "image_id", "segmentation"}, ...]}
                       segmentation: COCO polygons [[x0, y0, x1, y1, ...], ...] or RLE {"size": [h, w], "counts"}
      refs.json        [{"ref_id", "ann_id", "image_id", "split", "sentences": [{"sent", "sent_id"?}, ...]}, ...]
      images/          the files named by images[].file_name (override with `image_dir`, e.g. COCO train2014/)

Image sizes are taken from instances.json. One Sample per sentence.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pycocotools import mask as mask_utils

from model.data.masks import parse_polygon, rle_size
from model.data.sample import LazySamples, Sample, count_seg
from model.errors import DatasetError
from model.media.masks import decode_rle

DEFAULT_ANSWER = "Sure, [SEG]."


@dataclass(frozen=True)
class _Entry:
    image_path: Path
    height: int
    width: int
    segmentation: Any  # validated polygons (list of flat lists) or RLE dict
    sentence: str
    meta: dict[str, Any]


def load_refcoco(
    root: str | Path,
    split: str | None = None,
    refs_file: str = "refs.json",
    image_dir: str | Path | None = None,
    instruction_template: str = "{sent}",
    answer_template: str = DEFAULT_ANSWER,
) -> LazySamples[_Entry]:
    """Read `root/instances.json` + `root/<refs_file>`, keeping refs of `split` (all splits if None).

    The instruction is `instruction_template.format(sent=sentence)`; the answer is `answer_template` (one `[SEG]`).
    meta: ref_id, ann_id, image_id, sent_id, split.
    """
    root = Path(root)
    image_dir = Path(image_dir) if image_dir is not None else root / "images"
    if count_seg(answer_template) != 1:
        raise ValueError(f"answer_template must contain exactly one [SEG]: {answer_template!r}")
    instances_path, refs_path = root / "instances.json", root / refs_file
    instances = _read_json(instances_path)
    refs = _read_json(refs_path)
    if not isinstance(instances, dict):
        raise DatasetError(instances_path, "top level must be an object with 'images' and 'annotations'")
    if not isinstance(refs, list):
        raise DatasetError(refs_path, "top level must be a list of refs")
    try:
        images = {img["id"]: img for img in instances["images"]}
        anns = {ann["id"]: ann for ann in instances["annotations"]}
    except (KeyError, TypeError) as err:
        raise DatasetError(instances_path, f"images/annotations need an 'id': {err!r}") from None

    entries: list[_Entry] = []
    checked: dict[int, tuple[Path, int, int, Any]] = {}  # ann_id -> validated geometry, shared by its sentences
    for i, ref in enumerate(refs):
        if not isinstance(ref, dict):
            raise DatasetError(refs_path, f"ref {i} is not an object")
        if split is not None and ref.get("split") != split:
            continue
        ann = anns.get(ref.get("ann_id"))
        if ann is None:
            raise DatasetError(refs_path, f"ref {i}: ann_id {ref.get('ann_id')!r} not in {instances_path.name}")
        sentences = ref.get("sentences")
        if not (isinstance(sentences, list) and sentences
                and all(isinstance(s, dict) and isinstance(s.get("sent"), str) for s in sentences)):
            raise DatasetError(refs_path, f"ref {i}: 'sentences' must be a non-empty list of {{'sent': str}}")
        if ann["id"] not in checked:
            checked[ann["id"]] = _check_annotation(ann, images, instances_path, image_dir)
        image_path, height, width, seg = checked[ann["id"]]
        for k, s in enumerate(sentences):
            meta = {"ref_id": ref.get("ref_id"), "ann_id": ann["id"], "image_id": ann.get("image_id"),
                    "sent_id": s.get("sent_id", k), "split": ref.get("split")}
            entries.append(_Entry(image_path, height, width, seg, instruction_template.format(sent=s["sent"]), meta))
    return LazySamples(entries, lambda e: _build(e, answer_template))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DatasetError(path, "file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(path, f"invalid JSON: {err}") from None


def _check_annotation(ann: dict, images: dict, source: Path, image_dir: Path) -> tuple[Path, int, int, Any]:
    """Validate one annotation's image and segmentation; return (image path, height, width, segmentation)."""
    where = f"annotation {ann['id']}"
    img = images.get(ann.get("image_id"))
    if img is None:
        raise DatasetError(source, f"{where}: image_id {ann.get('image_id')!r} not in 'images'")
    try:
        height, width, file_name = int(img["height"]), int(img["width"]), str(img["file_name"])
    except (KeyError, TypeError, ValueError):
        raise DatasetError(source, f"image {img.get('id')!r}: needs file_name, height, width") from None
    image_path = image_dir / file_name
    if not image_path.is_file():
        raise DatasetError(source, f"{where}: missing image file {image_path}")
    seg = ann.get("segmentation")
    if isinstance(seg, dict):
        if rle_size(seg, source) != (height, width):
            raise DatasetError(source, f"{where}: RLE size {seg['size']} != image size {[height, width]}")
    elif isinstance(seg, list) and seg:
        seg = [parse_polygon(poly, source, where).ravel().tolist() for poly in seg]
    else:
        raise DatasetError(source, f"{where}: 'segmentation' must be polygons or an RLE dict")
    return image_path, height, width, seg


def _build(entry: _Entry, answer: str) -> Sample:
    seg = entry.segmentation
    if isinstance(seg, dict):
        mask = decode_rle(seg)
    else:
        mask = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(seg, entry.height, entry.width)))
        mask = mask.astype(bool)
    return Sample(media_path=entry.image_path, instruction=entry.sentence, answer=answer, masks=[mask],
                  meta=dict(entry.meta))
