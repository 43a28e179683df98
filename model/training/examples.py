"""Teacher-forced training examples: prompt + answer ids with labels, VLM and SAM2 pixels, target masks."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from model.data.sample import DatasetError, Sample
from model.families import VisionInputs
from model.media.image import load_image
from model.preprocess import sam2_pixels

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
    sam_pixels: torch.Tensor  # [B, 3, S, S]
    masks: list[torch.Tensor]
    valid: list[torch.Tensor | None]


def encode_example(chat, sample: Sample) -> Example:
    """`chat` is a `SegChat`; its prompt builder and family lay out the turn exactly as at inference."""
    if sample.answer is None:
        raise DatasetError(sample.media_path, "a training sample needs an answer")
    if any(m.ndim != 2 for m in sample.masks):
        raise DatasetError(sample.media_path, "video samples cannot be trained on yet (image samples only)")
    image = load_image(sample.media_path, chat.limits.media)
    vision = chat.family.encode_images([image])
    prompts = chat.prompts
    prompt = prompts.system_turn(chat.system_prompt) + prompts.user_turn(sample.instruction,
                                                                         prompts.media_block(vision.runs))
    # Answers are markup written by the dataset's authors: [SEG], <p> and </p> become their special tokens.
    answer = prompts.control(sample.answer) + prompts.stop_ids[:1]
    n_seg = answer.count(chat.seg_token_id)
    if n_seg != len(sample.masks):
        raise DatasetError(sample.media_path, f"answer has {n_seg} [SEG] tokens but {len(sample.masks)} masks")
    size = (image.height, image.width)
    for mask in sample.masks:
        if mask.shape != size:
            raise DatasetError(sample.media_path, f"mask size {list(mask.shape)} != image size {list(size)}")
    masks = torch.from_numpy(np.stack(sample.masks)).float() if sample.masks else torch.zeros(0, *size)
    valid = None if sample.ignore is None else torch.from_numpy(~sample.ignore).float()
    pixels = sam2_pixels(image, mode=chat.model.config.pixel_mode("image"), size=chat.model.sam2.config.image_size)
    return Example(prompt + answer, [IGNORE_INDEX] * len(prompt) + answer, vision, pixels, masks, valid)


def collate(examples: list[Example], pad_id: int) -> Batch:
    length = max(len(e.input_ids) for e in examples)

    def pad(rows: list[list[int]], value: int) -> torch.Tensor:
        return torch.tensor([r + [value] * (length - len(r)) for r in rows])

    ids = [e.input_ids for e in examples]
    keys = examples[0].vision.tensors.keys()
    vision = VisionInputs([run for e in examples for run in e.vision.runs],
                          {k: torch.cat([e.vision.tensors[k] for e in examples]) for k in keys})
    return Batch(pad(ids, pad_id), pad([[1] * len(r) for r in ids], 0), pad([e.labels for e in examples], IGNORE_INDEX),
                 vision, torch.cat([e.sam_pixels for e in examples]), [e.masks for e in examples],
                 [e.valid for e in examples])


class ExampleDataset(torch.utils.data.Dataset):
    """Samples encoded on access; `cache=True` keeps them (small data sets, many epochs)."""

    def __init__(self, chat, samples, cache: bool = False):
        self.chat = chat
        self.samples = samples
        self._cache: dict[int, Example] | None = {} if cache else None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> Example:
        if self._cache is not None and index in self._cache:
            return self._cache[index]
        example = encode_example(self.chat, self.samples[index])
        if self._cache is not None:
            self._cache[index] = example
        return example
