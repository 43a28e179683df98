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
from model.loading import (check_weights_format, pick_device, pick_dtype, quantization_config, read_config,
                           resolve_source)
from model.media import ImageSource, MediaLimits, load_image
from model.modeling import SegChatModel
from model.prompting import PromptBuilder, default_system_prompt, load_media_layout, load_template
from model.seg_capture import SegCapture
from model.segment import ImageFeatures, MaskDecoder, binary_masks


@dataclass
class Segment:
    """One object: `mask` is bool H x W at the original image size (display orientation)."""

    mask: np.ndarray
    score: float  # SAM2's predicted IoU of the mask
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
        self.mask_decoder = MaskDecoder(model.sam2, config.sam2_pixel_mode)
        # Extra `generate` arguments (sampling, logits processors...); greedy decoding by default.
        self.generate_options: dict = {}
        vlm_config = config.vlm_config
        placeholders = [getattr(vlm_config, name, None) for name in ("image_token_id", "video_token_id")]
        self.unspeakable_ids = sorted(set(self.prompts.media_token_ids()) | {i for i in placeholders if i is not None})
        self._lock = threading.Lock()  # one model, many conversations: model work runs one at a time

    @classmethod
    def from_pretrained(cls, path_or_id: str | Path, device: str | torch.device | None = None,
                        dtype: str | torch.dtype | None = None, quantization: str | None = None,
                        allow_pickle: bool = False, limits: Limits | None = None) -> "SegChat":
        """Load a checkpoint folder or hub id. `device=None` picks CUDA when present, else CPU; `dtype=None`
        picks bf16 on GPUs that support it, else fp32; `quantization` is None, "4bit" or "8bit" (language
        model only)."""
        folder = resolve_source(path_or_id)
        read_config(folder)
        check_weights_format(folder, allow_pickle)
        device = pick_device(device)
        dtype = pick_dtype(dtype, device)
        quant = quantization_config(quantization, dtype)
        model = SegChatModel.from_pretrained(folder, dtype=dtype, device_map=str(device), quantization_config=quant,
                                             use_safetensors=not allow_pickle)
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
        inputs = self._forward_inputs(input_ids, vision)
        state_module = self.family.seg_state_module(vlm)
        with SegCapture(vlm, state_module, self.seg_token_id) as capture:
            options = {"do_sample": False, "suppress_tokens": self.unspeakable_ids, **self.generate_options}
            out = vlm.generate(**inputs, **options, max_new_tokens=self.limits.max_new_tokens,
                               eos_token_id=self.prompts.stop_ids, pad_token_id=self.tokenizer.pad_token_id,
                               streamer=streamer, stopping_criteria=StoppingCriteriaList([_StopOnEvent(stop)]))
        new_ids = out[0, input_ids.shape[1]:].tolist()
        states = capture.states
        if new_ids and new_ids[-1] == self.seg_token_id:
            # The last token's state is only computed by one more forward pass.
            full = torch.tensor([prompt_ids + new_ids], device=self.device)
            with torch.no_grad(), SegCapture(vlm, state_module, self.seg_token_id, skip_first=False) as last:
                vlm(**self._forward_inputs(full, vision))
            states = states + [last.states[-1][-1:]]
        return new_ids, (torch.cat(states) if states else None)

    def _forward_inputs(self, input_ids: torch.Tensor, vision: VisionInputs | None) -> dict:
        inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        if vision is not None:
            inputs.update(vision.to(self.device, self.model.vlm.dtype).tensors)
            inputs.update(self.family.forward_kwargs(input_ids))
        return inputs

    def segment(self, features: ImageFeatures, seg_states: torch.Tensor, labels: list[str | None]) -> list[Segment]:
        """All objects of an answer in one batched mask-decoder call on cached image embeddings."""
        projector = self.model.projector
        with torch.no_grad():
            prompts = projector(seg_states.to(device=projector[0].weight.device, dtype=projector[0].weight.dtype))
            decoded = self.mask_decoder.decode(features, prompts)
            logits = self.mask_decoder.logits_at(decoded.low_res_logits, features.original_size)
        return [Segment(mask, float(iou), label, float(presence)) for mask, iou, presence, label in
                zip(binary_masks(logits), decoded.iou_scores, decoded.object_scores, labels)]


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
    """A multi-turn chat about one image. Uploading a new image starts a fresh context for the model."""

    def __init__(self, chat: SegChat):
        self.chat = chat
        self.history: list[int] = chat.prompts.system_turn(chat.system_prompt)
        self.media: _Media | None = None

    def ask(self, text: str, image: ImageSource | None = None) -> Reply:
        """Answer one message; `image` is a path, PIL image or HxWx3 array, or None to keep the current one."""
        for item in self.ask_stream(text, image=image):
            if isinstance(item, Reply):
                return item
        raise RuntimeError("ask_stream ended without a reply")

    def ask_stream(self, text: str, image: ImageSource | None = None) -> Iterator["str | Reply"]:
        """Yield the answer text so far as it is generated, then the full `Reply` (masks included)."""
        chat = self.chat
        text = chat.check_text(text)
        media = self.media
        history = self.history
        media_ids: list[int] = []
        if image is not None:  # validate everything before touching the conversation
            picture = load_image(image, chat.limits.media)
            media = _Media([picture], chat.family.encode_images([picture]))
            history = chat.prompts.system_turn(chat.system_prompt)
            media_ids = chat.prompts.media_block(media.vision.runs)
        prompt_ids = history + chat.prompts.user_turn(text, media_ids)

        with chat._lock:
            new_ids, seg_states = yield from self._generate_streaming(prompt_ids, media)
            reply = self._reply(new_ids, seg_states, media)
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

    def _reply(self, new_ids: list[int], seg_states: torch.Tensor | None, media: _Media | None) -> Reply:
        chat = self.chat
        parsed = parse_answer(new_ids, chat.tokenizer, chat.markup)
        reply = Reply(parsed.text, new_ids)
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
        features = self._sam_features(media, 0)
        reply.segments = chat.segment(features, seg_states, parsed.labels[: seg_states.shape[0]])
        return reply

    def _sam_features(self, media: _Media, frame: int) -> ImageFeatures:
        if frame not in media.sam_features:
            media.sam_features[frame] = self.chat.mask_decoder.encode(media.images[frame])
        return media.sam_features[frame]
