"""Sa2VA's official `predict_forward(image, video, text, past_text)` on a loaded SegChat, output-identical.

Unlike `Conversation.ask`, `text` and `past_text` are trusted markup, tokenized as the official code does
(special tokens are parsed), and there is no system prompt of SegChat's own. Per flavour, as in the official code:

- InternVL: `<image>` in `text` becomes the media block (`<img>` + `<IMG_CONTEXT>` * 256 per tile `</img>`, frames
  joined by a newline); the prompt is `past_text` + one templated user turn. The [SEG] states are read from the
  generated tokens only.
- Qwen-VL: `<image>` is removed; image and video calls ignore `past_text` and put the media before the text in one
  user turn; the text-only branch sends `past_text + text` as one user message. The message is rendered by the
  checkpoint's chat template, as the official processor does (Qwen2.5-VL's adds a default system turn). The official code scans the whole
  sequence (prompt included) for [SEG], so a [SEG] in the prompt of an image/video call also yields a mask.

Text-only calls (no image, no video, no `<image>` in `past_text`) return no masks. A [SEG] that ends the answer
(generation cut off at `max_new_tokens`) gets no mask, as in the official code. Video: the first 5 frames go to
the LLM and are language-prompted in SAM2; later frames are tracked by memory ("sa2va" propagation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
from PIL import Image
from transformers import StoppingCriteriaList

from model.errors import InputError
from model.families import VisionInputs
from model.modeling import SegChatModel
from model.processing import SegChatProcessor
from model.prompting import region_note
from model.segmenters import SegEmbeddingSegmenter
from model.segmenters.base import binary_masks
from model.video.clip import VideoClip, VideoMedia, VideoOptions, load_video
from model.video.segmenter import VideoSegmenter

MAX_NEW_TOKENS = 2048
LLM_FRAMES = 5
IMAGE_TAG = "<image>"


@dataclass
class OfficialOutput:
    prediction: str
    prompt_ids: list[int]
    generated_ids: list[int]
    masks: list[np.ndarray] = field(default_factory=list)  # per [SEG]: bool [frames, H, W]
    seg_states: torch.Tensor | None = None  # [N, hidden] before the projector
    low_res_logits: np.ndarray | None = None  # [N, frames, h, w], SAM2's selected mask logits

    def as_dict(self) -> dict:
        return {"prediction": self.prediction, "prediction_masks": self.masks}


def official_prompt(processor: SegChatProcessor, text: str, past_text: str, runs: list[list[int]] | None,
                    region_runs: list[int] | None = None) -> str:
    """The prompt string the official code tokenizes; `runs` are the media's image-token runs (None: text only),
    `region_runs` the number of image tokens of each region prompt (InternVL's `mask_prompts`)."""
    prompts = processor.prompts
    layout, template = prompts.layout, prompts.template
    media = ""
    if runs:
        token = processor.tokenizer.convert_ids_to_tokens(runs[0][0])
        media = layout.frame_separator.join(layout.block.replace("{media}", token * len(run)) for run in runs)
        if region_runs is not None:
            media += region_note(list(range(1, len(region_runs) + 1)), [token * n for n in region_runs])

    def turn(content: str) -> str:
        return template.user.replace("{content}", content) + template.assistant

    if _is_internvl(processor):
        if runs and (IMAGE_TAG in text or region_runs is not None) and past_text:
            raise InputError("With `<image>` in the text, past_text must be empty (as in the official code).")
        return past_text + turn(text.replace(IMAGE_TAG, media))
    text = text.replace(IMAGE_TAG, "")
    if processor.tokenizer.chat_template:
        return _rendered_prompt(processor, past_text + text if runs is None else text, runs)
    if runs is None:
        return turn(past_text + text)
    return turn(layout.content.replace("{media}", media).replace("{text}", text))


def _rendered_prompt(processor: SegChatProcessor, text: str, runs: list[list[int]] | None) -> str:
    """The Qwen-VL prompt as the official code makes it: one user message (each image, then the text) rendered by
    the checkpoint's own chat template (Qwen2.5-VL's adds its default system turn, Qwen3-VL's none), each image
    placeholder then repeated once per image token."""
    tokenizer = processor.tokenizer
    content = [{"type": "image"} for _ in runs or []] + [{"type": "text", "text": text}]
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                             add_generation_prompt=True)
    if not runs:
        return rendered
    placeholder = tokenizer.convert_ids_to_tokens(runs[0][0])
    pieces = rendered.split(placeholder)
    if len(pieces) != len(runs) + 1:
        raise ValueError(f"the chat template placed {len(pieces) - 1} images for {len(runs)}")
    return pieces[0] + "".join(placeholder * len(run) + piece for run, piece in zip(runs, pieces[1:]))


def _is_internvl(processor: SegChatProcessor) -> bool:
    return processor.family.name == "internvl"


def _generate(model: SegChatModel, processor: SegChatProcessor, prompt_ids: list[int],
              vision: VisionInputs | None) -> tuple[list[int], torch.Tensor | None]:
    """Greedy official generation: (new ids, [SEG] states or None). The Qwen-VL flavours scan the prompt too."""
    tokenizer = processor.tokenizer
    device = model.get_input_embeddings().weight.device
    inputs = processor.model_inputs(torch.tensor([prompt_ids]), vision, device, model.vlm.dtype)
    inputs = model.with_region_features(inputs, vision.regions) if vision else inputs
    prompts = processor.prompts
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    seg_from_prompt = not _is_internvl(processor)
    with torch.no_grad(), model.seg_capture(processor.seg_token_id, skip_first=not seg_from_prompt) as capture:
        out = model.vlm.generate(**inputs, do_sample=False, max_new_tokens=MAX_NEW_TOKENS,
                                 eos_token_id=prompts.stop_ids, pad_token_id=pad,
                                 stopping_criteria=StoppingCriteriaList(prompts.stopping_criteria(len(prompt_ids))))
    return out[0, len(prompt_ids):].tolist(), capture.stacked()


def predict_forward(model: SegChatModel, processor: SegChatProcessor, image: Image.Image | None = None,
                    video: list[Image.Image] | None = None, text: str = "", past_text: str = "",
                    mask_prompts: list[np.ndarray] | None = None,
                    segmenter: SegEmbeddingSegmenter | None = None) -> OfficialOutput:
    """One official `predict_forward` call, with the intermediate results parity checks need. The caller holds
    the model's lock; `segmenter` encodes the image for SAM2 (a caller's own, e.g. one that caches features).

    `mask_prompts` (InternVL checkpoints with `<vp>` tokens, images only, as in the official code): a list
    holding one bool array (regions, H, W) at the image's size; `<image>` in `text` is followed by the regions
    note, "region1" ... "regionN" each with its `<vp>` run."""
    if image is not None and video is not None:
        raise InputError("Pass either an image or a video, not both.")
    if mask_prompts is not None and (image is None or not processor.takes_region_tokens or IMAGE_TAG not in text):
        raise InputError("mask_prompts need an image, `<image>` in the text and a checkpoint trained with region "
                         "prompts (Sa2VA's InternVL flavour), as in the official code.")
    past_text = past_text or ""
    text_only = image is None and video is None and IMAGE_TAG not in past_text
    if image is None and video is None and not text_only:
        raise InputError("past_text holds `<image>` but no image or video was given.")
    vision, media = None, None
    if video is not None:
        options = VideoOptions(propagation="sa2va", llm_frames=LLM_FRAMES, frame_sampling="first")
        limits = processor.limits
        clip = VideoClip(list(video), options, limits.video, limits.media)
        media = load_video(clip, partial(processor.encode_images, as_video=True))
        vision = media.vision
    elif image is not None:
        image = image if image.mode == "RGB" else image.convert("RGB")
        vision = processor.encode_images([image])
    region_runs = None
    if mask_prompts is not None:
        cells = [processor.family.region_cells(mask) for mask in np.asarray(mask_prompts[0], dtype=bool)]
        vision, region_runs = vision.with_regions(cells), [int(c.sum()) for c in cells]
    prompt = official_prompt(processor, text, past_text, vision.runs if vision else None, region_runs)
    prompt_ids = processor.tokenizer.encode(prompt)
    new_ids, states = _generate(model, processor, prompt_ids, vision)
    output = OfficialOutput(processor.tokenizer.decode(new_ids, skip_special_tokens=False).strip(), prompt_ids,
                            new_ids, seg_states=states)
    if text_only or states is None:
        return output
    if media is not None:
        _video_masks(model, processor, media, states, output)
    else:
        _image_masks(segmenter or SegEmbeddingSegmenter(model, processor), image, states, output)
    return output


def _image_masks(segmenter: SegEmbeddingSegmenter, image: Image.Image, states: torch.Tensor,
                 output: OfficialOutput) -> None:
    model = segmenter.model
    features = segmenter.encode(image)
    with torch.no_grad():
        decoded = model.decode_masks(features, model.project(states))
        logits = model.upsample(decoded.low_res_logits, features.original_size)
    output.masks = [mask[None] for mask in binary_masks(logits)]
    output.low_res_logits = decoded.low_res_logits[:, None].cpu().numpy()


def _video_masks(model: SegChatModel, processor: SegChatProcessor, media: VideoMedia, states: torch.Tensor,
                 output: OfficialOutput) -> None:
    low_res: dict[int, np.ndarray] = {}

    def keep(t: int, out) -> None:
        low_res[t] = out.pred_masks[:, 0].float().cpu().numpy()

    with torch.no_grad():
        prompts = model.project(states)
    result = VideoSegmenter(model, processor).segment(media.clip, prompts, {}, "sa2va", on_frame=keep)
    output.masks = [np.asarray(mask) for mask in result.masks]
    output.low_res_logits = np.stack([low_res[t] for t in sorted(low_res)], axis=1)
