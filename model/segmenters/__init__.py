"""Segmentation back-ends behind one interface (`Segmenter`): today SAM2 prompted by `[SEG]` embeddings."""

from model.segmenters.base import Segment, Segmenter
from model.segmenters.seg_embeddings import SegEmbeddingSegmenter, SegStates

__all__ = ["Segment", "Segmenter", "SegEmbeddingSegmenter", "SegStates"]
