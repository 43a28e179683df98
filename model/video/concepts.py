"""Concept tracking in video: every instance of each phrase detected and tracked through a `VideoClip` by
transformers' `Sam3VideoModel`, with a stable id per instance, streaming.

Frames are decoded and fed one at a time in SAM 3's offline mode (each frame added to the session by index, so the
hot-start heuristics that drop flickering and duplicate tracks stay on, as in `propagate_in_video_iterator`), and
each output is held back `hotstart_delay` frames before it is final, as that iterator does. After every frame the
session is pruned to what SAM 3 still reads: the current frame, the last `num_maskmem - 1` /
`max_object_pointers_in_encoder - 1` tracker outputs per object, the `max_cond_frame_num` most recent conditioning
outputs, and the current frame's scores. Memory therefore does not grow with the clip length (only with the number
of instances, capped by `ConceptOptions.max_video_instances`). Masks are kept as per-frame RLE (`VideoMask`).

The only module that touches `Sam3VideoInferenceSession` internals.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from transformers import Sam3VideoInferenceSession, Sam3VideoModel, Sam3VideoProcessor

from model.errors import InputError
from model.media.masks import VideoMask
from model.media.render import fit_mask
from model.metrics import iou
from model.segmenters.base import Segment
from model.segmenters.concepts import ConceptPrompt, ConceptPrompts, ConceptSegmenter
from model.video.clip import VideoClip


@dataclass
class ConceptTrackingStats:
    """What the session held at its fullest (the bounded-memory contract: independent of the clip length)."""

    frames_processed: int = 0
    max_frames_held: int = 0  # SAM 3 input frames alive in the session
    max_outputs_held: int = 0  # tracker outputs kept for one instance (conditioning and tracked)
    max_buffered: int = 0  # frame outputs waiting for the hot-start decision
    max_score_frames: int = 0  # frames whose per-instance scores the session keeps
    instances: int = 0  # instances tracked (found, then possibly removed as duplicates or flicker)


class _StreamedSession(Sam3VideoInferenceSession):
    """A session that holds only the current frame but reports the clip's length, as an offline session over the
    whole video would (SAM 3's tracker reads it to decide how many object pointers to use)."""

    def __init__(self, length: int, **kwargs):
        super().__init__(**kwargs)
        self.length = length

    @property
    def num_frames(self) -> int:
        return self.length


class ConceptTracker:
    """SAM 3 video concept segmentation over a `VideoClip`; phrases are checked and tokenized by `segmenter`."""

    def __init__(self, segmenter: ConceptSegmenter):
        if segmenter.video_model is None:
            raise InputError("This SAM 3 checkpoint has the detector only, so it works on images; videos need the "
                             "full checkpoint (as facebook/sam3).")
        self.model: Sam3VideoModel = segmenter.video_model.eval()
        self.processor: Sam3VideoProcessor = segmenter.video_processor
        self.segmenter = segmenter
        tracker = self.model.config.tracker_config
        self._window = max(tracker.num_maskmem - 1, tracker.max_object_pointers_in_encoder - 1)
        self._max_conditioning = tracker.max_cond_frame_num

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def track(self, clip: VideoClip, prompts: ConceptPrompts) -> tuple[list[Segment], ConceptTrackingStats]:
        """One segment per instance (labelled with its phrase, best detection score first within a phrase), in the
        order of the phrases; a phrase seen on no frame gets one `found=False` segment with empty masks."""
        prompts = self.segmenter.check(prompts, clip.size)
        if any(c.boxes or c.negative_boxes for c in prompts.concepts):
            raise InputError("Exemplar boxes work on images; on a video, look for phrases only.")
        phrases = [c.phrase for c in prompts.concepts]
        session = self._session(clip, phrases)
        stats = ConceptTrackingStats()
        masks: dict[int, VideoMask] = {}
        scores: dict[int, float] = {}
        pending: list[tuple[int, object]] = []
        model, options = self.model, self.segmenter.options
        saved = model.score_threshold_detection, model.max_num_objects
        if prompts.score_threshold is not None:
            model.score_threshold_detection = prompts.score_threshold
        model.max_num_objects = options.max_video_instances
        try:
            for t, frame in clip.iterate():
                session.add_new_frame(self._pixels(frame), frame_idx=t)
                pending.append((t, model(inference_session=session, frame_idx=t)))
                session.hotstart_removed_obj_ids.update(pending[-1][1].removed_obj_ids)
                self._prune(session, t, stats, len(pending))
                while len(pending) > model.hotstart_delay:
                    self._record(session, *pending.pop(0), clip, masks, scores)
            for t, out in pending:
                self._record(session, t, out, clip, masks, scores)
        finally:
            model.score_threshold_detection, model.max_num_objects = saved
        stats.instances = session.max_obj_id + 1
        segmented = min((m.segmented_frames() for m in masks.values()), default=clip.length)
        return self._segments(session, phrases, masks, scores, clip, segmented), stats

    def follow(self, clip: VideoClip, kept: list[Segment], t: int
               ) -> tuple[list[Segment], ConceptTrackingStats, list[str]]:
        """Objects chosen on clip frame t (image masks, labelled with their phrases) followed through the clip:
        their phrases are tracked, and each chosen object becomes the track of its phrase whose mask on frame t
        overlaps it most (IoU at least 0.5). Returns those tracks, the tracking stats, and the labels of chosen
        objects no track matched."""
        phrases = list(dict.fromkeys(s.label or "" for s in kept))
        tracked, stats = self.track(clip, ConceptPrompts([ConceptPrompt(p) for p in phrases]))
        followed: list[Segment] = []
        lost: list[str] = []
        for chosen in kept:
            mask = fit_mask(chosen.mask, clip.size)
            overlaps = [(_overlap(mask, track.mask[t]), i) for i, track in enumerate(tracked)
                        if track.found and track.label == chosen.label and track not in followed]
            overlap, best = max(overlaps, default=(0.0, -1))
            if overlap >= 0.5:
                followed.append(tracked[best])
            else:
                lost.append(chosen.label or "object")
        return followed, stats, lost

    def _session(self, clip: VideoClip, phrases: list[str]) -> Sam3VideoInferenceSession:
        device = self.device
        session = _StreamedSession(clip.length, video_height=clip.size[0], video_width=clip.size[1],
                                   inference_device=device, inference_state_device=device,
                                   video_storage_device=device, dtype=self.model.dtype)
        tokens = self.segmenter.token_ids(phrases, pad=True)
        for i, phrase in enumerate(phrases):  # tokenized here: special-token spellings stay text
            prompt_id = session.add_prompt(phrase)
            session.prompt_input_ids[prompt_id] = tokens["input_ids"][i:i + 1].to(device)
            session.prompt_attention_masks[prompt_id] = tokens["attention_mask"][i:i + 1].to(device)
        return session

    def _pixels(self, frame: np.ndarray) -> torch.Tensor:
        pixels = self.processor(images=Image.fromarray(frame), return_tensors="pt")["pixel_values"]
        return pixels[0].to(self.device, self.model.dtype)

    def _record(self, session: Sam3VideoInferenceSession, t: int, out, clip: VideoClip,
                masks: dict[int, VideoMask], scores: dict[int, float]) -> None:
        """Frame t's final instances (the hot-start removals known by now are hidden) into the masks."""
        final = self.processor.postprocess_outputs(session, out, original_sizes=[list(clip.size)])
        present = dict(zip(final["object_ids"].tolist(), range(len(final["object_ids"]))))
        frame_masks = final["masks"].cpu().numpy()
        for obj_id, i in present.items():
            if obj_id not in masks:
                masks[obj_id] = VideoMask(clip.size, clip.length, clip.options.stride)
                for earlier in range(t):
                    masks[obj_id].set(earlier, np.zeros(clip.size, bool), -math.inf)
            score = float(final["scores"][i])
            scores[obj_id] = max(scores.get(obj_id, 0.0), score)
            masks[obj_id].set(t, frame_masks[i], _logit(score))
        for obj_id, mask in masks.items():
            if obj_id not in present:
                mask.set(t, np.zeros(clip.size, bool), -math.inf)

    def _prune(self, session: Sam3VideoInferenceSession, t: int, stats: ConceptTrackingStats,
               buffered: int) -> None:
        """Drop what SAM 3 no longer reads once frame t is done (see the module docstring)."""
        stats.frames_processed += 1
        stats.max_frames_held = max(stats.max_frames_held, len(session.processed_frames))
        stats.max_buffered = max(stats.max_buffered, buffered)
        stats.max_score_frames = max(stats.max_score_frames, len(session.obj_id_to_tracker_score_frame_wise))
        session.processed_frames = {}
        for obj_idx, outputs in session.output_dict_per_obj.items():
            tracked = outputs["non_cond_frame_outputs"]
            for f in [f for f in tracked if t - f >= self._window]:
                del tracked[f]
            conditioning = outputs["cond_frame_outputs"]
            recent = sorted(conditioning, reverse=True)[:max(self._max_conditioning, 0)]
            for f in [f for f in conditioning if f not in recent and t - f >= self._window]:
                del conditioning[f]
            frames = session.frames_tracked_per_obj[obj_idx]
            for f in [f for f in frames if t - f >= self._window]:
                del frames[f]
            stats.max_outputs_held = max(stats.max_outputs_held, len(tracked) + len(conditioning))
        for per_frame in (session.obj_id_to_tracker_score_frame_wise, session.suppressed_obj_ids):
            for f in [f for f in per_frame if f < t]:
                del per_frame[f]
        # Hot-start removal only concerns instances first seen within `hotstart_delay` frames; the frame lists of
        # older instances are never read again.
        settled = {obj_id for obj_id, first in session.obj_first_frame_idx.items()
                   if first <= t - self.model.hotstart_delay}
        for obj_id in settled & set(session.unmatched_frame_inds):
            del session.unmatched_frame_inds[obj_id]
        for pair in [pair for pair in session.overlap_pair_to_frame_inds if pair[1] in settled]:
            del session.overlap_pair_to_frame_inds[pair]

    def _segments(self, session: Sam3VideoInferenceSession, phrases: list[str], masks: dict[int, VideoMask],
                  scores: dict[int, float], clip: VideoClip, segmented: int) -> list[Segment]:
        by_phrase: dict[str, list[Segment]] = {p: [] for p in phrases}
        for obj_id, mask in masks.items():
            mask.truncate(segmented)  # the file held fewer frames than its packets promised
            if not any(m.any() for m in mask):
                continue  # hidden or empty on every frame (suppressed, or removed as a duplicate or flicker)
            phrase = session.prompts.get(session.obj_id_to_prompt_id.get(obj_id))
            if phrase in by_phrase:
                by_phrase[phrase].append(Segment(mask, scores[obj_id], phrase, float(np.nanmax(mask.presence)),
                                                 instance_id=obj_id))
        segments = []
        for phrase in phrases:
            found = sorted(by_phrase[phrase], key=lambda s: -s.score)
            if not found:
                empty = VideoMask(clip.size, segmented, clip.options.stride)
                for t in range(segmented):
                    empty.set(t, np.zeros(clip.size, bool), -math.inf)
                found = [Segment(empty, 0.0, phrase, -math.inf, found=False)]
            segments.extend(found)
        return segments


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    inter, union = iou(a, b)
    return inter / union if union else 0.0


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return math.log(p / (1 - p))
