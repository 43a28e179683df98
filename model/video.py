"""Video reasoning segmentation: clip sources, LLM frame sampling, SAM2 propagation with [SEG] prompts.

Two propagation modes, both on the transformers `Sam2VideoModel` and its inference session:

- "sa2va": Sa2VA's official semantics. The [SEG] embedding prompts EVERY frame the LLM saw (each one an
  independent conditioning frame: no memory, `no_memory_embedding` added, multimask -> argmax IoU, binarized mask
  into the memory encoder); every other frame is tracked by memory attention over the conditioning memories, the
  recent tracked memories and the object pointers. Output-identical to the official code for its checkpoints
  (the oracle test checks the memory-tracked frame).
- "memory": the embedding prompts `key_frames` of the LLM frames only (by default one: the LLM frame where the
  answer's objects are most surely present, judged by SAM2's object score), and SAM2 memory carries the objects
  forward and backward through the whole clip.

Both modes STREAM: frames are decoded one at a time (backward propagation decodes the clip head in bounded
chunks), each frame's SAM2 image features are dropped once it is processed, and the session keeps only what SAM2
reads: the conditioning frames, the last `num_maskmem - 1` memories and the last `max_object_pointers - 1` object
pointers. Memory therefore does not grow with the clip length. Masks are kept as per-frame COCO RLE
(`VideoMask`), never as a dense T x H x W array unless asked for.

The embedding reaches SAM2's mask decoder without editing transformers: it rides in the session's point inputs
(`"seg_embedding"`), and `EmbeddingPrompts` (a wrapper of `_run_single_frame_inference` plus a forward hook on the
prompt encoder) appends it to the sparse prompt after Sa2VA's dummy point (label -1) and the encoder's pad point.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from transformers import Sam2VideoInferenceSession, Sam2VideoModel

from model.errors import InputError, MediaError
from model.media import ImageSource, MediaLimits
from model.modeling import ImageFeatures, SegChatModel
from model.processing import SegChatProcessor
from model.video_io import VideoLimits, frame_times, frames_from_list, iter_frames, probe_video, read_frames, \
    sample_indices

PROPAGATION_MODES = ("sa2va", "memory")
FRAME_SAMPLINGS = ("first", "uniform")
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi", ".gif")


@dataclass(frozen=True)
class VideoOptions:
    """How a video turn runs. `stride` keeps every stride-th frame (masks are given for those frames only);
    `max_side` downscales frames while decoding (masks are still returned at the original resolution);
    `max_frames` truncates longer clips with a notice in the reply (None: the limits in `VideoLimits` apply)."""

    propagation: str = "sa2va"
    llm_frames: int = 5
    frame_sampling: str = "first"
    key_frames: int = 1  # memory mode: how many LLM frames prompt SAM2
    stride: int = 1
    max_side: int | None = None
    max_frames: int | None = None
    backward_chunk: int = 32  # frames decoded at once when propagating backward

    def __post_init__(self):
        if self.propagation not in PROPAGATION_MODES:
            raise InputError(f"propagation must be one of {PROPAGATION_MODES}, got {self.propagation!r}.")
        if self.frame_sampling not in FRAME_SAMPLINGS:
            raise InputError(f"frame_sampling must be one of {FRAME_SAMPLINGS}, got {self.frame_sampling!r}.")
        for name in ("llm_frames", "key_frames", "stride", "backward_chunk"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise InputError(f"{name} must be a positive integer, got {getattr(self, name)!r}.")
        if self.max_frames is not None and self.max_frames < 1:
            raise InputError(f"max_frames must be a positive integer or None, got {self.max_frames!r}.")


# ----------------------------------------------------------------------------------------------- clip source


class VideoClip:
    """A video (file or list of frames) seen as T frames, t = 0..T-1 (after stride and truncation).

    Holds no decoded frames for files: `read` and `iterate` decode on demand. `size` is the original display
    (height, width); decoded frames may be smaller when `max_side` is set.
    """

    def __init__(self, source: str | Path | Sequence[ImageSource], options: VideoOptions,
                 limits: VideoLimits = VideoLimits(), image_limits: MediaLimits = MediaLimits()):
        self.options = options
        self.limits = limits
        self.notices: list[str] = []
        if isinstance(source, (str, Path)):
            self.path: Path | None = Path(source)
            self._frames: list[np.ndarray] | None = None
            info = probe_video(self.path, limits)
            count = len(frame_times(self.path, limits))  # packets: exact where the header only estimates
            total = count if count > 0 else info.n_frames
            self.size = (info.height, info.width)
            self.fps = info.fps / options.stride if info.fps else 0.0
        elif isinstance(source, (list, tuple)):
            self.path = None
            self._frames = frames_from_list(source, image_limits, limits)
            total = len(self._frames)
            self.size = self._frames[0].shape[:2]
            self.fps = 0.0
        else:
            raise MediaError(f"Unsupported video input of type {type(source).__name__}; "
                             "send a video file or a list of frames.")
        length = -(-total // options.stride)
        if options.max_frames is not None and length > options.max_frames:
            self.notices.append(f"The video has {length} frames; only the first {options.max_frames} "
                                "were segmented.")
            length = options.max_frames
        self.length = length

    def _original(self, t: int) -> int:
        return t * self.options.stride

    def read(self, ts: Sequence[int]) -> list[np.ndarray]:
        """Frames at clip indices `ts` (in that order), H x W x 3 uint8."""
        if self._frames is not None:
            return [self._frames[self._original(t)] for t in ts]
        return read_frames(self.path, [self._original(t) for t in ts], self.options.max_side, self.limits)

    def iterate(self, start: int = 0) -> Iterator[tuple[int, np.ndarray]]:
        """(t, frame) for t = start..T-1, one decoded frame alive at a time."""
        if self._frames is not None:
            for t in range(start, self.length):
                yield t, self._frames[self._original(t)]
            return
        frames = iter_frames(self.path, self.options.stride, self.options.max_side, self.limits)
        try:
            for index, frame in frames:
                t = index // self.options.stride
                if t >= self.length:
                    break
                if t >= start:
                    yield t, frame
        finally:
            frames.close()

    def iterate_backward(self, stop: int, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
        """(t, frame) for t = stop-1 down to 0, decoding at most `chunk` frames at a time."""
        end = stop
        while end > 0:
            begin = max(0, end - chunk)
            ts = list(range(begin, end))
            frames = self.read(ts)
            for t, frame in zip(reversed(ts), reversed(frames)):
                yield t, frame
            del frames
            end = begin


def llm_frame_indices(length: int, options: VideoOptions) -> list[int]:
    """The clip indices the LLM sees: Sa2VA's first frames, or the centres of equal segments."""
    return sample_indices(length, options.llm_frames, options.frame_sampling)


# ----------------------------------------------------------------------------------------------- masks


class VideoMask:
    """One object's masks over a clip, stored as per-frame COCO RLE (a few KB per frame, whatever the length).

    Behaves like a read-only T x H x W bool array for the common uses: `len(m)`, `m.shape`, `m.ndim`, `m[t]`
    (an H x W bool array, decoded on access), `m[a:b]` / iteration, and `np.asarray(m)` (materializes everything:
    avoid on long clips). `presence[t]` is SAM2's object-score logit on frame t (> 0: the object is there; an
    absent object has an empty mask). `frame_indices[t]` is frame t's index in the original video (strided).
    """

    ndim = 3
    dtype = np.dtype(bool)

    def __init__(self, size: tuple[int, int], length: int, stride: int = 1):
        self.size = (int(size[0]), int(size[1]))
        self._rles: list[dict | None] = [None] * length
        self.presence = np.full(length, np.nan, dtype=np.float32)
        self.frame_indices = np.arange(length) * stride

    def set(self, t: int, mask: np.ndarray, presence: float) -> None:
        self._rles[t] = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        self.presence[t] = presence

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self._rles), *self.size)

    def __len__(self) -> int:
        return len(self._rles)

    def rle(self, t: int) -> dict:
        """Frame t as JSON-ready COCO RLE: {"size": [H, W], "counts": str}."""
        rle = self._rles[t]
        return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}

    def _frame(self, t: int) -> np.ndarray:
        rle = self._rles[t]
        if rle is None:
            raise IndexError(f"frame {t} was not segmented")
        return mask_utils.decode(rle).astype(bool)

    def __getitem__(self, key):
        if isinstance(key, slice):
            return np.stack([self._frame(t) for t in range(len(self))[key]]) if len(range(len(self))[key]) \
                else np.zeros((0, *self.size), bool)
        t = int(key)
        if t < 0:
            t += len(self)
        if not 0 <= t < len(self):
            raise IndexError(f"frame {key} is out of range for {len(self)} frames")
        return self._frame(t)

    def __iter__(self) -> Iterator[np.ndarray]:
        return (self._frame(t) for t in range(len(self)))

    def __array__(self, dtype=None, copy=None):
        out = self[:] if len(self) else np.zeros(self.shape, bool)
        return out.astype(dtype) if dtype is not None else out

    def areas(self) -> np.ndarray:
        return np.array([mask_utils.area(r) for r in self._rles], dtype=np.int64)


# ----------------------------------------------------------------------------------------------- SAM2 glue


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


@dataclass
class VideoSegmentation:
    masks: list[VideoMask]
    scores: list[float]  # predicted IoU on the prompted frames (mean)
    key_frames: list[int]
    stats: PropagationStats


class VideoSegmenter:
    """Runs [SEG] prompts through a SAM2 video session over a `VideoClip`, streaming."""

    def __init__(self, model: SegChatModel, processor: SegChatProcessor):
        self.model = model
        self.sam2 = model.sam2
        self.processor = processor

    @property
    def _param(self) -> torch.Tensor:
        return next(self.sam2.parameters())

    def pixels(self, frame: np.ndarray) -> torch.Tensor:
        pixels = self.processor.sam_pixels(Image.fromarray(frame), "video")
        return pixels.to(device=self._param.device, dtype=self._param.dtype)

    @torch.inference_mode()
    def frame_features(self, frame: np.ndarray) -> dict:
        """SAM2 image features of one frame in the session's cache format (reusable across turns)."""
        out = self.sam2.get_image_features(self.pixels(frame), return_dict=True)
        return {"vision_feats": list(out.fpn_hidden_states), "vision_pos_embeds": list(out.fpn_position_encoding)}

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
        sam2 = self.sam2
        device, dtype = self._param.device, self._param.dtype
        prompts = prompts.to(device=device, dtype=dtype)
        n = prompts.shape[0]
        llm = sorted(features) or llm_frame_indices(clip.length, clip.options)
        missing = [t for t in llm if t not in features]
        for t, frame in zip(missing, clip.read(missing) if missing else []):
            features[t] = self.frame_features(frame)
        keys, scores = self.choose_key_frames(features, clip.size, prompts, mode, key_frames)
        stats = PropagationStats(conditioning_frames=len(keys))
        masks = [VideoMask(clip.size, clip.length, clip.options.stride) for _ in range(n)]
        session = Sam2VideoInferenceSession(video_height=clip.size[0], video_width=clip.size[1],
                                            inference_device=device, inference_state_device=device,
                                            video_storage_device=device, dtype=dtype)
        for i in range(n):
            session.obj_id_to_idx(i)
        window = max(sam2.config.num_maskmem - 1, sam2.config.max_object_pointers_in_encoder - 1)
        first = keys[0]

        def record(t: int, out) -> None:
            logits = self.model.upsample(out.pred_masks[:, 0].float(), clip.size)
            presence = out.object_score_logits.reshape(-1).float().cpu().numpy()
            for i, m in enumerate((logits > 0).cpu().numpy()):
                masks[i].set(t, m, float(presence[i]))
            stats.frames_processed += 1
            if on_frame is not None:
                on_frame(t, out)

        def prune(t: int, reverse: bool) -> None:
            stats.max_pixel_frames = max(stats.max_pixel_frames, len(session.processed_frames or {}))
            stats.max_cached_features = max(stats.max_cached_features, len(session.cache._vision_features))
            session.processed_frames = {}
            session.cache.clear_all()
            sign = -1 if reverse else 1
            for i in range(n):
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
                    seed_memory = seed and f - first < sam2.config.num_maskmem
                    if age >= sam2.config.num_maskmem - 1 and not seed_memory:
                        out.pop("maskmem_features", None)
                        out.pop("maskmem_pos_enc", None)
                stats.max_tracked_outputs = max(stats.max_tracked_outputs, len(tracked))
                stats.max_memory_features = max(stats.max_memory_features,
                                                sum("maskmem_features" in o for o in tracked.values()))

        with EmbeddingPrompts(sam2):
            for t in keys:  # conditioning frames first, independent of each other (Sa2VA / SAM2 order)
                if t not in features:
                    features[t] = self.frame_features(clip.read([t])[0])
                session.cache.cache_vision_features(t, features[t])
                for i in range(n):
                    session.add_point_inputs(i, t, {
                        "point_coords": torch.zeros(1, 1, 1, 2, device=device, dtype=dtype),
                        "point_labels": -torch.ones(1, 1, 1, device=device, dtype=torch.int32),
                        "seg_embedding": prompts[i],
                    })
                session.obj_with_new_inputs = list(range(n))
                record(t, sam2(session, frame_idx=t))
                prune(t, reverse=False)
            for i in range(n):  # the prompts are consumed; the conditioning outputs stay
                session.point_inputs_per_obj[i].clear()
            key_set = set(keys)
            for t, frame in clip.iterate(start=first + 1):
                if t in key_set:
                    continue
                record(t, sam2(session, frame_idx=t, frame=self.pixels(frame)))
                prune(t, reverse=False)
            for t, frame in clip.iterate_backward(first, clip.options.backward_chunk):
                record(t, sam2(session, frame_idx=t, frame=self.pixels(frame), reverse=True))
                prune(t, reverse=True)
        missing = [t for t in range(clip.length) if masks[0]._rles[t] is None] if n else []
        if missing:  # the file held fewer frames than its packets promised
            for mask in masks:
                mask._rles = mask._rles[: missing[0]]
                mask.presence = mask.presence[: missing[0]]
                mask.frame_indices = mask.frame_indices[: missing[0]]
        return VideoSegmentation(masks, [float(s) for s in scores], keys, stats)


# ----------------------------------------------------------------------------------------------- media state


@dataclass
class VideoMedia:
    """A conversation's video: the clip (not its frames), the LLM frames, and caches reused by follow-ups."""

    clip: VideoClip
    llm_indices: list[int]
    images: list[Image.Image]
    vision: object  # families.VisionInputs of the LLM frames
    sam_features: dict[int, dict] = field(default_factory=dict)  # clip index -> SAM2 features (LLM frames)

    @property
    def options(self) -> VideoOptions:
        return self.clip.options


def is_video_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_EXTENSIONS


def load_video(source, options: VideoOptions, limits: VideoLimits, image_limits: MediaLimits, encode) -> VideoMedia:
    """Probe (limits first), sample and decode the LLM frames, and encode them for the VLM with `encode`."""
    clip = VideoClip(source, options, limits, image_limits)
    indices = llm_frame_indices(clip.length, options)
    if not indices:
        raise MediaError("The video contains no video frames.")
    frames = clip.read(indices)
    images = [Image.fromarray(f) for f in frames]
    return VideoMedia(clip, indices, images, encode(images))
