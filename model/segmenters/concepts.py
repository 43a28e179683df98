"""SAM 3 concept segmentation: every instance of a noun phrase (optionally steered by exemplar boxes).

Behind the same seam as the `[SEG]` back-end: `encode(image)` computes SAM 3's vision features once (the
conversation caches them for every later phrase, turn and exemplar), `segment(features, prompts)` returns one
`Segment` per instance found, labelled with its phrase, and one `found=False` segment (empty mask) per phrase
that is not in the image. Text-only phrases of one request go through SAM 3 in one batched call.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import Sam3Model, Sam3Processor, Sam3VideoModel, Sam3VideoProcessor

from model.errors import CheckpointError, InputError
from model.segmenters.base import Box, Segment

DEFAULT_CONCEPTS = "facebook/sam3"
TEXT_SLOTS = 32  # SAM 3's text encoder reads 32 tokens, start and end tokens included


@dataclass(frozen=True)
class ConceptOptions:
    """Thresholds and limits. `score` is SAM 3's published confidence threshold (0.5, on sigmoid(query logit) x
    sigmoid(presence logit)); `mask` binarises sigmoid(mask logit) (0.5); `presence` is the probability below
    which a phrase counts as absent whatever its queries say (0.5: with the default score threshold no instance
    can pass it below that anyway)."""

    score: float = 0.5
    presence: float = 0.5
    mask: float = 0.5
    max_phrases: int = 8
    max_phrase_chars: int = 120
    max_boxes: int = 8
    max_video_instances: int = 32  # instances tracked at once in a video (memory grows with them, not with length)


@dataclass
class ConceptPrompt:
    """One concept: a noun phrase and optional exemplar boxes (pixels x0, y0, x1, y1 of the original image)."""

    phrase: str
    boxes: list[Box] = field(default_factory=list)
    negative_boxes: list[Box] = field(default_factory=list)


@dataclass
class ConceptPrompts:
    """The prompts of this back-end: concepts, and a score threshold for this request (None: the default)."""

    concepts: list[ConceptPrompt]
    score_threshold: float | None = None


@dataclass
class ConceptFeatures:
    """SAM 3 vision features of one image (`Sam3Model.get_vision_features`) and the image's size (H, W)."""

    vision: object  # Sam3VisionEncoderOutput, batch 1
    original_size: tuple[int, int]


class ConceptSegmenter:
    """`Sam3Model` + `Sam3Processor` as a `Segmenter` of `ConceptPrompts`."""

    def __init__(self, model: Sam3Model, processor: Sam3Processor, options: ConceptOptions | None = None,
                 video_model: Sam3VideoModel | None = None, video_processor: Sam3VideoProcessor | None = None):
        self.model = model.eval()
        self.processor = processor
        self.options = options or ConceptOptions()
        # The full checkpoint's detector + tracker (`model` is its detector), for `model.video.concepts`; None for
        # a detector-only (`sam3`) checkpoint.
        self.video_model = video_model
        self.video_processor = video_processor

    @classmethod
    def from_pretrained(cls, source: str | Path, device: torch.device, dtype: torch.dtype,
                        options: ConceptOptions | None = None) -> "ConceptSegmenter":
        """SAM 3 from a folder or hub id (`facebook/sam3` is gated); failures raise `CheckpointError`."""
        from model.loading import check_weights_format, read_config, resolve_source

        folder = resolve_source(source, gated_hint="SAM 3 concept search")
        model_type = read_config(folder).get("model_type")
        if model_type not in ("sam3", "sam3_video"):
            raise CheckpointError(f"{source} is not a SAM 3 checkpoint (its config.json names another model).")
        check_weights_format(folder)
        load = {"dtype": dtype, "device_map": str(device), "use_safetensors": True}
        try:
            processor = Sam3Processor.from_pretrained(folder)
            if model_type == "sam3":  # the detector alone: images only
                return cls(Sam3Model.from_pretrained(folder, **load), processor, options)
            # the published layout (facebook/sam3): detector + tracker; images use the detector, shared
            video = Sam3VideoModel.from_pretrained(folder, **load)
            video_processor = Sam3VideoProcessor.from_pretrained(folder)
        except (OSError, ValueError, RuntimeError) as err:
            raise CheckpointError(f"{source}: SAM 3 could not be loaded ({type(err).__name__}: {err}).") from err
        return cls(video.detector_model, processor, options, video, video_processor)

    @property
    def device(self) -> torch.device:
        return self.model.text_projection.weight.device

    @torch.no_grad()
    def encode(self, image: Image.Image) -> ConceptFeatures:
        pixels = self.processor(images=image, return_tensors="pt")["pixel_values"]
        vision = self.model.get_vision_features(pixels.to(self.device, self.model.dtype))
        return ConceptFeatures(vision, (image.height, image.width))

    @property
    def can_point(self) -> bool:
        """Whether clicks and boxes can become a mask (`refine`): the full checkpoint's tracker is loaded."""
        return self.video_model is not None

    @torch.no_grad()
    def refine(self, features: ConceptFeatures, points_xy: list[tuple[float, float]], labels: list[int],
               box: Box | None = None) -> np.ndarray:
        """One object's mask from clicks (pixel x, y of the original image; label 1 = in, 0 = out) and/or a box
        (x0, y0, x1, y1 in the same pixels): SAM 3's tracker (a SAM2-style prompt encoder and mask decoder) on the
        image's cached features; empty when it finds no object there. Needs `can_point`."""
        if self.video_model is None:
            raise CheckpointError("This SAM 3 checkpoint has no tracker (a detector-only `sam3` folder), so clicks "
                                  "and boxes cannot become masks; load the full checkpoint (facebook/sam3).")
        video, tracker = self.video_model, self.video_model.tracker_model
        maps, _ = video.get_vision_features_for_tracker(features.vision)
        maps[-1] = maps[-1] + tracker.no_memory_embedding
        embeddings = [m.permute(1, 2, 0).reshape(1, -1, *size) for m, size in zip(maps, tracker.backbone_feature_sizes)]
        height, width = features.original_size
        dtype = embeddings[-1].dtype
        # SAM 3 resizes the image to a square without padding: each axis scales on its own.
        scale = torch.tensor([tracker.image_size / width, tracker.image_size / height], dtype=dtype)
        # A box goes in as its two corners (labels 2 and 3) before the clicks, as SAM2's predictor sends it.
        corners = [(box[0], box[1]), (box[2], box[3])] if box is not None else []
        points = torch.tensor(corners + list(points_xy), dtype=dtype) * scale
        point_labels = torch.tensor([2, 3][:len(corners)] + list(labels), dtype=torch.int32)
        # The tracker's own one-frame step: the best of its three masks, emptied when no object is there.
        decoded = tracker._single_frame_forward(image_embeddings=embeddings, multimask_output=True,
                                                input_points=points.view(1, 1, -1, 2).to(self.device),
                                                input_labels=point_labels.view(1, 1, -1).to(self.device))
        logits = F.interpolate(decoded.pred_masks.float(), size=(height, width), mode="bilinear", align_corners=False)
        return (logits[0, 0] > 0).cpu().numpy()

    def check(self, prompts: ConceptPrompts, size: tuple[int, int]) -> ConceptPrompts:
        """`prompts` cleaned (phrases stripped, repeats dropped), or `InputError` saying what is wrong."""
        options = self.options
        if not prompts.concepts:
            raise InputError("Please give at least one phrase to look for.")
        concepts: dict[str, ConceptPrompt] = {}
        for concept in prompts.concepts:
            phrase = self._check_phrase(concept.phrase)
            boxes = [_check_box(b, size) for b in concept.boxes]
            negative = [_check_box(b, size) for b in concept.negative_boxes]
            if len(boxes) + len(negative) > options.max_boxes:
                raise InputError(f"At most {options.max_boxes} exemplar boxes per phrase.")
            if phrase.lower() not in concepts:
                concepts[phrase.lower()] = ConceptPrompt(phrase, boxes, negative)
        if len(concepts) > options.max_phrases:
            raise InputError(f"{len(concepts)} phrases asked for; the limit is {options.max_phrases} at once.")
        threshold = prompts.score_threshold
        if threshold is not None and not 0.0 <= threshold <= 1.0:
            raise InputError(f"The score threshold must be between 0 and 1, got {threshold}.")
        return ConceptPrompts(list(concepts.values()), threshold)

    def _check_phrase(self, phrase: str) -> str:
        if not isinstance(phrase, str) or not phrase.strip():
            raise InputError("A phrase to look for is empty.")
        phrase = " ".join(phrase.split())
        if len(phrase) > self.options.max_phrase_chars:
            raise InputError(f"The phrase {phrase[:40]!r}... is {len(phrase)} characters long; "
                             f"the limit is {self.options.max_phrase_chars}.")
        if len(self.token_ids([phrase])["input_ids"][0]) > TEXT_SLOTS:
            raise InputError(f"The phrase {phrase[:40]!r} is too long for SAM 3 (at most {TEXT_SLOTS - 2} tokens); "
                             "use a short noun phrase such as 'yellow school bus'.")
        return phrase

    def token_ids(self, phrases: list[str], pad: bool = False) -> dict:
        # Special-token spellings inside a phrase are text, never control tokens.
        padding = {"padding": "max_length", "max_length": TEXT_SLOTS, "return_tensors": "pt"} if pad else {}
        return self.processor.tokenizer(phrases, split_special_tokens=True, **padding)

    @torch.no_grad()
    def segment(self, features: ConceptFeatures, prompts: ConceptPrompts) -> list[Segment]:
        """Instances of each concept, in the order asked; an absent concept gives one `found=False` segment."""
        prompts = self.check(prompts, features.original_size)
        text_only = [c for c in prompts.concepts if not (c.boxes or c.negative_boxes)]
        results: dict[str, list[Segment]] = {}
        if text_only:
            results.update(zip([c.phrase for c in text_only], self._run(features, text_only, prompts)))
        for concept in prompts.concepts:
            if concept.phrase not in results:  # box counts differ between concepts: one call each
                results[concept.phrase] = self._run(features, [concept], prompts)[0]
        return [segment for concept in prompts.concepts for segment in results[concept.phrase]]

    def _run(self, features: ConceptFeatures, concepts: list[ConceptPrompt],
             prompts: ConceptPrompts) -> list[list[Segment]]:
        """One SAM 3 call for `concepts` (all with exemplars alike), the image's features shared across the batch."""
        k = len(concepts)
        text = self.token_ids([c.phrase for c in concepts], pad=True)
        inputs = {"input_ids": text["input_ids"].to(self.device),
                  "attention_mask": text["attention_mask"].to(self.device)}
        if concepts[0].boxes or concepts[0].negative_boxes:
            inputs.update(self._box_inputs(concepts[0], features.original_size))
        outputs = self.model(vision_embeds=_repeat(features.vision, k), **inputs)
        options = self.options
        score = options.score if prompts.score_threshold is None else prompts.score_threshold
        found = self.processor.post_process_instance_segmentation(
            outputs, threshold=score, mask_threshold=options.mask, target_sizes=[features.original_size] * k)
        presence = outputs.presence_logits[:, 0].float()
        best = (outputs.pred_logits.float().sigmoid() * presence.sigmoid()[:, None]).max(dim=1).values
        return [self._segments(concept.phrase, instances, float(logit), float(top), features.original_size)
                for concept, instances, logit, top in zip(concepts, found, presence, best)]

    def _box_inputs(self, concept: ConceptPrompt, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        """Exemplar boxes as SAM 3 takes them (normalised cx, cy, w, h; label 1 positive, 0 negative)."""
        boxes = [list(b) for b in concept.boxes + concept.negative_boxes]
        labels = [1] * len(concept.boxes) + [0] * len(concept.negative_boxes)
        encoded = self.processor(input_boxes=[boxes], input_boxes_labels=[labels], original_sizes=[list(size)],
                                 return_tensors="pt")
        return {"input_boxes": encoded["input_boxes"].to(self.device, self.model.dtype),
                "input_boxes_labels": encoded["input_boxes_labels"].to(self.device)}

    def _segments(self, phrase: str, instances: dict, presence_logit: float, best_score: float,
                  size: tuple[int, int]) -> list[Segment]:
        present = 1 / (1 + math.exp(-presence_logit)) >= self.options.presence
        if not present or len(instances["scores"]) == 0:
            return [Segment(np.zeros(size, dtype=bool), best_score, phrase, presence_logit, found=False)]
        order = instances["scores"].float().argsort(descending=True).tolist()
        masks = instances["masks"].bool().cpu().numpy()
        boxes = instances["boxes"].float().cpu().tolist()
        scores = instances["scores"].float().cpu().tolist()
        return [Segment(masks[i], scores[i], phrase, presence_logit, box=_clip_box(boxes[i], size)) for i in order]


def _repeat(vision, k: int):
    """The image's features seen as a batch of k (views, no copies) for k prompts at once."""
    repeated = copy.copy(vision)
    repeated.fpn_hidden_states = tuple(h.expand(k, *h.shape[1:]) for h in vision.fpn_hidden_states)
    repeated.fpn_position_encoding = tuple(p.expand(k, *p.shape[1:]) for p in vision.fpn_position_encoding)
    return repeated


def _check_box(box: Sequence[float], size: tuple[int, int]) -> Box:
    height, width = size
    try:
        x0, y0, x1, y1 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise InputError(f"An exemplar box is four numbers x0, y0, x1, y1 in pixels; got {box!r}.") from None
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise InputError(f"The exemplar box {box!r} has a coordinate that is not a number.")
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise InputError(f"The exemplar box ({x0:g}, {y0:g}, {x1:g}, {y1:g}) must have x0 < x1 and y0 < y1 and lie "
                         f"inside the {width}×{height} image.")
    return (x0, y0, x1, y1)


def _clip_box(box: Sequence[float], size: tuple[int, int]) -> Box:
    height, width = size
    x0, y0, x1, y1 = box
    return (min(max(x0, 0.0), width), min(max(y0, 0.0), height), min(max(x1, 0.0), width), min(max(y1, 0.0), height))
