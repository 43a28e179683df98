"""`SegChatProcessor`: everything between a person's input and the model's tensors, and back to text.

It owns the tokenizer, the prompt builder (templates from `prompts/`, user text kept as data), the VLM family's
image encoding and token types, SAM2's pixel preparation, answer parsing and the input limits. Inference,
training, evaluation and the official Sa2VA path all prepare their inputs here; the model never preprocesses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import AutoImageProcessor, PreTrainedTokenizerBase

from model.answer import MarkupIds, ParsedAnswer, parse_answer
from model.config import SegChatConfig
from model.errors import InputError
from model.families import VisionInputs, make_family, needs_image_processor
from model.internlm2_tokenizer import load_tokenizer
from model.media.image import MediaLimits
from model.preprocess import sam2_pixels
from model.prompting import PromptBuilder, default_system_prompt, load_media_layout, load_template
from model.media.video_file import VideoLimits


@dataclass
class Limits:
    """What one turn may ask for; person-caused excess raises `InputError` / `MediaError` with these numbers."""

    max_text_chars: int = 4000
    max_text_tokens: int = 2000  # 4000 emoji would be 16,000 tokens: the prompt's cost is bounded in tokens
    max_new_tokens: int = 512
    max_segments: int = 16
    max_regions: int = 8  # regions drawn in one turn
    # A conversation's language-model cache kept for its next turn, in tokens (0: none kept); a longer context is
    # read again from its first token at each turn.
    max_cached_tokens: int = 8192
    # The caches of all the conversations of one loaded model together, in MiB: past it, the caches of the
    # conversations continued longest ago are dropped (their next turn reads its history again).
    max_cache_mib: float = 2048
    # A prompt showing several pictures (a video's frames) is read in parts that each end after a picture and hold
    # at most this many tokens (or one picture), so the vision tower and the language model's activations are a
    # part's, not the whole prompt's; 0: read it in one pass.
    prefill_part_tokens: int = 1024
    media: MediaLimits = field(default_factory=MediaLimits)
    video: VideoLimits = field(default_factory=VideoLimits)


class SegChatProcessor:
    """Tokenizer + prompts + image encoding + SAM2 pixels for one checkpoint (its `SegChatConfig`)."""

    def __init__(self, config: SegChatConfig, tokenizer: PreTrainedTokenizerBase, image_processor=None,
                 limits: Limits | None = None, system_prompt: str | None = None):
        self.config = config
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.limits = limits or Limits()
        self.prompts = PromptBuilder(tokenizer, load_template(config.template), load_media_layout(config.family))
        self.family = make_family(config, self.prompts, image_processor)
        self.system_prompt = default_system_prompt() if system_prompt is None else system_prompt
        self.seg_token_id = None if config.seg_token is None else tokenizer.convert_tokens_to_ids(config.seg_token)
        if config.seg_token is not None and self.seg_token_id in (None, tokenizer.unk_token_id):
            raise ValueError(f"The tokenizer has no {config.seg_token} token.")
        self.markup = MarkupIds.from_tokenizer(tokenizer, config.seg_token, self.prompts.stop_ids)
        vlm_config = config.vlm_config
        # The prompt tokens the VLM fills with media features (image and `<vp>` tokens).
        names = ("image_token_id", "video_token_id")
        self.placeholder_ids = {getattr(vlm_config, name, None) for name in names} - {None}
        vocab = tokenizer.get_vocab()
        # Sa2VA's InternVL checkpoints read regions as `<vp>` runs of image features; other models see marks.
        self.takes_region_tokens = self.family.name == "internvl" and "<vp>" in vocab and "</vp>" in vocab
        # Ids only code may insert: the model must never generate them.
        self.unspeakable_ids = sorted(set(self.prompts.media_token_ids()) | self.placeholder_ids)

    @classmethod
    def from_pretrained(cls, folder: str | Path, config: SegChatConfig | None = None,
                        limits: Limits | None = None) -> "SegChatProcessor":
        """The processor saved with a native checkpoint folder (tokenizer, and the image processor of Qwen-VL
        families). Checkpoint code is never run."""
        config = config or SegChatConfig.from_pretrained(folder)
        tokenizer = load_tokenizer(folder)
        image_processor = None
        if needs_image_processor(config):
            image_processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=False)
        return cls(config, tokenizer, image_processor, limits)

    def save_pretrained(self, folder: str | Path) -> None:
        self.tokenizer.save_pretrained(folder)
        if self.image_processor is not None:
            self.image_processor.save_pretrained(folder)

    # ------------------------------------------------------------------------------------------ text

    def check_text(self, text: str) -> str:
        """The person's message, stripped, or `InputError` when it is not text, empty, not valid Unicode, or too
        long in characters or in tokens. Callers check a message here before storing or showing it."""
        if not isinstance(text, str) or not text.strip():
            raise InputError("Please type a question or instruction.")
        limits = self.limits
        if len(text) > limits.max_text_chars:
            raise InputError(f"The message is {len(text)} characters long; the limit is {limits.max_text_chars}.")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # lone UTF-16 surrogates: no encoding can carry them to a browser
            raise InputError("The message contains characters that are not valid text (unpaired surrogates); "
                             "please type it again.") from None
        tokens = len(self.prompts.data(text.strip()))
        if tokens > limits.max_text_tokens:
            raise InputError(f"The message is {tokens} tokens long; the limit is {limits.max_text_tokens}. "
                             "Please shorten it.")
        return text.strip()

    def conversation_start(self) -> list[int]:
        """The ids a conversation starts with: the tokenizer's own prefix (`<s>` for InternLM2, as the official
        code's `encode` adds it; nothing for Qwen), then the system turn."""
        return self.prompts.start_ids + self.prompts.system_turn(self.system_prompt)

    def user_turn(self, text: str, vision: VisionInputs | None = None, regions: list[int] | None = None) -> list[int]:
        """A user turn asking for an answer: the media block of `vision` (new media only), the `regions` note
        (`region_tokens` / `region_marks`) and `text` as data."""
        media = self.prompts.media_block(vision.runs) if vision else []
        return self.prompts.user_turn(text, media + (regions or []))

    def region_tokens(self, masks: list[np.ndarray], numbers: list[int]) -> tuple[list[int], list[torch.Tensor]]:
        """Regions as `<vp>` runs (checkpoints that `takes_region_tokens`): the note's ids, and each region's cells
        on the image-token grid, whose features fill its run."""
        cells = [self.family.region_cells(mask) for mask in masks]
        context = self.tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
        return self.prompts.region_block(numbers, [[context] * int(c.sum()) for c in cells]), cells

    def region_marks(self, numbers: list[int]) -> list[int]:
        """The note telling the model which numbered marks on the image are the regions (set-of-mark prompting)."""
        return self.prompts.region_block(numbers)

    def closed_answer(self, new_ids: list[int]) -> list[int]:
        """A generated answer as it enters the history: with a stop token even if generation was cut off, and the
        template's end of the assistant turn."""
        closed = new_ids if self.prompts.ends_with_stop(new_ids) else new_ids + self.prompts.end_ids
        return closed + self.prompts.answer_end()

    def decode_answer(self, ids: list[int]) -> ParsedAnswer:
        """The answer text as shown to a person, and the label of each `[SEG]`."""
        parsed = parse_answer(ids, self.tokenizer, self.markup)
        parsed.text = self.prompts.without_stop_text(parsed.text)
        return parsed

    # ------------------------------------------------------------------------------------------ media

    def encode_images(self, images: list[Image.Image], as_video: bool = False) -> VisionInputs:
        """RGB images (or a video's LLM frames) → image-token runs for the prompt and tensors for the VLM."""
        return self.family.encode_images(images, as_video=as_video)

    def split_pictures(self, vision: VisionInputs) -> list[VisionInputs]:
        """Media without regions as one `VisionInputs` per picture (image or video frame), in prompt order."""
        return self.family.split_pictures(vision)

    def sam_pixels(self, image: Image.Image, media: str = "image") -> torch.Tensor:
        """SAM2's input [1, 3, S, S] for an image or a video frame, with the checkpoint's rounding."""
        return sam2_pixels(image, mode=self.config.pixel_mode(media), size=self.config.sam2_config.image_size)

    def model_inputs(self, input_ids: torch.Tensor, vision: VisionInputs | None, device: torch.device,
                     dtype: torch.dtype, sent: VisionInputs | None = None) -> dict[str, torch.Tensor]:
        """The VLM's forward inputs for `input_ids` [B, L] and the media, on `device` (floats in `dtype`).
        `sent`: the part of `vision` whose tensors go along, when not all of it (a prompt continuing a cached
        context sends what its uncached tokens show, which may be nothing)."""
        input_ids = input_ids.to(device)
        inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        if vision is not None:
            inputs.update((vision if sent is None else sent).to(device, dtype).tensors)
            inputs.update(self.family.token_types(input_ids))
        return inputs
