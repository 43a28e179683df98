"""The public API: `SegChat.from_pretrained(...)`, `new_conversation()`, `conv.ask(...)` / `conv.ask_stream(...)`,
and SAM 3 concept search without the language model: `conv.find(...)`, `conv.instances(i)`.

`SegChat` composes the processor (inputs and answers), the model (generation, the `[SEG]` path) and the
segmentation back-ends; `Conversation` is the small stateful object over them: one chat about one image or video.
"""

import threading
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from dataclasses import dataclass, field
from pathlib import Path
from queue import Queue

import numpy as np
import torch
from PIL import Image
from transformers.generation.stopping_criteria import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from model.agent.loop import AgentOptions, AgentStep, AgentTurn, describe_step
from model.agent.plain import PlainVLM
from model.context_cache import CacheBudget, ContextCache, Prefill, mrope_positions, picture_parts
from model.errors import CheckpointError, InputError
from model.families import VisionInputs
from model.loading import load_model_and_processor, pick_dtype
from model.media.image import ImageSource, load_image
from model.media.masks import VideoMask, mask_box
from model.media.render import fit_mask
from model.memory import release_freed_memory
from model.modeling import ImageFeatures, SegChatModel
from model.processing import Limits, SegChatProcessor
from model.prompting import agent_texts, region_note
from model.regions import Region, check_references, check_regions, drawn_mask, marked_picture
from model.sa2va.official import predict_forward
from model.segmenters import Box, Segment, SegEmbeddingSegmenter, SegStates
from model.segmenters.base import found_summary
from model.segmenters.concepts import ConceptFeatures, ConceptPrompt, ConceptPrompts, ConceptSegmenter
from model.video.clip import VideoClip, VideoMedia, VideoOptions, load_video
from model.video.segmenter import VideoSegmenter
from model.video.concepts import ConceptTracker, ConceptTrackingStats
from model.video.session import PropagationStats


@dataclass
class Reply:
    text: str  # the answer as shown to a person
    token_ids: list[int]
    segments: list[Segment] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # what a video turn's session held at its fullest (the memory bound): SAM2 propagation or SAM 3 concept tracking
    video_stats: PropagationStats | ConceptTrackingStats | None = None
    trace: list[AgentStep] = field(default_factory=list)  # agent mode: every tool call, candidate set and decision
    regions: list[Segment] = field(default_factory=list)  # the turn's regions as masks, labelled "region N"


class SegChat:
    """A loaded model with its processor; start conversations with `new_conversation()`."""

    def __init__(self, model: SegChatModel | PlainVLM, processor: SegChatProcessor,
                 concepts: str | Path | ConceptSegmenter | None = None, concept_dtype: torch.dtype | None = None,
                 mode: str | None = None, agent_options: AgentOptions | None = None, reuse_cache: bool = True):
        if mode not in (None, "seg", "agent"):
            raise ValueError(f'mode is "seg", "agent" or None, got {mode!r}')
        plain = isinstance(model, PlainVLM)
        self.mode = mode or ("agent" if plain else "seg")
        if self.mode == "seg" and plain:
            raise CheckpointError("This is a plain vision-language model (no [SEG] token, no SAM2): it segments in "
                                  'agent mode only (mode="agent", with concepts="facebook/sam3" or a SAM 3 folder).')
        if self.mode == "agent" and concepts is None:
            raise CheckpointError('Agent mode segments with SAM 3: pass concepts="facebook/sam3" (gated: accept its '
                                  "licence on the hub) or the path of a local SAM 3 folder.")
        self.agent_options = agent_options or AgentOptions()
        self.model = model.eval()
        self.processor = processor
        if self.mode == "agent":
            processor.system_prompt = agent_texts()["system"]
        self.segmenter = SegEmbeddingSegmenter(model, processor)
        # SAM 3 for concept search: a loaded segmenter, or where to load it from on first use (None: off).
        self.concepts = concepts
        self.concept_dtype = concept_dtype
        self.video_segmenter = VideoSegmenter(model, processor)
        # Extra `generate` arguments (sampling, logits processors...); greedy decoding by default.
        self.generate_options: dict = {}
        # Follow-ups continue the language model's cache of their conversation (`model.context_cache`); off: every
        # turn reads its whole history again.
        self.reuse_cache = reuse_cache
        self.cache_budget = CacheBudget()  # the conversations' caches under `Limits.max_cache_mib`
        self.lock = threading.Lock()  # one model, many conversations: model work runs one at a time

    @classmethod
    def from_pretrained(cls, path_or_id: str | Path, device: str | torch.device | None = None,
                        dtype: str | torch.dtype | None = None, quantization: str | None = None,
                        allow_pickle: bool = False, limits: Limits | None = None,
                        concepts: str | Path | None = None, mode: str | None = None,
                        reuse_cache: bool = True) -> "SegChat":
        """Load a checkpoint folder or hub id. `device=None` picks CUDA when present, else CPU; `dtype=None`
        picks bf16 on GPUs that support it, else fp32; `quantization` is None, "4bit" or "8bit" (language
        model only). An official Sa2VA checkpoint is converted once into the cache (`$SEGCHAT_CACHE`, default
        ~/.cache/segchat/converted) and loaded from there. Failures raise `CheckpointError`.

        `concepts` is the SAM 3 checkpoint for concept search (`conv.find`, `segment.instances()`):
        "facebook/sam3" (gated: accept its licence on the hub), a local folder, or None (off). It is loaded on
        first use, on the same device, in the same dtype (unquantized); if it cannot be, that use raises
        `CheckpointError` and everything else keeps working.

        `mode`: "seg" (answers with `[SEG]` masks), "agent" (the VLM calls SAM 3 as a tool, see `model.agent`;
        needs `concepts`), or None: "agent" for a plain VLM checkpoint (no `[SEG]`, no SAM2, e.g.
        Qwen/Qwen3-VL-4B-Instruct), else "seg".

        `reuse_cache=False`: every turn reads its conversation's whole history again instead of continuing the
        language model's cache of the earlier turns (see `generate`)."""
        model, processor = load_model_and_processor(path_or_id, device, dtype, quantization, allow_pickle, limits)
        concept_dtype = pick_dtype(dtype, model.get_input_embeddings().weight.device)
        return cls(model, processor, concepts, concept_dtype, mode, reuse_cache=reuse_cache)

    @property
    def limits(self) -> Limits:
        return self.processor.limits

    def new_conversation(self) -> "Conversation":
        return Conversation(self)

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def concept_segmenter(self) -> ConceptSegmenter:
        """SAM 3, loaded on first use; `CheckpointError` when concept search is off or SAM 3 cannot be loaded."""
        if self.concepts is None:
            raise CheckpointError("Concept search is off: load the model with concepts='facebook/sam3' (or the "
                                  "path of a local SAM 3 folder) to use it.")
        if not isinstance(self.concepts, ConceptSegmenter):
            dtype = self.concept_dtype or pick_dtype(None, self.device)
            self.concepts = ConceptSegmenter.from_pretrained(self.concepts, self.device, dtype)
        return self.concepts

    @torch.no_grad()
    def generate(self, prompt_ids: list[int], vision: VisionInputs | None, streamer: BaseStreamer | None = None,
                 stop: threading.Event | None = None, context: ContextCache | None = None
                 ) -> tuple[list[int], torch.Tensor | None]:
        """Greedy answer to `prompt_ids`; returns the new ids and the hidden states at its [SEG] tokens.
        Setting `stop` ends generation after the current token.

        With a conversation's `context` (and `reuse_cache` on), the prompt continues the language model's cache
        of the earlier turns: only the tokens it does not hold are prefilled, with only the media those show,
        and the cache is kept for the next turn (`model.context_cache`)."""
        model, processor = self.model, self.processor
        seg_id = processor.seg_token_id
        kept = context is not None and self.reuse_cache
        if not kept:
            context = ContextCache(processor.placeholder_ids)  # this call's alone
        prefill = self._read_pictures(prompt_ids, vision, context.prefill(prompt_ids, vision, model.vlm.config))
        inputs = self._inputs(prompt_ids, vision, prefill, context)
        with model.seg_capture(seg_id) as capture:
            options = {"do_sample": False, "suppress_tokens": processor.unspeakable_ids, **self.generate_options}
            out = model.vlm.generate(**inputs, **options, past_key_values=prefill.cache,
                                     max_new_tokens=self.limits.max_new_tokens,
                                     eos_token_id=processor.prompts.stop_ids,
                                     pad_token_id=processor.tokenizer.pad_token_id, streamer=streamer,
                                     stopping_criteria=StoppingCriteriaList(
                                         [_StopOnEvent(stop), *processor.prompts.stopping_criteria(len(prompt_ids))]))
        new_ids = out[0, len(prompt_ids):].tolist()
        ids = prompt_ids + new_ids
        states = capture.states
        if new_ids and new_ids[-1] == seg_id:
            # The last token's state is only computed by one more forward pass, continuing the cache.
            step = processor.model_inputs(torch.tensor([ids]), vision, self.device, model.vlm.dtype,
                                          sent=VisionInputs([]))
            positions = mrope_positions(model.vlm, step, vision)
            with model.seg_capture(seg_id, skip_first=False) as last:
                model.vlm(input_ids=step["input_ids"][:, -1:], past_key_values=prefill.cache,
                          position_ids=None if positions is None else positions[..., -1:])
            states = states + [last.states[-1]]
        context.keep(prefill.cache, ids, vision, self.limits.max_cached_tokens)
        if kept:
            self.cache_budget.kept(context, self.limits.max_cache_mib * 2**20)
        release_freed_memory(self.device)  # the prefill's activations, before SAM2 runs
        return new_ids, (torch.cat(states) if states else None)

    def _read_pictures(self, ids: list[int], vision: VisionInputs | None, prefill: Prefill) -> Prefill:
        """Feed the uncached prompt into `prefill`'s cache up to its last picture, in parts that each end after a
        picture (`Limits.prefill_part_tokens`), each part with its own pictures only; returns where `generate`
        continues. A video's frames then pass the vision tower and the language model a part at a time, which
        bounds the activations' memory; the cache ends up the same as from one pass."""
        media, model, processor = prefill.media, self.model, self.processor
        limit = self.limits.prefill_part_tokens
        if not limit or media is None or media.regions or len(media.runs) < 2:
            return prefill
        parts = picture_parts(ids, prefill.start, media.runs, processor.placeholder_ids, limit)
        if not parts:
            return prefill
        pictures = processor.split_pictures(media)
        dtype = model.vlm.dtype
        whole = processor.model_inputs(torch.tensor([ids]), vision, self.device, dtype, sent=VisionInputs([]))
        positions = mrope_positions(model.vlm, whole, vision)
        start, shown = prefill.start, 0
        for end, count in parts:
            sent = VisionInputs.concat(pictures[shown:shown + count])
            inputs = processor.model_inputs(torch.tensor([ids[start:end]]), sent, self.device, dtype)
            inputs["attention_mask"] = whole["attention_mask"][:, :end]
            if positions is not None:
                inputs["position_ids"] = positions[..., start:end]
            model.vlm(**inputs, past_key_values=prefill.cache, use_cache=True, logits_to_keep=1)
            release_freed_memory(self.device)  # the part's activations, before the next part's
            start, shown = end, shown + count
        return Prefill(prefill.cache, start, VisionInputs.concat(pictures[shown:]))

    def _inputs(self, ids: list[int], vision: VisionInputs | None, prefill: Prefill,
                context: ContextCache) -> dict[str, torch.Tensor]:
        """The VLM's inputs for the prompt `ids` continuing `prefill`: every id (`generate` feeds those the cache
        lacks) with the media they show, and, when the cache holds some, the prompt's positions on M-RoPE models.
        Checkpoints with `<vp>` regions get their image encoded here, and its thumbnail kept for later regions."""
        model, media = self.model, prefill.media
        inputs = self.processor.model_inputs(torch.tensor([ids]), vision, self.device, model.vlm.dtype, sent=media)
        reads_regions = self.mode == "seg" and self.processor.takes_region_tokens  # agent mode draws marks
        if reads_regions and media is not None and (prefill.start == 0 or media.regions):
            features = model.image_features(inputs["pixel_values"]) if prefill.start == 0 else context.region_source
            inputs = model.with_region_features(inputs, media.regions, features)
            context.region_source = features[-1:]
        if prefill.start:
            positions = mrope_positions(model.vlm, inputs, vision)
            if positions is not None:
                inputs["position_ids"] = positions
        return inputs

    def predict_forward(self, image: Image.Image | None = None, video: list[Image.Image] | None = None,
                        text: str = "", past_text: str = "", mask_prompts: list[np.ndarray] | None = None) -> dict:
        """Sa2VA's official `predict_forward`: {"prediction": str, "prediction_masks": [bool (frames, H, W)
        per [SEG]]}; `text` and `past_text` are trusted markup; `mask_prompts` are region masks for InternVL
        checkpoints (see `model.sa2va.official`)."""
        with self.lock:
            return predict_forward(self.model, self.processor, image=image, video=video, text=text,
                                   past_text=past_text, mask_prompts=mask_prompts, segmenter=self.segmenter).as_dict()


def _mark_absent(segments: list[Segment], where: str) -> list[str]:
    """Honest absence for `[SEG]` objects: SAM2's object score below 0 (video: on every frame) means the object
    is not there; it is marked `found=False`, an image mask is emptied, and a warning names it."""
    warnings = []
    for i, segment in enumerate(segments):
        if segment.presence < 0:
            segment.found = False
            if isinstance(segment.mask, np.ndarray):
                segment.mask = np.zeros_like(segment.mask)
            name = repr(segment.label) if segment.label else f"Object {i + 1}"
            warnings.append(f"{name} was not found in the {where} (SAM2's object score is below 0), so it has no "
                            "mask.")
    return warnings


def _region_mask(region: Region, refine: Callable[..., np.ndarray] | None, size: tuple[int, int]) -> np.ndarray:
    """The object a region points at on a picture (`size`: width, height): its mask as drawn, or the mask `refine`
    (a segmenter's, on the picture's features) makes of its clicks and box; the drawn shape where `refine` finds
    nothing there, or is None."""
    if region.mask is not None:
        return np.asarray(region.mask, dtype=bool)
    mask = None
    if refine is not None:
        mask = refine([(float(x), float(y)) for x, y in region.points], region.point_labels, region.box)
    return mask if mask is not None and mask.any() else drawn_mask(region, size)


def _video_options(options: dict) -> VideoOptions:
    try:
        return VideoOptions(**options)
    except TypeError:
        known = sorted(VideoOptions.__dataclass_fields__)
        raise InputError(f"Unknown video option in {sorted(options)}; known: {known}.") from None


class _StopOnEvent(StoppingCriteria):
    def __init__(self, event: threading.Event | None):
        self.event = event

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.Tensor:
        stop = self.event is not None and self.event.is_set()
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


class _IdStreamer(BaseStreamer):
    """Hands generated ids to the consuming thread (the first `put` is the prompt, skipped)."""

    def __init__(self):
        self.queue: Queue = Queue()
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.queue.put(value.view(-1).tolist())

    def end(self) -> None:
        self.queue.put(None)


@dataclass
class ImageMedia:
    """A conversation's image: the picture, its VLM inputs, and its back-end features once encoded."""

    image: Image.Image
    vision: VisionInputs
    features: ImageFeatures | None = None
    concept_features: ConceptFeatures | None = None  # SAM 3's, encoded on the first concept search


@dataclass
class _TurnMedia:
    """What a turn shows the VLM: the media block in its prompt (new media, or media with region marks; None:
    none), the regions note after it, the VLM inputs for the whole conversation, and the regions' masks."""

    shown: VisionInputs | None
    region_ids: list[int]
    vision: VisionInputs | None
    regions: list[Segment]


class Conversation:
    """A multi-turn chat about one image or video. Uploading new media starts a fresh context for the model."""

    def __init__(self, chat: SegChat):
        self.chat = chat
        self.history: list[int] = chat.processor.conversation_start()
        self.media: ImageMedia | VideoMedia | None = None
        # Masks of the regions drawn so far on the media ("region 1" first): H x W on an image, a `VideoMask` (the
        # region tracked through the clip) on a video.
        self.regions: list[np.ndarray | VideoMask] = []
        # What the VLM is given with the history: the media's inputs, plus what region turns added to them.
        self.vision: VisionInputs | None = None
        self.last_reply: Reply | None = None  # the last answer or search, for `instances(i)`
        self.unsent_media: ImageMedia | None = None  # an image given to `find` the language model has not seen
        # The language model's cache of the context, continued by the next turn; copies of this conversation (the
        # app's undo) share it, and each is matched against what it really holds.
        self.context = ContextCache(chat.processor.placeholder_ids)

    def drop_cache(self) -> None:
        """Free the language model's cache of this conversation; its next turn reads the whole history again."""
        self.context.clear()

    def ask(self, text: str, image: ImageSource | None = None, video=None, regions: Sequence[Region] | None = None,
            **video_options) -> Reply:
        """Answer one message; `image` is a path, PIL image or HxWx3 array, or None to keep the current media.

        `regions` are things the person points at on the image (`model.regions.Region`: clicks, a box or a mask),
        numbered on from the conversation's earlier regions ("region 1", "region 2"...; the text may refer to any
        of them). Each becomes a mask through SAM2 (returned in `reply.regions`) and reaches the model as Sa2VA's
        `<vp>` tokens on checkpoints trained with them (the InternVL flavour), else as numbered marks drawn on the
        image it sees (set-of-mark prompting). On a video, a region is drawn on one frame (`Region(frame=t)`,
        default 0) and tracked through the clip by SAM2 memory (`reply.regions` holds `VideoMask`s); it reaches
        every model as numbered marks on the LLM frames where it is (the official Sa2VA has no video `<vp>`).

        `video` is a video file (mp4, webm, mov, animated gif...; the content decides, not the extension), a list
        of frames, or a `model.video.clip.VideoClip` already built (and probed) with its options; `video_options` are
        `model.video.clip.VideoOptions` fields: `propagation="sa2va" | "memory"`, `llm_frames=5`,
        `frame_sampling="first" | "uniform"`, `key_frames`, `stride`, `max_side`, `max_frames`.
        On a follow-up about the same video, `propagation` and `key_frames` may change; the LLM frames stay.
        """
        for item in self.ask_stream(text, image=image, video=video, regions=regions, **video_options):
            if isinstance(item, Reply):
                return item
        raise RuntimeError("ask_stream ended without a reply")

    def ask_stream(self, text: str, image: ImageSource | None = None, video=None,
                   regions: Sequence[Region] | None = None, **video_options) -> Iterator["str | Reply"]:
        """Yield the answer text so far as it is generated, then the full `Reply` (masks included)."""
        processor = self.chat.processor
        text = processor.check_text(text)
        if image is not None and video is not None:
            raise InputError("Please send either an image or a video, not both.")
        # Everything is validated before the conversation changes.
        media, video_run = self._new_media(image, video, video_options)
        if media is None and self.unsent_media is not None:
            media = self.unsent_media
        new_media = media is not None
        if new_media:
            history = processor.conversation_start()
        else:
            media, history = self.media, self.history
            video_run = self._follow_up_options(video_options)
        earlier = [] if new_media else self.regions
        regions = self._check_regions(text, regions, media, len(earlier))
        if self.chat.mode == "agent" and media is not None:
            yield from self._agent_turn(text, media, history, regions, earlier)
            return

        with self.chat.lock:
            turn = self._turn_media(media, new_media, regions, len(earlier))
            prompt_ids = history + processor.user_turn(text, turn.shown, turn.region_ids)
            new_ids, seg_states = yield from self._generate_streaming(prompt_ids, turn.vision)
            reply = self._reply(new_ids, seg_states, media, video_run)
        reply.regions = turn.regions
        if self.chat.mode == "agent" and "<tool_call>" in reply.text:  # no media, so no tool to call
            reply.text = reply.text.split("<tool_call>")[0].strip() or "Please send an image to look at."
            reply.warnings.append("There is no image in this conversation, so nothing was segmented.")
        self.media, self.vision = media, turn.vision
        self.regions = earlier + [segment.mask for segment in turn.regions]
        self.history = prompt_ids + processor.closed_answer(new_ids)
        self.last_reply = reply
        self.unsent_media = None
        yield reply

    def _check_regions(self, text: str, regions: Sequence[Region] | None, media: "ImageMedia | VideoMedia | None",
                       earlier: int) -> list[Region]:
        """The turn's regions, checked against the media, and the regions the text mentions, checked to exist."""
        regions = list(regions or [])
        if regions and media is None:
            raise InputError("There is no image in this conversation: send one with the regions drawn on it.")
        video = isinstance(media, VideoMedia)
        if regions and video and self.chat.mode == "agent":
            raise InputError("In agent mode regions can be drawn on images only; on a video, ask with a [SEG] "
                             "model (it tracks the region through the clip).")
        if regions:
            size = (media.clip.size[1], media.clip.size[0]) if video else media.image.size
            regions = check_regions(regions, size, self.chat.limits.max_regions,
                                    frames=media.clip.length if video else None, first_number=earlier + 1)
        check_references(text, earlier + len(regions))
        return regions

    def _turn_media(self, media: "ImageMedia | VideoMedia | None", new_media: bool, regions: list[Region],
                    earlier: int) -> _TurnMedia:
        """How the turn's media and regions reach the VLM (see `ask`). The caller holds the model's lock."""
        processor = self.chat.processor
        vision = media.vision if new_media else self.vision
        if not regions:
            return _TurnMedia(vision if new_media else None, [], vision, [])
        numbers = list(range(earlier + 1, earlier + 1 + len(regions)))
        if isinstance(media, VideoMedia):
            masks = self._video_region_masks(media, regions)
        else:
            refine = partial(self.chat.segmenter.refine, self.image_features(media))
            masks = [_region_mask(region, refine, media.image.size) for region in regions]
        segments = [Segment(mask, 1.0, f"region {n}") for mask, n in zip(masks, numbers)]
        if processor.takes_region_tokens and isinstance(media, ImageMedia):
            ids, cells = processor.region_tokens(masks, numbers)
            return _TurnMedia(vision if new_media else None, ids, vision.with_regions(cells), segments)
        marked = self._marked(media, masks, numbers[0])
        # New media: the model sees the marked media only; a follow-up adds it after the media already seen.
        return _TurnMedia(marked, processor.region_marks(numbers), marked if new_media else vision.extended(marked),
                          segments)

    def _video_region_masks(self, media: VideoMedia, regions: list[Region]) -> list[VideoMask]:
        """Each region's mask on its frame, tracked through the clip by SAM2 memory (one session per frame that
        regions are drawn on: a session's objects are all prompted on the same frame)."""
        segmenter, clip = self.chat.video_segmenter, media.clip
        size = (clip.size[1], clip.size[0])
        tracked: dict[int, VideoMask] = {}
        for t in sorted({region.frame or 0 for region in regions}):
            drawn = [i for i, region in enumerate(regions) if (region.frame or 0) == t]
            features = media.sam_features[t] if t in media.sam_features else segmenter.frame_features(
                clip.read([t])[0])
            refine = partial(self.chat.segmenter.refine, segmenter.image_features(features, clip.size))
            masks = [_region_mask(regions[i], refine, size) for i in drawn]
            tracked.update(zip(drawn, segmenter.track(clip, t, masks, features, media.sam_features)[0]))
        return [tracked[i] for i in range(len(regions))]

    def _marked(self, media: "ImageMedia | VideoMedia", masks: list[np.ndarray] | list[VideoMask],
                first: int) -> VisionInputs:
        """The media with the regions' numbered marks, encoded for the VLM: the image, or a video's LLM frames
        (each region marked on the frames where its tracked mask is)."""
        if isinstance(media, ImageMedia):
            pictures, per_picture = [np.asarray(media.image)], [masks]
        else:
            pictures = [np.asarray(image) for image in media.images]
            per_picture = [[fit_mask(mask[t], picture.shape[:2]) for mask in masks]
                           for t, picture in zip(media.llm_indices, pictures)]
        marked = [Image.fromarray(marked_picture(picture, frame_masks, first))
                  for picture, frame_masks in zip(pictures, per_picture)]
        return self.chat.processor.encode_images(marked, as_video=isinstance(media, VideoMedia))

    def _agent_turn(self, text: str, media: "ImageMedia | VideoMedia", history: list[int], regions: list[Region],
                    earlier: list[np.ndarray]) -> Iterator["str | Reply"]:
        """An agent-mode turn (see `model.agent.loop`): yields a line per step, then the `Reply` with its trace.

        On a video, the plan round sees the video's LLM frames; candidates are marked on its first LLM frame, and
        the kept objects are then tracked through the clip by SAM 3 (`ConceptTracker.follow`). On an image with
        regions (this turn's and `earlier` ones), every round sees the image with the regions' marks ("R1") under
        the candidates' numbers, and the question comes after the note naming them."""
        chat, processor = self.chat, self.chat.processor
        video = isinstance(media, VideoMedia)
        tracker = ConceptTracker(chat.concept_segmenter) if video else None  # checks the checkpoint first
        picture = media.images[0] if video else media.image  # where candidates are found and marked
        with chat.lock:
            new_regions = self._agent_regions(media, regions, len(earlier)) if regions else []
        region_masks = earlier + [segment.mask for segment in new_regions]
        shown, shown_vision, question = picture, media.vision, text
        if region_masks:
            numbers = range(1, len(region_masks) + 1)
            shown = Image.fromarray(marked_picture(np.asarray(picture), region_masks))
            shown_vision = processor.encode_images([shown])
            question = region_note(list(numbers)).strip() + "\n" + text

        def generate(round_text: str, image: Image.Image) -> list[int]:
            vision = shown_vision if image is shown else processor.encode_images([image])
            return chat.generate(history + processor.user_turn(round_text, vision), vision)[0]

        def find(phrases: list[str]) -> list[Segment]:
            segmenter = chat.concept_segmenter
            if media.concept_features is None:
                media.concept_features = segmenter.encode(picture)
            return segmenter.segment(media.concept_features, ConceptPrompts([ConceptPrompt(p) for p in phrases]))

        turn = AgentTurn(question, shown, generate, lambda ids: processor.decode_answer(ids).text, find,
                         chat.agent_options)
        self.drop_cache()  # the rounds are prompts of their own; the conversation's cache would only hold memory
        lines: list[str] = []
        with chat.lock:
            for item in turn.run():
                if isinstance(item, AgentStep):
                    lines.append(describe_step(item))
                    yield "\n".join(lines)
                else:
                    outcome = item
            segments, stats = outcome.segments, None
            if video and segments:
                yield "\n".join([*lines, "Following the chosen objects through the video…"])
                segments, stats, lost = tracker.follow(media.clip, segments, media.llm_indices[0])
                outcome.warnings += [f"{label!r} could not be followed through the video." for label in lost]
        answer_ids = processor.prompts.data(outcome.answer)
        reply = Reply(outcome.answer, answer_ids, segments, outcome.warnings, video_stats=stats, trace=outcome.trace,
                      regions=new_regions)
        self._offer_instances(reply, media)
        self.regions = region_masks
        self.media, self.vision = media, media.vision
        self.history = history + processor.user_turn(text) + processor.closed_answer(answer_ids)
        self.last_reply = reply
        self.unsent_media = None
        yield reply

    def _agent_regions(self, media: ImageMedia, regions: list[Region], earlier: int) -> list[Segment]:
        """Agent mode's regions as masks: as drawn, or from clicks and boxes by SAM 3's tracker on the image's SAM 3
        features (the drawn shape where it finds nothing, or where the SAM 3 checkpoint has no tracker)."""
        segmenter = self.chat.concept_segmenter
        refine = None
        if segmenter.can_point and any(region.mask is None for region in regions):
            if media.concept_features is None:
                media.concept_features = segmenter.encode(media.image)
            refine = partial(segmenter.refine, media.concept_features)
        return [Segment(_region_mask(region, refine, media.image.size), 1.0, f"region {n}")
                for n, region in enumerate(regions, start=earlier + 1)]

    def find(self, phrases: str | Sequence[str], boxes: Sequence[Box] = (), negative_boxes: Sequence[Box] = (),
             score_threshold: float | None = None, image: ImageSource | None = None, video=None) -> Reply:
        """Every instance of each phrase in the conversation's image or video (SAM 3's concept segmentation, no
        language model). `boxes` / `negative_boxes` are exemplars (pixels x0, y0, x1, y1 of the image) for a
        single phrase, on images; `score_threshold` overrides SAM 3's 0.5; `image` / `video` (as in `ask`) first
        make new media the conversation's.

        The reply's segments are the instances, labelled with their phrase (with `score`; `box` on images;
        `instance_id`, a track id stable across frames, on videos), best first per phrase; a phrase not in the
        media gets one segment with `found=False` and an empty mask, and a line in `reply.warnings`. An image's
        SAM 3 features are computed once and reused by later searches; a video is tracked frame by frame with
        bounded memory (`reply.video_stats`)."""
        phrases = [phrases] if isinstance(phrases, str) else list(phrases)
        if (boxes or negative_boxes) and len(phrases) != 1:
            raise InputError("Exemplar boxes go with exactly one phrase.")
        concepts = [ConceptPrompt(p, list(boxes), list(negative_boxes)) for p in phrases]
        if image is not None and video is not None:
            raise InputError("Please send either an image or a video, not both.")
        new_media = self._new_media(image, video, {})[0] if image is not None or video is not None else None
        reply = self._find(ConceptPrompts(concepts, score_threshold), new_media or self.media)
        if new_media is not None:  # only once the search succeeded: a failed one changes nothing
            self.media, self.history = new_media, self.chat.processor.conversation_start()
            self.unsent_media, self.regions, self.vision = new_media, [], None
            self.drop_cache()
        return reply

    def instances(self, index: int) -> Reply:
        """Every instance of object `index` of the last reply: its phrase, with its mask's box as a positive
        exemplar (see `Segment.instances`)."""
        segments = self.last_reply.segments if self.last_reply else []
        if not 0 <= index < len(segments):
            raise InputError(f"There is no object {index}; the last reply has {len(segments)} (0-based index).")
        return segments[index].instances()

    def _instances_of(self, segment: Segment, media: "ImageMedia | VideoMedia") -> Reply:
        if not segment.label:
            raise InputError("This object has no phrase naming it, so there is nothing to look for; use find().")
        box = mask_box(segment.mask) if segment.found and isinstance(segment.mask, np.ndarray) else None
        return self._find(ConceptPrompts([ConceptPrompt(segment.label, [box] if box else [])]), media)

    def _find(self, prompts: ConceptPrompts, media: "ImageMedia | VideoMedia | None") -> Reply:
        if media is None:
            raise InputError("There is no image in this conversation: send one before looking for objects.")
        stats = None
        with self.chat.lock:
            segmenter = self.chat.concept_segmenter
            if isinstance(media, ImageMedia):
                if media.concept_features is None:
                    media.concept_features = segmenter.encode(media.image)
                segments = segmenter.segment(media.concept_features, prompts)
            else:
                segments, stats = ConceptTracker(segmenter).track(media.clip, prompts)
        reply = Reply(found_summary([s.label for s in segments], [s.found for s in segments]), [], segments,
                      video_stats=stats)
        where = "image" if isinstance(media, ImageMedia) else "video"
        reply.warnings = [f"{s.label!r} is not in the {where}." for s in segments if not s.found]
        self._offer_instances(reply, media)
        self.last_reply = reply
        return reply

    def _offer_instances(self, reply: Reply, media: "ImageMedia | VideoMedia") -> None:
        for segment in reply.segments:
            segment._instances = partial(self._instances_of, segment, media)

    def _new_media(self, image, video, video_options: dict) -> tuple["ImageMedia | VideoMedia | None",
                                                                       VideoOptions | None]:
        """The turn's new media (loaded and encoded for the VLM) and its video options; (None, None) if none."""
        processor = self.chat.processor
        if video is not None:
            if isinstance(video, VideoClip) and video_options:
                raise InputError("A VideoClip carries its own options; set them when building it.")
            limits = processor.limits
            clip = video if isinstance(video, VideoClip) else VideoClip(
                video, _video_options(video_options), limits.video, limits.media)
            return load_video(clip, partial(processor.encode_images, as_video=True)), clip.options
        if image is not None:
            picture = load_image(image, processor.limits.media)
            return ImageMedia(picture, processor.encode_images([picture])), None
        return None, None

    def _follow_up_options(self, video_options: dict) -> VideoOptions | None:
        """A follow-up may change how the conversation's video is propagated, nothing else."""
        if not video_options:
            return None
        if not isinstance(self.media, VideoMedia):
            raise InputError("Video options need a video in the conversation.")
        allowed = {"propagation", "key_frames"}
        if set(video_options) - allowed:
            raise InputError(f"On a follow-up only {sorted(allowed)} can change; send the video again "
                             "to change the others.")
        return _video_options({**self.media.options.__dict__, **video_options})

    def _generate_streaming(self, prompt_ids: list[int], vision: VisionInputs | None):
        chat = self.chat
        streamer = _IdStreamer()
        stop = threading.Event()
        result: dict = {}

        def work() -> None:
            try:
                result["out"] = chat.generate(prompt_ids, vision, streamer, stop, context=self.context)
            except BaseException as err:  # re-raised in the caller's thread
                result["error"] = err
                streamer.end()

        worker = threading.Thread(target=work, daemon=True)
        worker.start()
        ids: list[int] = []
        shown = ""
        try:
            while (chunk := streamer.queue.get()) is not None:
                ids += chunk
                text = chat.processor.decode_answer(ids).text
                if text != shown:
                    shown = text
                    yield text
        finally:  # also when the consumer stops listening: end generation before releasing the model
            stop.set()
            worker.join()
        if "error" in result:
            raise result["error"]
        return result["out"]

    def _reply(self, new_ids: list[int], seg_states: torch.Tensor | None, media: "ImageMedia | VideoMedia | None",
               video_run: VideoOptions | None = None) -> Reply:
        chat = self.chat
        parsed = chat.processor.decode_answer(new_ids)
        reply = Reply(parsed.text, new_ids)
        if isinstance(media, VideoMedia):
            reply.warnings += media.clip.notices
        if seg_states is None:
            return reply
        if media is None:
            reply.warnings.append("There is no image in this conversation, so nothing was segmented.")
            return reply
        limit = chat.limits.max_segments
        if seg_states.shape[0] > limit:
            reply.warnings.append(f"The answer names {seg_states.shape[0]} objects; only the first {limit} "
                                  "are segmented.")
            seg_states = seg_states[:limit]
        prompts = SegStates(seg_states, parsed.labels[: seg_states.shape[0]])
        if isinstance(media, VideoMedia):
            reply.segments, reply.video_stats = self._video_segments(media, prompts, video_run or media.options)
        else:
            reply.segments = chat.segmenter.segment(self.image_features(media), prompts)
        reply.warnings += _mark_absent(reply.segments, "video" if isinstance(media, VideoMedia) else "image")
        self._offer_instances(reply, media)
        return reply

    def _video_segments(self, media: VideoMedia, prompts: SegStates,
                        options: VideoOptions) -> tuple[list[Segment], PropagationStats]:
        """Every object of the answer through one streaming SAM2 video session; the LLM frames' SAM2 features
        are cached in the media state for follow-ups."""
        segmenter = self.chat.video_segmenter
        for t in media.llm_indices:
            if t not in media.sam_features:
                media.sam_features[t] = segmenter.frame_features(np.asarray(media.images[
                    media.llm_indices.index(t)]))
        features = {t: media.sam_features[t] for t in media.llm_indices}
        with torch.no_grad():
            embeddings = self.chat.model.project(prompts.states)
        result = segmenter.segment(media.clip, embeddings, features, options.propagation, options.key_frames)
        return [Segment(mask, score, label, float(np.nanmax(mask.presence)) if len(mask) else 0.0)
                for mask, score, label in zip(result.masks, result.scores, prompts.labels)], result.stats

    def image_features(self, media: "ImageMedia | None" = None) -> ImageFeatures:
        """SAM2 embeddings of the conversation's image (or `media`'s), encoded once and cached for later turns
        and click refinement."""
        media = media or self.media
        if not isinstance(media, ImageMedia):
            raise InputError("There is no image in this conversation.")
        if media.features is None:
            media.features = self.chat.segmenter.encode(media.image)
        return media.features
