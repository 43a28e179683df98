"""Video reasoning segmentation: [SEG] prompts (or the masks of regions drawn on one frame, `track`) propagated
through a `VideoClip` by SAM2, streaming.

Two propagation modes, both on the transformers `Sam2VideoModel` (its session state is handled in `session.py`):

- "sa2va": Sa2VA's official semantics. The [SEG] embedding prompts EVERY frame the LLM saw (each one an
  independent conditioning frame: no memory, `no_memory_embedding` added, multimask -> argmax IoU, binarized mask
  into the memory encoder); every other frame is tracked by memory attention over the conditioning memories, the
  recent tracked memories and the object pointers. Output-identical to the official code for its checkpoints
  (the oracle test checks the memory-tracked frame).
- "memory": the embedding prompts `key_frames` of the LLM frames only (by default one: the LLM frame where the
  answer's objects are most surely present, judged by SAM2's object score), and SAM2 memory carries the objects
  forward and backward through the whole clip.

Both modes STREAM: frames are decoded one at a time (backward propagation decodes the clip head in bounded
chunks), each frame's SAM2 image features are dropped once it is processed, and the session keeps a bounded
window (see `session.py`). Masks are kept as per-frame COCO RLE (`VideoMask`), never as a dense T x H x W array
unless asked for. Imports `model.video.clip`, `model.video.session`, `model.media`, `model.modeling` (the one
[SEG] → mask path) and `model.processing` (SAM2 pixels).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from model.media.masks import VideoMask
from model.memory import release_freed_memory
from model.modeling import ImageFeatures, SegChatModel
from model.processing import SegChatProcessor
from model.video.clip import VideoClip, llm_frame_indices
from model.video.session import PropagationStats, TrackingSession


@dataclass
class VideoSegmentation:
    masks: list[VideoMask]
    scores: list[float]  # predicted IoU on the prompted frames (mean)
    key_frames: list[int]
    stats: PropagationStats


class VideoSegmenter:
    """Runs [SEG] prompts, or masks drawn on one frame, through a SAM2 video session over a `VideoClip`,
    streaming."""

    def __init__(self, model: SegChatModel, processor: SegChatProcessor):
        self.model = model
        self.sam2 = model.sam2
        self.processor = processor
        self._positions: dict[tuple, torch.Tensor] = {}  # the coarsest level's position encoding, by shape

    @property
    def _param(self) -> torch.Tensor:
        return next(self.sam2.parameters())

    def pixels(self, frame: np.ndarray) -> torch.Tensor:
        pixels = self.processor.sam_pixels(Image.fromarray(frame), "video")
        return pixels.to(device=self._param.device, dtype=self._param.dtype)

    def frame_features(self, frame: np.ndarray) -> dict:
        """SAM2 image features of one frame in the session's cache format (reusable across turns)."""
        return self.pixel_features(self.pixels(frame))

    @torch.inference_mode()
    def pixel_features(self, pixels: torch.Tensor) -> dict:
        """SAM2 image features of a frame's SAM2 input. The video model reads the position encoding of the
        coarsest level only (the finer two are 84 MB a frame at 1024 px); it is the same for every frame of a
        size, so the frames share one tensor."""
        out = self.sam2.get_image_features(pixels, return_dict=True)
        position = out.fpn_position_encoding[-1]
        key = (tuple(position.shape), position.dtype, position.device)
        features = {"vision_feats": list(out.fpn_hidden_states),
                    "vision_pos_embeds": [self._positions.setdefault(key, position)]}
        del out
        release_freed_memory(pixels.device)  # the encoder's activations, before the next frame's
        return features

    def image_features(self, feats: dict, size: tuple[int, int]) -> ImageFeatures:
        maps = list(feats["vision_feats"])
        maps[-1] = maps[-1] + self.sam2.no_memory_embedding
        embeddings = [m.permute(1, 2, 0).reshape(1, -1, *s) for m, s in zip(maps, self.sam2.backbone_feature_sizes)]
        return ImageFeatures(embeddings, size)

    @torch.inference_mode()
    def score_frames(self, features: dict[int, dict], size: tuple[int, int], prompts: torch.Tensor):
        """Image decoding of every object on every LLM frame: (object scores [F, N], IoUs [F, N]) by frame order."""
        scores, ious = [], []
        for t in sorted(features):
            decoded = self.model.decode_masks(self.image_features(features[t], size), prompts)
            scores.append(decoded.object_scores)
            ious.append(decoded.iou_scores)
        return torch.stack(scores), torch.stack(ious)

    def choose_key_frames(self, features: dict[int, dict], size, prompts, mode: str, key_frames: int):
        ts = sorted(features)
        object_scores, ious = self.score_frames(features, size, prompts)
        if mode == "sa2va":
            return ts, ious.mean(0)
        # the frames where the least sure object is most surely present
        order = torch.argsort(object_scores.min(dim=1).values, descending=True, stable=True)[:key_frames]
        chosen = sorted(ts[i] for i in order.tolist())
        picked = torch.tensor([ts.index(t) for t in chosen])
        return chosen, ious[picked].mean(0)

    @torch.inference_mode()
    def segment(self, clip: VideoClip, prompts: torch.Tensor, features: dict[int, dict], mode: str,
                key_frames: int = 1, on_frame: Callable[[int, object], None] | None = None) -> VideoSegmentation:
        """Masks of N objects (`prompts` [N, C], projected [SEG] states) over the whole clip.

        `features` maps LLM-frame clip indices to their SAM2 features (computed and added here when missing, so
        the caller can keep them for the next turn). `on_frame(t, output)` sees each frame's raw SAM2 output
        (low-res logits in `output.pred_masks`), e.g. for parity checks.
        """
        prompts = prompts.to(device=self._param.device, dtype=self._param.dtype)
        n = prompts.shape[0]
        llm = sorted(features) or llm_frame_indices(clip.length, clip.options)
        missing = [t for t in llm if t not in features]
        for t, frame in zip(missing, clip.read(missing) if missing else []):
            features[t] = self.frame_features(frame)
        keys, scores = self.choose_key_frames(features, clip.size, prompts, mode, key_frames)
        masks, stats = self._propagate(clip, n, keys, lambda session, t: session.prompt(t, features[t], prompts),
                                       features, on_frame=on_frame)
        return VideoSegmentation(masks, [float(s) for s in scores], keys, stats)

    @torch.inference_mode()
    def track(self, clip: VideoClip, t: int, masks: list[np.ndarray], features: dict,
              known: dict[int, dict] | None = None) -> tuple[list[VideoMask], PropagationStats]:
        """Objects given as their masks on frame t (bool H x W at `clip.size`; `features`: the frame's SAM2
        features) tracked through the whole clip by SAM2 memory, forward and backward; `known` are other frames'
        features already encoded (the LLM frames'). Frame t keeps the masks as given."""
        drawn = torch.from_numpy(np.stack(masks))
        return self._propagate(clip, len(masks), [t], lambda session, k: session.prompt_masks(k, features, drawn),
                               known or {}, given={t: masks})

    def _propagate(self, clip: VideoClip, n: int, keys: list[int],
                   prompt: Callable[[TrackingSession, int], object], known: dict[int, dict],
                   on_frame: Callable[[int, object], None] | None = None,
                   given: dict[int, list[np.ndarray]] | None = None) -> tuple[list[VideoMask], PropagationStats]:
        """N objects through one streaming session: `prompt(session, t)` conditions each key frame, then SAM2
        memory tracks the rest of the clip, reusing the `known` features of frames already encoded; `given[t]` are
        masks recorded as they are on frame t."""
        masks = [VideoMask(clip.size, clip.length, clip.options.stride) for _ in range(n)]
        given = given or {}

        def record(t: int, out) -> None:
            logits = self.model.upsample(out.pred_masks[:, 0].float(), clip.size)
            presence = out.object_score_logits.reshape(-1).float().cpu().numpy()
            for i, m in enumerate(given.get(t, (logits > 0).cpu().numpy())):
                masks[i].set(t, m, float(presence[i]))
            if on_frame is not None:
                on_frame(t, out)
            release_freed_memory(logits.device)  # the frame's activations: memory stays flat along the clip

        def track_frame(t: int, frame: np.ndarray, reverse: bool = False):
            pixels = self.pixels(frame)
            features = known[t] if t in known else self.pixel_features(pixels)
            return session.track(t, pixels, features, reverse)

        with TrackingSession(self.sam2, clip.size, n, keys[0]) as session:
            for t in keys:  # conditioning frames first, independent of each other (Sa2VA / SAM2 order)
                record(t, prompt(session, t))
            session.end_prompts()
            key_set = set(keys)
            for t, frame in clip.iterate(start=keys[0] + 1):
                if t not in key_set:
                    record(t, track_frame(t, frame))
            for t, frame in clip.iterate_backward(keys[0], clip.options.backward_chunk):
                record(t, track_frame(t, frame, reverse=True))
        segmented = min((mask.segmented_frames() for mask in masks), default=clip.length)
        for mask in masks:  # the file held fewer frames than its packets promised
            mask.truncate(segmented)
        return masks, session.stats
