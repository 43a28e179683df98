"""Open a dataset by path, whatever its format: a JSONL file, a RefCOCO-style folder or a ReasonSeg folder."""
from __future__ import annotations

from pathlib import Path

from model.data.jsonl import load_jsonl
from model.data.reasonseg import load_reasonseg
from model.data.refcoco import load_refcoco
from model.errors import DatasetError
from model.data.sample import LazySamples

FORMATS = ("jsonl", "refcoco", "reasonseg")


def detect_format(path: Path) -> str:
    if path.is_file() and path.suffix == ".jsonl":
        return "jsonl"
    if path.is_dir() and (path / "instances.json").is_file():
        return "refcoco"
    if path.is_dir() and any(path.glob("*.json")):
        return "reasonseg"
    raise DatasetError(path, "not a dataset: expected a .jsonl file, a RefCOCO-style folder (instances.json + "
                             "refs.json) or a ReasonSeg folder (image + .json pairs)")


def load_dataset(path: str | Path, kind: str | None = None, split: str | None = None) -> LazySamples:
    """Samples of the dataset at `path`; `kind` is one of FORMATS (detected when None), `split` is for RefCOCO."""
    path = Path(path)
    kind = kind or detect_format(path)
    if kind == "jsonl":
        return load_jsonl(path)
    if kind == "refcoco":
        return load_refcoco(path, split=split)
    if kind == "reasonseg":
        return load_reasonseg(path)
    raise ValueError(f"unknown dataset format {kind!r}; expected one of {FORMATS}")
