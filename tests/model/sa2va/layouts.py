"""Tiny checkpoints in the published Sa2VA layouts (`model.sa2va.published`): a release's config.json with tiny
widths and two layers (every field name and every other value as published), SAM2 as Hiera-T with narrow widths
(official tensor names), and a tokenizer with the release's added tokens: trained in-process for the Qwen2.5 and
Phi-3 language models, the InternLM2 fixture for InternLM2."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tokenizers import AddedToken
from transformers import PreTrainedTokenizerBase

from model.internlm2_tokenizer import load_tokenizer
from model.sa2va.published import Sam2Dims, write_checkpoint
from model.tiny import build_tokenizer

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures"
INTERNLM2_TOKENIZER = FIXTURES / "internlm2_tokenizer"

TINY_VISION = {"hidden_size": 32, "intermediate_size": 64, "num_attention_heads": 2, "num_hidden_layers": 2}
TINY_TEXT = {"hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_key_value_heads": 2,
             "num_hidden_layers": 2}
# Hiera-T's block layout (the converter knows the official variants), 16 wide, with a 64-wide decoder and memory
# (transformers' SAM2 fixes the memory width at 64, and object pointers must be at least as wide)
TINY_SAM2 = Sam2Dims(trunk_width=16, blocks_per_stage=(1, 2, 7, 2), width=64, decoder_mlp=64, iou_head=32,
                     memory_layers=1, memory_mlp=64, fuser_layers=1)

# Added tokens of InternVL's tokenizers beyond the chat tokens, Sa2VA's own, and Phi-3's chat tokens.
INTERNVL_TOKENS = ["<img>", "</img>", "<IMG_CONTEXT>", "<quad>", "</quad>", "<ref>", "</ref>", "<box>", "</box>"]
SA2VA_TOKENS = ["[SEG]", "<p>", "</p>", "<vp>", "</vp>"]
PHI3_TOKENS = ["<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>"]


def release_tokenizer(llm: dict) -> PreTrainedTokenizerBase:
    """A small tokenizer with the added tokens of a release whose language model is `llm` (its `llm_config`)."""
    if llm["model_type"] == "internlm2":
        return load_tokenizer(INTERNLM2_TOKENIZER)
    tokenizer = build_tokenizer("internvl")  # Qwen2.5's chat tokens, eos <|im_end|>
    extra = INTERNVL_TOKENS + SA2VA_TOKENS + (PHI3_TOKENS if llm["model_type"] == "phi3" else [])
    present = {t.content for t in tokenizer.added_tokens_decoder.values()}
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in extra if t not in present],
                         special_tokens=True)
    if llm["model_type"] == "phi3":
        tokenizer.eos_token = "<|endoftext|>"
    return tokenizer


def tiny_config(config: dict, tokenizer: PreTrainedTokenizerBase) -> dict:
    """An InternVL-flavour release config with tiny widths, two layers and the tokenizer's vocabulary and ids."""
    config = json.loads(json.dumps(config))
    vision, llm = config["vision_config"], config["llm_config"]
    vision.update(TINY_VISION)
    llm.update(TINY_TEXT, vocab_size=len(tokenizer))
    for field, token_id in (("bos_token_id", tokenizer.bos_token_id), ("eos_token_id", tokenizer.eos_token_id),
                            ("pad_token_id", tokenizer.pad_token_id)):
        if field in llm:
            llm[field] = token_id
    if "layer_types" in llm:
        llm["layer_types"] = llm["layer_types"][:TINY_TEXT["num_hidden_layers"]]
    rope = llm.get("rope_scaling") or {}
    for factors in ("long_factor", "short_factor"):  # long RoPE: one factor per rotary dimension pair
        if factors in rope:
            rope[factors] = rope[factors][: TINY_TEXT["hidden_size"] // TINY_TEXT["num_attention_heads"] // 2]
    config["hidden_size"] = llm["hidden_size"]
    return config


def tiny_checkpoint(dst: Path, config: dict, seed: int = 0) -> Path:
    """A random bf16 checkpoint in the layout of `config` (a release's config.json), tiny; returns `dst`."""
    tokenizer = release_tokenizer(config["llm_config"])
    return write_checkpoint(dst, tiny_config(config, tokenizer), tokenizer, torch.bfloat16, sam2=TINY_SAM2,
                            seed=seed)
