"""Dataset readers (ReasonSeg, RefCOCO-style, JSONL) and synthetic scenes, all yielding `Sample`s."""
from model.data.jsonl import load_jsonl
from model.data.reasonseg import load_reasonseg
from model.data.refcoco import load_refcoco
from model.errors import DatasetError
from model.data.sample import SEG_TOKEN, LazySamples, Sample, count_seg

__all__ = ["SEG_TOKEN", "DatasetError", "LazySamples", "Sample", "count_seg", "load_jsonl", "load_reasonseg",
           "load_refcoco"]
