"""Segmentation back-ends behind one interface (`Segmenter`): SAM2 prompted by `[SEG]` embeddings, SAM 3 prompted
by phrases and exemplar boxes."""

from model.segmenters.base import Box, Segment, Segmenter
from model.segmenters.concepts import ConceptOptions, ConceptPrompt, ConceptPrompts, ConceptSegmenter
from model.segmenters.seg_embeddings import SegEmbeddingSegmenter, SegStates

__all__ = ["Box", "Segment", "Segmenter", "SegEmbeddingSegmenter", "SegStates", "ConceptOptions", "ConceptPrompt",
           "ConceptPrompts", "ConceptSegmenter"]
