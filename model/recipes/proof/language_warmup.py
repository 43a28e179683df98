"""Language warm-up for the proof of learning: the language model first learns to reason over the listing, in text.

Every synthetic answer opens with a listing of the scene ("From left to right: a red square, a small blue circle
...") and reasons from it to the target. The main training teaches both at once from a few thousand scenes, and
the tiny language model memorised those answers instead of learning the reasoning (held-out conclusions were often
wrong under a correct listing). Reasoning from a listing needs no image, and text-only steps cost a small part of
a full step (no vision tower, no SAM2), so this stage shows the language model many more scenes: the prompt is
the instruction without an image, the listing is given, and the loss is on the reasoning only. The scenes come
from the training stream (same seed); held-out scenes are never seen.

Next-token prediction alone leaves the `[SEG]` hidden states blind to what they stand for (after it, the target's
colour explained 3 % of their variance), and the main training then had to teach the mask path and those states
at once, which failed for one seed of two. So a throw-away linear head also reads each `[SEG]` state and must name
the words of the grounded phrase before it (`<p>the blue square</p> [SEG]`): the states leave this stage saying
which object they mean, as the mask decoder will need.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import get_cosine_schedule_with_warmup

from model.loading import load_model_and_processor
from model.processing import SegChatProcessor
from model.recipes.proof.warmup import train_and_save
from model.training.examples import IGNORE_INDEX

WARMUP_LOG = "language_warmup.jsonl"


class ReasoningText(NamedTuple):
    instruction: str
    listing: str  # given, not learned: it stands for what the image shows
    reasoning: str  # learned: the answer after the listing, with its [SEG] markup


def encode_reasoning(processor: SegChatProcessor, text: ReasoningText) -> tuple[list[int], list[int]]:
    """Ids and labels of one text-only turn; laid out as a training answer `listing + " " + reasoning`."""
    prompts = processor.prompts
    context = processor.conversation_start() + processor.user_turn(text.instruction)
    context += prompts.control(text.listing)
    target = prompts.control(" " + text.reasoning) + prompts.end_ids
    return context + target, [IGNORE_INDEX] * len(context) + target


def grounded_phrases(processor: SegChatProcessor, ids: list[int]) -> list[list[int]]:
    """Per `[SEG]` in `ids`, the token ids of the phrase between the `<p>` and `</p>` right before it."""
    convert = processor.tokenizer.convert_tokens_to_ids
    opening, closing = convert("<p>"), convert("</p>")
    phrases = []
    for k, token in enumerate(ids):
        if token == processor.seg_token_id:
            end = max(i for i in range(k) if ids[i] == closing)
            start = max(i for i in range(end) if ids[i] == opening)
            phrases.append(ids[start + 1:end])
    return phrases


def _phrase_loss(head: nn.Linear, states: torch.Tensor,
                 phrases: list[list[int]]) -> tuple[torch.Tensor, float]:
    """Cross-entropy of every phrase token read from its [SEG] state (a bag of words: its minimum is the mean
    log phrase length), and the share of phrase tokens among each state's top-n words (n: the phrase's length)."""
    logits = head(states)
    rows = torch.tensor([k for k, phrase in enumerate(phrases) for _ in phrase])
    words = torch.tensor([token for phrase in phrases for token in phrase])
    found = sum(len(set(logits[k].topk(len(p)).indices.tolist()) & set(p)) for k, p in enumerate(phrases))
    return F.cross_entropy(logits[rows], words), found / len(words)


def _batch(rows: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, torch.Tensor]:
    length = max(len(ids) for ids, _ in rows)
    ids = torch.tensor([ids + [pad_id] * (length - len(ids)) for ids, _ in rows])
    labels = torch.tensor([labels + [IGNORE_INDEX] * (length - len(labels)) for _, labels in rows])
    attention = torch.tensor([[1] * len(ids_) + [0] * (length - len(ids_)) for ids_, _ in rows])
    return {"input_ids": ids, "attention_mask": attention, "labels": labels}


def warm_up_language(model_dir: str | Path, out_dir: str | Path, texts: Sequence[ReasoningText], steps: int,
                     batch_size: int = 32, lr: float = 1e-3, seed: int = 0, log_every: int = 100,
                     progress: bool = True) -> Path:
    """Copy the model in `model_dir` to `out_dir` with its language model trained on `texts`' reasoning.

    Everything but the vision tower trains (AdamW, 100 warm-up steps, cosine decay) on the reasoning's cross-entropy
    plus the phrase loss of its [SEG] states. Also writes `<out_dir>/language_warmup.jsonl`: the reasoning's loss and
    next-token accuracy and the [SEG] states' phrase accuracy, means over `log_every` steps.
    Returns `out_dir`.
    """
    torch.manual_seed(seed)
    model, processor = load_model_and_processor(model_dir, device="cpu", dtype="fp32")
    vlm = model.vlm
    head = nn.Linear(vlm.config.text_config.hidden_size, len(processor.tokenizer))
    params = [p for name, p in vlm.named_parameters() if not name.startswith("model.visual.")]
    params += list(head.parameters())
    optimizer = torch.optim.AdamW(params, lr=lr)
    scheduler = get_cosine_schedule_with_warmup(optimizer, min(100, steps // 10), steps)
    rows = [encode_reasoning(processor, text) for text in texts]
    phrases = [grounded_phrases(processor, ids) for ids, _ in rows]
    rng = np.random.default_rng(seed)
    vlm.train()

    def step() -> dict[str, float]:
        picked = rng.integers(0, len(rows), batch_size)
        batch = _batch([rows[i] for i in picked], processor.tokenizer.pad_token_id)
        with model.seg_capture(processor.seg_token_id, skip_first=False, keep_graph=True) as capture:
            out = vlm(**batch, **processor.family.token_types(batch["input_ids"]))
        phrase_loss, phrase_acc = _phrase_loss(head, capture.stacked(), [p for i in picked for p in phrases[i]])
        optimizer.zero_grad()
        (out.loss + phrase_loss).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        scheduler.step()
        labels = batch["labels"][:, 1:]
        scored = labels != IGNORE_INDEX
        hits = (out.logits[:, :-1].argmax(-1) == labels)[scored]
        return {"loss": out.loss.item(), "token_acc": hits.float().mean().item(), "phrase_acc": phrase_acc}

    return train_and_save(model, model_dir, out_dir, WARMUP_LOG, step, steps, log_every, "language warm-up",
                          progress)
