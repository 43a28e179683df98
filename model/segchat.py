"""The public API: `SegChat.from_pretrained(...)`, `new_conversation()`, `conv.ask(...)` / `conv.ask_stream(...)`."""

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from queue import Queue

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor, AutoTokenizer, PreTrainedTokenizerBase
from transformers.generation.stopping_criteria import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from model.answer import MarkupIds, parse_answer
from model.errors import InputError
from model.families import Family, VisionInputs, make_family
from model.loading import pick_device, pick_dtype, prepare_checkpoint, quantization_config
from model.media.image import ImageSource, MediaLimits, load_image
from model.media.masks import VideoMask
from model.media.video_file import VideoLimits
from model.modeling import SegChatModel
from model.prompting import PromptBuilder, default_system_prompt, load_media_layout, load_template
from model.segment import ImageFeatures, MaskDecoder, binary_masks
from model.video.clip import VideoClip, VideoMedia, VideoOptions, load_video
from model.video.segmenter import VideoSegmenter


@dataclass
class Segment:
    """One object. Image: `mask` is bool H x W at the original image size (display orientation).

    Video: `mask` is a `model.media.masks.VideoMask`, a lazy T x H x W bool accessor at the original video size that
    stores per-frame COCO RLE (`mask[t]` decodes frame t; `np.asarray(mask)` materializes all frames, avoid it on
    long clips); `mask.presence[t]` is the per-frame object-score logit (an object that left the frame has an
    empty mask there) and `presence` is its maximum over the clip.
    """

    mask: "np.ndarray | VideoMask"
    score: float  # SAM2's predicted IoU of the mask (video: mean over the prompted frames)
    label: str | None = None  # the phrase in `<p>...</p>` before the object's [SEG], if any
    presence: float = 0.0  # SAM2's object-presence logit (> 0: the object is there)


@dataclass
class Reply:
    text: str  # the answer as shown to a person
    token_ids: list[int]
    segments: list[Segment] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass
class Limits:
    max_text_chars: int = 4000
    max_new_tokens: int = 512
    max_segments: int = 16
    media: MediaLimits = field(default_factory=MediaLimits)
    video: VideoLimits = field(default_factory=VideoLimits)


class SegChat:
    """A loaded model with its tokenizer and processors; start conversations with `new_conversation()`."""

    def __init__(self, model: SegChatModel, tokenizer: PreTrainedTokenizerBase, image_processor=None,
                 limits: Limits | None = None, system_prompt: str | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.limits = limits or Limits()
        config = model.config
        self.prompts = PromptBuilder(tokenizer, load_template(config.template), load_media_layout(config.family))
        self.family: Family = make_family(config, self.prompts, image_processor)
        self.system_prompt = default_system_prompt() if system_prompt is None else system_prompt
        self.seg_token_id = tokenizer.convert_tokens_to_ids(config.seg_token)
        if self.seg_token_id is None or self.seg_token_id == tokenizer.unk_token_id:
            raise ValueError(f"The tokenizer has no {config.seg_token} token.")
        self.markup = MarkupIds.from_tokenizer(tokenizer, config.seg_token, self.prompts.stop_ids)
        self.mask_decoder = MaskDecoder(model.sam2, config.pixel_mode("image"))
        self.video_segmenter = VideoSegmenter(model.sam2, config.pixel_mode("video"))
        # Extra `generate` arguments (sampling, logits processors...); greedy decoding by default.
        self.generate_options: dict = {}
        vlm_config = config.vlm_config
        placeholders = [getattr(vlm_config, name, None) for name in ("image_token_id", "video_token_id")]
        self.unspeakable_ids = sorted(set(self.prompts.media_token_ids()) | {i for i in placeholders if i is not None})
        self.lock = threading.Lock()  # one model, many conversations: model work runs one at a time

    @classmethod
    def from_pretrained(cls, path_or_id: str | Path, device: str | torch.device | None = None,
                        dtype: str | torch.dtype | None = None, quantization: str | None = None,
                        allow_pickle: bool = False, limits: Limits | None = None) -> "SegChat":
        """Load a checkpoint folder or hub id. `device=None` picks CUDA when present, else CPU; `dtype=None`
        picks bf16 on GPUs that support it, else fp32; `quantization` is None, "4bit" or "8bit" (language
        model only). An official Sa2VA checkpoint is converted once into the cache (`$SEGCHAT_CACHE`, default
        ~/.cache/segchat/converted) and loaded from there."""
        folder = prepare_checkpoint(path_or_id, allow_pickle)
        device = pick_device(device)
        dtype = pick_dtype(dtype, device)
        quant = quantization_config(quantization, dtype)
        model = SegChatModel.from_pretrained(folder, dtype=dtype, device_map=str(device), quantization_config=quant,
                                             use_safetensors=None if allow_pickle else True)
        tokenizer = AutoTokenizer.from_pretrained(folder)
        image_processor = None
        if model.config.family != "internvl":
            image_processor = AutoImageProcessor.from_pretrained(folder)
        return cls(model, tokenizer, image_processor, limits)

    def new_conversation(self) -> "Conversation":
        return Conversation(self)

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    def check_text(self, text: str) -> str:
        if not isinstance(text, str) or not text.strip():
            raise InputError("Please type a question or instruction.")
        if len(text) > self.limits.max_text_chars:
            raise InputError(f"The message is {len(text)} characters long; the limit is {self.limits.max_text_chars}.")
        return text.strip()

    def generate(self, prompt_ids: list[int], vision: VisionInputs | None, streamer: BaseStreamer | None = None,
                 stop: threading.Event | None = None) -> tuple[list[int], torch.Tensor | None]:
        """Greedy answer to `prompt_ids`; returns the new ids and the hidden states at its [SEG] tokens.
        Setting `stop` ends generation after the current token."""
        vlm = self.model.vlm
        input_ids = torch.tensor([prompt_ids], device=self.device)
        inputs = self.forward_inputs(input_ids, vision)
        with self.family.seg_capture(vlm, self.seg_token_id) as capture:
            options = {"do_sample": False, "suppress_tokens": self.unspeakable_ids, **self.generate_options}
            out = vlm.generate(**inputs, **options, max_new_tokens=self.limits.max_new_tokens,
                               eos_token_id=self.prompts.stop_ids, pad_token_id=self.tokenizer.pad_token_id,
                               streamer=streamer, stopping_criteria=StoppingCriteriaList([_StopOnEvent(stop)]))
        new_ids = out[0, input_ids.shape[1]:].tolist()
        states = capture.states
        if new_ids and new_ids[-1] == self.seg_token_id:
            # The last token's state is only computed by one more forward pass.
            full = torch.tensor([prompt_ids + new_ids], device=self.device)
            with torch.no_grad(), self.family.seg_capture(vlm, self.seg_token_id, skip_first=False) as last:
                vlm(**self.forward_inputs(full, vision))
            states = states + [last.states[-1][-1:]]
        return new_ids, (torch.cat(states) if states else None)

    def forward_inputs(self, input_ids: torch.Tensor, vision: VisionInputs | None) -> dict:
        """The VLM's forward inputs for `input_ids` with the conversation's media (on the model's device)."""
        inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        if vision is not None:
            inputs.update(vision.to(self.device, self.model.vlm.dtype).tensors)
            inputs.update(self.family.forward_kwargs(input_ids))
        return inputs

    @torch.no_grad()
    def project(self, seg_states: torch.Tensor) -> torch.Tensor:
        """[SEG] hidden states → SAM2 prompt embeddings, on the projector's device and dtype."""
        weight = self.model.projector[0].weight
        return self.model.projector(seg_states.to(device=weight.device, dtype=weight.dtype))

    def segment(self, features: ImageFeatures, seg_states: torch.Tensor, labels: list[str | None]) -> list[Segment]:
        """All objects of an answer in one batched mask-decoder call on cached image embeddings."""
        prompts = self.project(seg_states)
        with torch.no_grad():
            decoded = self.mask_decoder.decode(features, prompts)
            logits = self.mask_decoder.logits_at(decoded.low_res_logits, features.original_size)
        return [Segment(mask, float(iou), label, float(presence)) for mask, iou, presence, label in
                zip(binary_masks(logits), decoded.iou_scores, decoded.object_scores, labels)]

    def predict_forward(self, image: Image.Image | None = None, video: list[Image.Image] | None = None,
                        text: str = "", past_text: str = "") -> dict:
        """Sa2VA's official `predict_forward`: {"prediction": str, "prediction_masks": [bool (frames, H, W)
        per [SEG]]}; `text` and `past_text` are trusted markup (see `model.official`)."""
        from model.official import run

        return run(self, image=image, video=video, text=text, past_text=past_text).as_dict()


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
class _Media:
    images: list[Image.Image]
    vision: VisionInputs
    sam_features: dict[int, ImageFeatures] = field(default_factory=dict)


class Conversation:
    """A multi-turn chat about one image or video. Uploading new media starts a fresh context for the model."""

    def __init__(self, chat: SegChat):
        self.chat = chat
        self.history: list[int] = chat.prompts.system_turn(chat.system_prompt)
        self.media: _Media | VideoMedia | None = None
        self.last_video_stats = None  # PropagationStats of the last video turn (memory bound, for tests/benches)

    def ask(self, text: str, image: ImageSource | None = None, video=None, **video_options) -> Reply:
        """Answer one message; `image` is a path, PIL image or HxWx3 array, or None to keep the current media.

        `video` is a video file (mp4, webm, mov, animated gif...; the content decides, not the extension), a list
        of frames, or a `model.video.clip.VideoClip` already built (and probed) with its options; `video_options` are
        `model.video.clip.VideoOptions` fields: `propagation="sa2va" | "memory"`, `llm_frames=5`,
        `frame_sampling="first" | "uniform"`, `key_frames`, `stride`, `max_side`, `max_frames`.
        On a follow-up about the same video, `propagation` and `key_frames` may change; the LLM frames stay.
        """
        for item in self.ask_stream(text, image=image, video=video, **video_options):
            if isinstance(item, Reply):
                return item
        raise RuntimeError("ask_stream ended without a reply")

    def ask_stream(self, text: str, image: ImageSource | None = None, video=None,
                   **video_options) -> Iterator["str | Reply"]:
        """Yield the answer text so far as it is generated, then the full `Reply` (masks included)."""
        chat = self.chat
        text = chat.check_text(text)
        if image is not None and video is not None:
            raise InputError("Please send either an image or a video, not both.")
        media = self.media
        history = self.history
        media_ids: list[int] = []
        video_run: VideoOptions | None = None
        if video is not None:  # validate everything before touching the conversation
            if isinstance(video, VideoClip) and video_options:
                raise InputError("A VideoClip carries its own options; set them when building it.")
            clip = video if isinstance(video, VideoClip) else VideoClip(
                video, _video_options(video_options), chat.limits.video, chat.limits.media)
            video_run = clip.options
            media = load_video(clip, lambda images: chat.family.encode_images(images, as_video=True))
            history = chat.prompts.system_turn(chat.system_prompt)
            media_ids = chat.prompts.media_block(media.vision.runs)
        elif image is not None:
            picture = load_image(image, chat.limits.media)
            media = _Media([picture], chat.family.encode_images([picture]))
            history = chat.prompts.system_turn(chat.system_prompt)
            media_ids = chat.prompts.media_block(media.vision.runs)
        if video_run is None and video_options:
            if not isinstance(media, VideoMedia):
                raise InputError("Video options need a video in the conversation.")
            allowed = {"propagation", "key_frames"}
            if set(video_options) - allowed:
                raise InputError(f"On a follow-up only {sorted(allowed)} can change; send the video again "
                                 "to change the others.")
            base = media.options
            video_run = _video_options({**base.__dict__, **video_options})
        prompt_ids = history + chat.prompts.user_turn(text, media_ids)

        with chat.lock:
            new_ids, seg_states = yield from self._generate_streaming(prompt_ids, media)
            reply = self._reply(new_ids, seg_states, media, video_run)
        self.media = media
        self.history = prompt_ids + self._closed(new_ids) + chat.prompts.answer_end()
        yield reply

    def _generate_streaming(self, prompt_ids: list[int], media: _Media | None):
        chat = self.chat
        streamer = _IdStreamer()
        stop = threading.Event()
        result: dict = {}

        def work() -> None:
            try:
                result["out"] = chat.generate(prompt_ids, media.vision if media else None, streamer, stop)
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
                text = parse_answer(ids, chat.tokenizer, chat.markup).text
                if text != shown:
                    shown = text
                    yield text
        finally:  # also when the consumer stops listening: end generation before releasing the model
            stop.set()
            worker.join()
        if "error" in result:
            raise result["error"]
        return result["out"]

    def _closed(self, new_ids: list[int]) -> list[int]:
        """The answer as it enters the history, with a stop token even if generation was cut off."""
        stops = self.chat.prompts.stop_ids
        return new_ids if new_ids and new_ids[-1] in stops else new_ids + stops[:1]

    def _reply(self, new_ids: list[int], seg_states: torch.Tensor | None, media: "_Media | VideoMedia | None",
               video_run: VideoOptions | None = None) -> Reply:
        chat = self.chat
        parsed = parse_answer(new_ids, chat.tokenizer, chat.markup)
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
        if isinstance(media, VideoMedia):
            reply.segments = self._video_segments(media, seg_states, parsed.labels[: seg_states.shape[0]],
                                                  video_run or media.options)
            return reply
        features = self.image_features(media)
        reply.segments = chat.segment(features, seg_states, parsed.labels[: seg_states.shape[0]])
        return reply

    def _video_segments(self, media: VideoMedia, seg_states: torch.Tensor, labels: list[str | None],
                        options: VideoOptions) -> list[Segment]:
        """Every object of the answer through one streaming SAM2 video session; the LLM frames' SAM2 features
        are cached in the media state for follow-ups."""
        chat = self.chat
        prompts = chat.project(seg_states)
        for t in media.llm_indices:
            if t not in media.sam_features:
                media.sam_features[t] = chat.video_segmenter.frame_features(np.asarray(media.images[
                    media.llm_indices.index(t)]))
        features = {t: media.sam_features[t] for t in media.llm_indices}
        result = chat.video_segmenter.segment(media.clip, prompts, features, options.propagation,
                                              options.key_frames)
        self.last_video_stats = result.stats
        return [Segment(mask, score, label, float(np.nanmax(mask.presence)) if len(mask) else 0.0)
                for mask, score, label in zip(result.masks, result.scores, labels)]

    def image_features(self, media: "_Media | None" = None) -> ImageFeatures:
        """SAM2 embeddings of the conversation's image (or `media`'s), encoded once and cached for later turns
        and click refinement."""
        media = media or self.media
        if not isinstance(media, _Media):
            raise InputError("There is no image in this conversation.")
        if 0 not in media.sam_features:
            media.sam_features[0] = self.chat.mask_decoder.encode(media.images[0])
        return media.sam_features[0]
