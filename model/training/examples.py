"""Teacher-forced training examples: prompt + answer ids with labels, VLM and SAM2 pixels, target masks, laid out
by the `SegChatProcessor` exactly as at inference."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from model.errors import DatasetError
from model.data.sample import Sample
from model.families import VisionInputs
from model.media.image import load_image
from model.processing import SegChatProcessor

IGNORE_INDEX = -100


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX on the prompt, the answer ids (and its stop token) elsewhere
    vision: VisionInputs
    sam_pixels: torch.Tensor  # [1, 3, S, S]
    masks: torch.Tensor  # [N, H, W] float, one per [SEG] of the answer
    valid: torch.Tensor | None  # [H, W] float, 0 on ignore pixels


@dataclass
class Batch:
    input_ids: torch.Tensor  # [B, L], right-padded
    attention_mask: torch.Tensor
    labels: torch.Tensor
    vision: VisionInputs  # all images of the batch, in sample order
    token_types: dict[str, torch.Tensor]  # the family's extra per-token inputs (Qwen-VL media token types)
    sam_pixels: torch.Tensor  # [B, 3, S, S]
    masks: list[torch.Tensor]
    valid: list[torch.Tensor | None]
    seg_token_id: int

    def model_inputs(self, device: torch.device, dtype: torch.dtype) -> dict:
        """Keyword arguments of `SegChatModel.forward`, on `device` (VLM pixels in `dtype`)."""
        tensors = {"input_ids": self.input_ids, "attention_mask": self.attention_mask, "labels": self.labels,
                   **self.token_types}
        return {**{k: v.to(device) for k, v in tensors.items()}, **self.vision.to(device, dtype).tensors,
                "sam_pixel_values": self.sam_pixels, "masks": self.masks, "mask_valid": self.valid,
                "seg_token_id": self.seg_token_id}


def encode_example(processor: SegChatProcessor, sample: Sample) -> Example:
    """One image sample as a teacher-forced turn: the prompt as at inference, then the answer with labels."""
    if sample.answer is None:
        raise DatasetError(sample.media_path, "a training sample needs an answer")
    if any(m.ndim != 2 for m in sample.masks):
        raise DatasetError(sample.media_path, "video samples cannot be trained on yet (image samples only)")
    image = load_image(sample.media_path, processor.limits.media)
    vision = processor.encode_images([image])
    prompt = processor.conversation_start() + processor.user_turn(sample.instruction, vision)
    # Answers are markup written by the dataset's authors: [SEG], <p> and </p> become their special tokens.
    prompts = processor.prompts
    answer = prompts.control(sample.answer) + prompts.end_ids
    n_seg = answer.count(processor.seg_token_id)
    if n_seg != len(sample.masks):
        raise DatasetError(sample.media_path, f"answer has {n_seg} [SEG] tokens but {len(sample.masks)} masks")
    size = (image.height, image.width)
    for mask in sample.masks:
        if mask.shape != size:
            raise DatasetError(sample.media_path, f"mask size {list(mask.shape)} != image size {list(size)}")
    masks = torch.from_numpy(np.stack(sample.masks)).float() if sample.masks else torch.zeros(0, *size)
    valid = None if sample.ignore is None else torch.from_numpy(~sample.ignore).float()
    pixels = processor.sam_pixels(image)
    return Example(prompt + answer, [IGNORE_INDEX] * len(prompt) + answer, vision, pixels, masks, valid)


def collate(examples: list[Example], processor: SegChatProcessor) -> Batch:
    length = max(len(e.input_ids) for e in examples)

    def pad(rows: list[list[int]], value: int) -> torch.Tensor:
        return torch.tensor([r + [value] * (length - len(r)) for r in rows])

    ids = [e.input_ids for e in examples]
    vision = VisionInputs.concat([e.vision for e in examples])
    input_ids = pad(ids, processor.tokenizer.pad_token_id)
    return Batch(input_ids, pad([[1] * len(r) for r in ids], 0), pad([e.labels for e in examples], IGNORE_INDEX),
                 vision, processor.family.token_types(input_ids), torch.cat([e.sam_pixels for e in examples]),
                 [e.masks for e in examples], [e.valid for e in examples], processor.seg_token_id)


class ExampleDataset(torch.utils.data.Dataset):
    """Samples encoded on access; `cache=True` keeps them (small data sets, many epochs)."""

    def __init__(self, processor: SegChatProcessor, samples, cache: bool = False):
        self.processor = processor
        self.samples = samples
        self._cache: dict[int, Example] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Example:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        example = encode_example(self.processor, self.samples[index])
        if self._cache is not None:
            self._cache[index] = example
        return example
