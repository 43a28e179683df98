"""Sa2VA InternVL-flavour keys (InternViT + mlp1 + LLM) -> `InternVLForConditionalGeneration` keys."""

from __future__ import annotations

import re

import torch

_VISION_RENAMES: list[tuple[str, str]] = [
    (r"^vision_model\.", "model.vision_tower."),
    (r"\.embeddings\.class_embedding$", ".embeddings.cls_token"),
    (r"\.embeddings\.position_embedding$", ".embeddings.position_embeddings"),
    (r"\.embeddings\.patch_embedding\.", ".embeddings.patch_embeddings.projection."),
    (r"\.encoder\.layers\.", ".encoder.layer."),
    (r"\.ls(\d)$", r".lambda_\1"),
    (r"\.attn\.proj\.", ".attention.projection_layer."),
    (r"\.attn\.", ".attention."),
    (r"\.norm1\.", ".layernorm_before."),
    (r"\.norm2\.", ".layernorm_after."),
]

_PROJECTOR = {"0": "layer_norm", "1": "linear_1", "3": "linear_2"}

# InternLM2 names -> Llama names (after the `language_model.model.` prefix is handled).
_INTERNLM2_RENAMES: list[tuple[str, str]] = [
    (r"\.tok_embeddings\.", ".embed_tokens."),
    (r"\.attention\.wo\.", ".self_attn.o_proj."),
    (r"\.feed_forward\.w1\.", ".mlp.gate_proj."),
    (r"\.feed_forward\.w3\.", ".mlp.up_proj."),
    (r"\.feed_forward\.w2\.", ".mlp.down_proj."),
    (r"\.attention_norm\.", ".input_layernorm."),
    (r"\.ffn_norm\.", ".post_attention_layernorm."),
]


def split_vit_qkv(key: str, tensor: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    """InternViT's fused `qkv` (rows q|k|v) -> q_proj, k_proj, v_proj."""
    q, k, v = tensor.chunk(3, dim=0)
    return [(key.replace(".qkv.", f".{name}."), part) for name, part in (("q_proj", q), ("k_proj", k), ("v_proj", v))]


def split_internlm2_wqkv(
    key: str, tensor: torch.Tensor, num_heads: int, num_kv_heads: int
) -> list[tuple[str, torch.Tensor]]:
    """InternLM2 `wqkv`: rows grouped per kv head as (q_0..q_{g-1}, k, v) -> q/k/v projections."""
    groups = num_heads // num_kv_heads
    head_dim = tensor.shape[0] // (num_kv_heads * (groups + 2))
    rest = tensor.shape[1:]
    grouped = tensor.reshape(num_kv_heads, groups + 2, head_dim, *rest)
    q = grouped[:, :groups].reshape(num_heads * head_dim, *rest)
    k = grouped[:, groups].reshape(num_kv_heads * head_dim, *rest)
    v = grouped[:, groups + 1].reshape(num_kv_heads * head_dim, *rest)
    base = key.replace(".attention.wqkv.", ".self_attn.{}.")
    return [(base.format("q_proj"), q), (base.format("k_proj"), k), (base.format("v_proj"), v)]


def convert_internvl_key(key: str, tensor: torch.Tensor, text_config: dict) -> list[tuple[str, torch.Tensor]]:
    """Native (unprefixed) InternVL keys for one Sa2VA tensor outside SAM2 and the [SEG] projector."""
    if key.startswith("vision_model."):
        new = key
        for pattern, repl in _VISION_RENAMES:
            new = re.sub(pattern, repl, new)
        if ".attention.qkv." in new:
            return split_vit_qkv(new, tensor)
        return [(new, tensor)]
    m = re.match(r"^mlp1\.(\d+)\.(.*)$", key)
    if m:
        return [(f"model.multi_modal_projector.{_PROJECTOR[m.group(1)]}.{m.group(2)}", tensor)]
    if key.startswith("language_model."):
        return _convert_llm_key(key[len("language_model.") :], tensor, text_config)
    raise KeyError(f"unexpected Sa2VA InternVL key: {key}")


def _convert_llm_key(key: str, tensor: torch.Tensor, text_config: dict) -> list[tuple[str, torch.Tensor]]:
    if key in ("lm_head.weight", "output.weight"):
        return [("lm_head.weight", tensor)]
    if not key.startswith("model."):
        raise KeyError(f"unexpected language-model key: {key}")
    new = "model.language_model." + key[len("model.") :]
    if ".attention.wqkv." in new:
        return split_internlm2_wqkv(
            new, tensor, text_config["num_attention_heads"], text_config["num_key_value_heads"]
        )
    for pattern, repl in _INTERNLM2_RENAMES:
        new = re.sub(pattern, repl, new)
    return [(new, tensor)]
