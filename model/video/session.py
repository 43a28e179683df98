"""The only module that touches transformers' private SAM2 video internals: the session state
(`output_dict_per_obj`, `frames_tracked_per_obj`, `processed_frames`, `point_inputs_per_obj`,
`mask_inputs_per_obj`, `cache`) and the model's `_run_single_frame_inference` / `_encode_new_memory`.

`TrackingSession` is a SAM2 video inference session for N objects, prompted by [SEG] embeddings or by masks (the
regions a person drew), that keeps only what SAM2 reads after each frame: the conditioning frames, the last
`num_maskmem - 1` memories and the last `max_object_pointers - 1` object pointers. Memory therefore does not grow
with the clip length.

The embedding reaches SAM2's mask decoder without editing transformers: it rides in the session's point inputs
(`"seg_embedding"`), and `EmbeddingPrompts` (a wrapper of `_run_single_frame_inference` plus a forward hook on the
prompt encoder) appends it to the sparse prompt after Sa2VA's dummy point (label -1) and the encoder's pad point.
Imports torch and transformers only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from transformers import Sam2VideoInferenceSession, Sam2VideoModel
from transformers.models.sam2_video.modeling_sam2_video import Sam2VideoSegmentationOutput


class EmbeddingPrompts:
    """While active, an object whose point inputs carry `"seg_embedding"` gets that embedding appended to its
    sparse prompt (after the dummy point and the pad point), exactly where Sa2VA puts it.

    Prompted frames enter the memory encoder as sigmoid probabilities, not binarized: transformers binarizes masks
    that come from clicks (SAM2's video predictor setting), but Sa2VA's SAM2 does not for its language prompts.
    Verified on the oracle: binarized, the memory-tracked frame is off by 0.05; with sigmoid, by 1.2e-4.
    """

    def __init__(self, sam2: Sam2VideoModel):
        self.sam2 = sam2
        self.pending: torch.Tensor | None = None

    def __enter__(self) -> "EmbeddingPrompts":
        original = self.sam2._run_single_frame_inference

        def run(*args, **kwargs):
            point_inputs = kwargs.get("point_inputs")
            self.pending = None if point_inputs is None else point_inputs.get("seg_embedding")
            try:
                return original(*args, **kwargs)
            finally:
                self.pending = None

        encode = self.sam2._encode_new_memory

        def encode_memory(current_vision_feats, pred_masks_high_res, object_score_logits, is_mask_from_pts):
            return encode(current_vision_feats, pred_masks_high_res, object_score_logits, False)

        # instance attributes: they shadow the methods while active
        self.sam2._run_single_frame_inference = run
        self.sam2._encode_new_memory = encode_memory
        self._handle = self.sam2.prompt_encoder.register_forward_hook(self._append)
        return self

    def _append(self, module, args, output):
        if self.pending is None:
            return output
        sparse, dense = output
        embedding = self.pending.to(device=sparse.device, dtype=sparse.dtype)
        self.pending = None
        embedding = embedding.reshape(sparse.shape[0], sparse.shape[1], 1, sparse.shape[-1])
        return torch.cat([sparse, embedding], dim=2), dense

    def __exit__(self, *exc) -> None:
        self._handle.remove()
        del self.sam2._run_single_frame_inference
        del self.sam2._encode_new_memory


@dataclass
class PropagationStats:
    """What the session held at its fullest (the bounded-memory contract: independent of the clip length)."""

    frames_processed: int = 0
    max_pixel_frames: int = 0  # SAM2 input frames alive in the session
    max_cached_features: int = 0  # frames whose SAM2 image features are cached
    max_tracked_outputs: int = 0  # non-conditioning outputs kept for one object
    max_memory_features: int = 0  # of those, outputs that still hold a spatial memory
    conditioning_frames: int = 0


class TrackingSession:
    """SAM2 video propagation of N objects: prompt the conditioning frames, then track frame by frame.

    Use as a context manager (the embedding prompts are active inside). `first_key` is the first conditioning
    frame: the tracked frames just after it are kept to seed the backward pass, as SAM2 does.
    """

    def __init__(self, sam2: Sam2VideoModel, size: tuple[int, int], n_objects: int, first_key: int):
        param = next(sam2.parameters())
        self.sam2 = sam2
        self.device, self.dtype = param.device, param.dtype
        self.n_objects = n_objects
        self.first_key = first_key
        self.stats = PropagationStats()
        self._session = Sam2VideoInferenceSession(video_height=size[0], video_width=size[1],
                                                  inference_device=self.device,
                                                  inference_state_device=self.device,
                                                  video_storage_device=self.device, dtype=self.dtype)
        for i in range(n_objects):
            self._session.obj_id_to_idx(i)
        config = sam2.config
        self._window = max(config.num_maskmem - 1, config.max_object_pointers_in_encoder - 1)
        self._prompts = EmbeddingPrompts(sam2)

    def __enter__(self) -> "TrackingSession":
        self._prompts.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._prompts.__exit__(*exc)

    def prompt(self, t: int, features: dict, prompts: torch.Tensor) -> Sam2VideoSegmentationOutput:
        """Frame t as a conditioning frame: every object prompted by its embedding (`prompts` [N, C]) on the
        frame's cached SAM2 features. Conditioning frames are independent of each other; prompt them all first."""
        return self._condition(t, features, lambda i: self._session.add_point_inputs(i, t, {
            "point_coords": torch.zeros(1, 1, 1, 2, device=self.device, dtype=self.dtype),
            "point_labels": -torch.ones(1, 1, 1, device=self.device, dtype=torch.int32),
            "seg_embedding": prompts[i],
        }))

    def prompt_masks(self, t: int, features: dict, masks: torch.Tensor) -> Sam2VideoSegmentationOutput:
        """Frame t as a conditioning frame: every object given as its mask (`masks` [N, H, W] bool, any size),
        which SAM2 takes as its output on that frame (its memory and object pointer come from it)."""
        return self._condition(t, features, lambda i: self._session.add_mask_inputs(i, t, masks[i][None, None]))

    def _condition(self, t: int, features: dict, add_input: Callable[[int], None]) -> Sam2VideoSegmentationOutput:
        session = self._session
        session.cache.cache_vision_features(t, features)
        for i in range(self.n_objects):
            add_input(i)
        session.obj_with_new_inputs = list(range(self.n_objects))
        out = self.sam2(session, frame_idx=t)
        self._prune(t, reverse=False)
        self.stats.conditioning_frames += 1
        return out

    def end_prompts(self) -> None:
        """The prompts are consumed; the conditioning outputs stay."""
        for i in range(self.n_objects):
            self._session.point_inputs_per_obj[i].clear()
            self._session.mask_inputs_per_obj[i].clear()

    def track(self, t: int, pixels: torch.Tensor, features: dict, reverse: bool = False
              ) -> Sam2VideoSegmentationOutput:
        """Frame t (SAM2 input `pixels`, and their `features`) tracked by memory attention, going forward or
        backward. The frame goes in as a streamed one (SAM2 then reads the object pointers of all the recent frames,
        the clip's length unknown), its features from `features` instead of its own encoding."""
        self._session.cache.cache_vision_features(t, features)
        out = self.sam2(self._session, frame_idx=t, frame=pixels, reverse=reverse)
        self._prune(t, reverse)
        return out

    def _prune(self, t: int, reverse: bool) -> None:
        session, stats, config = self._session, self.stats, self.sam2.config
        stats.frames_processed += 1
        stats.max_pixel_frames = max(stats.max_pixel_frames, len(session.processed_frames or {}))
        stats.max_cached_features = max(stats.max_cached_features, len(session.cache._vision_features))
        session.processed_frames = {}
        session.cache.clear_all()
        sign = -1 if reverse else 1
        window, first = self._window, self.first_key
        for i in range(self.n_objects):
            outputs = session.output_dict_per_obj[i]
            for out in outputs["cond_frame_outputs"].values():
                out.pop("high_res_masks", None)
            tracked = outputs["non_cond_frame_outputs"]
            for f in list(tracked):
                age = (t - f) * sign  # frames behind the current one, in the direction of travel
                # the first tracked frames after the first key frame seed the backward pass (as in SAM2)
                seed = first > 0 and 0 < f - first <= window
                if age >= window and not seed or age < 0 and not seed:
                    del tracked[f]
                    session.frames_tracked_per_obj[i].pop(f, None)
                    continue
                out = tracked[f]
                out.pop("high_res_masks", None)
                out.pop("pred_masks", None)
                seed_memory = seed and f - first < config.num_maskmem
                if age >= config.num_maskmem - 1 and not seed_memory:
                    out.pop("maskmem_features", None)
                    out.pop("maskmem_pos_enc", None)
            stats.max_tracked_outputs = max(stats.max_tracked_outputs, len(tracked))
            stats.max_memory_features = max(stats.max_memory_features,
                                            sum("maskmem_features" in o for o in tracked.values()))
