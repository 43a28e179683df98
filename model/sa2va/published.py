"""The published Sa2VA checkpoints as data, and a writer of checkpoints in their layout at any width and depth.

`RELEASES` holds one entry per published checkpoint: its `config.json` (the field names and values of its Hugging Face
repository, `auto_map` included) and the dtype its weights are stored in. `official_shapes` gives every tensor name
and shape such a config implies, in the official code's names (InternViT, the language models' own names, SAM2 as
facebookresearch/sam2 names it, the [SEG] projector); `write_checkpoint` writes a folder in that layout with zero or
random weights and a tokenizer. Nothing here converts or loads a checkpoint (`model.sa2va.convert` does): the tests
build tiny checkpoints in each release's layout with it, `bench.bench_load` real-width ones at reduced depth.

What the configs say that was not read from the releases themselves:
- `vocab_size`: the base model's tokenizer length plus Sa2VA's five added tokens (`[SEG]`, `<p>`, `</p>`, `<vp>`,
  `</vp>`), as Sa2VA resizes the embeddings to its tokenizer (the Qwen3-VL-4B release's 151,674 rows follow this).
- Output heads: stored in every release (`tie_word_embeddings` false), as in the InternVL2.5 / InternVL3 base models
  and the Sa2VA-Qwen3-VL-4B release (18.8 GiB in fp32 only with an untied head).
- Storage dtype: bf16 for the InternVL-based releases (their configs say `torch_dtype: bfloat16`), fp32 for the
  Qwen-VL ones (measured for Sa2VA-Qwen3-VL-4B; assumed for the others).
- Phi-3's long-RoPE factors (`PHI3_MINI_128K`, used by no release) are placeholders of the right length.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase

from model.sa2va.convert.checkpoint import write_shards

SAM2_PREFIX = "grounding_encoder.sam2_model."
SA2VA_TOKENS = 5  # [SEG], <p>, </p>, <vp>, </vp>

_INTERNVL_AUTO_MAP = {"AutoConfig": "configuration_sa2va_chat.Sa2VAChatConfig",
                      "AutoModel": "modeling_sa2va_chat.Sa2VAChatModel",
                      "AutoModelForCausalLM": "modeling_sa2va_chat.Sa2VAChatModel"}
_QWEN_AUTO_MAP = {"AutoConfig": "configuration_sa2va_chat.Sa2VAChatConfigQwen",
                  "AutoModel": "modeling_sa2va_qwen.Sa2VAChatModelQwen",
                  "AutoModelForCausalLM": "modeling_sa2va_qwen.Sa2VAChatModelQwen"}


@dataclass(frozen=True)
class Sam2Dims:
    """SAM2's sizes (none of them is a config field of a Sa2VA checkpoint: SAM2 is built from its own yaml).
    Defaults: SAM2 Hiera-L as Sa2VA ships it (SAM2.0: no object-pointer temporal projection, no occlusion
    embedding)."""

    trunk_width: int = 144
    blocks_per_stage: tuple[int, ...] = (2, 6, 36, 4)
    first_window: int = 8  # the first stage's attention window (`pos_embed_window`)
    background: tuple[int, int] = (7, 7)  # `pos_embed`'s grid
    width: int = 256  # prompt encoder, mask decoder, memory attention
    memory: int = 64  # memory encoder output channels
    decoder_mlp: int = 2048
    iou_head: int = 256
    memory_layers: int = 4
    memory_mlp: int = 2048
    fuser_layers: int = 2
    maskmem: int = 7


HIERA_L = Sam2Dims()


@dataclass(frozen=True)
class Release:
    name: str  # as in the README's table, e.g. "Sa2VA-4B"
    config: dict  # config.json as published
    dtype: torch.dtype  # storage dtype of its safetensors
    sam2: Sam2Dims = field(default=HIERA_L)


# --- the configs ----------------------------------------------------------------------------------------------

INTERNVIT_300M = {
    "architectures": ["InternVisionModel"], "model_type": "intern_vit_6b", "hidden_size": 1024,
    "intermediate_size": 4096, "num_attention_heads": 16, "num_hidden_layers": 24, "image_size": 448,
    "patch_size": 14, "num_channels": 3, "qkv_bias": True, "qk_normalization": False, "norm_type": "layer_norm",
    "layer_norm_eps": 1e-06, "hidden_act": "gelu", "dropout": 0.0, "attention_dropout": 0.0, "drop_path_rate": 0.0,
    "initializer_factor": 1.0, "initializer_range": 0.02, "use_flash_attn": True, "torch_dtype": "bfloat16",
}
# InternViT-6B-448px-V2_5 (InternVL2.5-26B): RMSNorm, q/k normalisation, no qkv bias.
INTERNVIT_6B = dict(INTERNVIT_300M, hidden_size=3200, intermediate_size=12800, num_attention_heads=25,
                    num_hidden_layers=45, qkv_bias=False, qk_normalization=True, norm_type="rms_norm",
                    initializer_factor=0.1)
# InternVL3 ships InternViT-300M with its MoE-capable config class (the MoE switched off).
INTERNVIT_300M_V3 = dict(INTERNVIT_300M, _name_or_path="OpenGVLab/InternViT-6B-448px-V1-5", capacity_factor=1.2,
                         drop_path_rate=0.1, eval_capacity_factor=1.4, initializer_factor=0.1,
                         initializer_range=1e-10, laux_allreduce="all_nodes", moe_coeff_ratio=0.5,
                         moe_intermediate_size=768, moe_output_scale=4.0, noisy_gate_policy="RSample_before",
                         num_experts=8, num_routed_experts=4, num_shared_experts=4,
                         shared_expert_intermediate_size=3072, use_moe=False, use_residual=True, use_rts=False,
                         use_weighted_residual=False, use_flash_attn=False)


def _qwen2(hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int, **extra) -> dict:
    """A Qwen2.5 `llm_config` as InternVL2.5 / InternVL3 store it (tokenizer of 151,674 + 5 Sa2VA tokens)."""
    return {"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "hidden_size": hidden,
            "intermediate_size": intermediate, "num_hidden_layers": layers, "num_attention_heads": heads,
            "num_key_value_heads": kv_heads, "vocab_size": 151674 + SA2VA_TOKENS, "hidden_act": "silu",
            "rms_norm_eps": 1e-06, "rope_theta": 1000000.0, "max_position_embeddings": 32768,
            "sliding_window": 32768, "use_sliding_window": False, "max_window_layers": layers,
            "attention_dropout": 0.0, "initializer_range": 0.02, "bos_token_id": 151643, "eos_token_id": 151645,
            "tie_word_embeddings": False, "use_cache": True, "torch_dtype": "bfloat16", **extra}


def _qwen2_internvl3(hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int) -> dict:
    """InternVL3's Qwen2.5 `llm_config`: dynamic RoPE scaling, per-layer attention types, no sliding window."""
    return _qwen2(hidden, intermediate, layers, heads, kv_heads, max_window_layers=70, sliding_window=None,
                  rope_scaling={"factor": 2.0, "rope_type": "dynamic", "type": "dynamic"},
                  layer_types=["full_attention"] * layers, moe_config=None, use_bfloat16=True)


def _internlm2(hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int) -> dict:
    """An InternLM2.5 `llm_config` (remote-code model; tokenizer of 92,553 + 5 Sa2VA tokens)."""
    return {"architectures": ["InternLM2ForCausalLM"], "model_type": "internlm2",
            "auto_map": {"AutoConfig": "configuration_internlm2.InternLM2Config",
                         "AutoModel": "modeling_internlm2.InternLM2ForCausalLM",
                         "AutoModelForCausalLM": "modeling_internlm2.InternLM2ForCausalLM"},
            "hidden_size": hidden, "intermediate_size": intermediate, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_key_value_heads": kv_heads, "vocab_size": 92553 + SA2VA_TOKENS,
            "bias": False, "hidden_act": "silu", "rms_norm_eps": 1e-05, "rope_theta": 1000000,
            "rope_scaling": {"type": "dynamic", "factor": 2.0}, "max_position_embeddings": 32768,
            "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2, "pretraining_tp": 1,
            "attn_implementation": "eager", "initializer_range": 0.02, "tie_word_embeddings": False,
            "use_cache": True, "torch_dtype": "bfloat16"}


# InternVL2-4B's language model (Phi-3-mini-128k-instruct): the layout Sa2VA's 4B training config (`phi3_chat`)
# was first written for. No Sa2VA release uses it; the converter supports it.
PHI3_MINI_128K = {
    "architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "hidden_size": 3072, "intermediate_size": 8192,
    "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32, "vocab_size": 32020 + SA2VA_TOKENS,
    "hidden_act": "silu", "rms_norm_eps": 1e-05, "rope_theta": 10000.0, "max_position_embeddings": 131072,
    "original_max_position_embeddings": 4096, "sliding_window": 262144, "embd_pdrop": 0.0, "resid_pdrop": 0.0,
    "attention_dropout": 0.0, "rope_scaling": {"type": "su", "long_factor": [1.0] * 48, "short_factor": [1.0] * 48},
    "bos_token_id": 1, "eos_token_id": 32000, "pad_token_id": 32000, "initializer_range": 0.02,
    "tie_word_embeddings": False, "use_cache": True, "torch_dtype": "bfloat16",
}


def internvl_config(vision: dict, llm: dict, template: str) -> dict:
    """A Sa2VA InternVL-flavour config.json (`Sa2VAChatConfig`)."""
    return {"architectures": ["Sa2VAChatModel"], "auto_map": _INTERNVL_AUTO_MAP, "model_type": "sa2va_chat",
            "template": template, "vision_config": vision, "llm_config": llm, "hidden_size": llm["hidden_size"],
            "downsample_ratio": 0.5, "dynamic_image_size": True, "force_image_size": 448, "max_dynamic_patch": 12,
            "min_dynamic_patch": 1, "pad2square": False, "ps_version": "v2", "select_layer": -1,
            "use_thumbnail": True, "use_backbone_lora": 0, "use_llm_lora": 0, "tie_word_embeddings": False,
            "torch_dtype": "bfloat16", "transformers_version": None}


def _qwen2_5_vl(hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int) -> dict:
    """A Sa2VA-Qwen2.5-VL config.json: the text fields both flat and in `text_config` (transformers 4.57)."""
    text = {"model_type": "qwen2_5_vl_text", "hidden_size": hidden, "intermediate_size": intermediate,
            "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
            "vocab_size": 151665 + SA2VA_TOKENS, "hidden_act": "silu", "rms_norm_eps": 1e-06,
            "rope_theta": 1000000.0, "max_position_embeddings": 128000, "sliding_window": None,
            "use_sliding_window": False, "max_window_layers": 70, "layer_types": ["full_attention"] * layers,
            "rope_scaling": {"mrope_section": [16, 24, 24], "rope_type": "default", "type": "default"},
            "attention_dropout": 0.0, "initializer_range": 0.02, "bos_token_id": 151643, "eos_token_id": 151645,
            "use_cache": True}
    flat = {k: v for k, v in json.loads(json.dumps(text)).items()
            if k not in ("model_type", "layer_types", "max_window_layers")}
    vision = {"model_type": "qwen2_5_vl", "depth": 32, "hidden_size": 1280, "intermediate_size": 3420,
              "num_heads": 16, "out_hidden_size": hidden, "patch_size": 14, "spatial_merge_size": 2,
              "temporal_patch_size": 2, "tokens_per_second": 2, "window_size": 112,
              "fullatt_block_indexes": [7, 15, 23, 31], "hidden_act": "silu", "in_channels": 3,
              "initializer_range": 0.02}
    return {"architectures": ["Sa2VAChatModelQwen"], "auto_map": _QWEN_AUTO_MAP, "model_type": "sa2va_chat",
            "template": "qwen_chat", **flat, "text_config": text, "vision_config": vision,
            "image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
            "vision_end_token_id": 151653, "tie_word_embeddings": False, "dtype": "float32",
            "transformers_version": "4.57.0"}


def _qwen3_vl(hidden: int, intermediate: int, layers: int, heads: int) -> dict:
    """A Sa2VA-Qwen3-VL config.json (`Sa2VAChatConfigQwen`, a `Qwen3VLConfig`)."""
    text = {"model_type": "qwen3_vl_text", "hidden_size": hidden, "intermediate_size": intermediate,
            "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": 8, "head_dim": 128,
            "vocab_size": 151669 + SA2VA_TOKENS, "hidden_act": "silu", "rms_norm_eps": 1e-06,
            "rope_theta": 5000000, "max_position_embeddings": 262144, "attention_bias": False,
            "attention_dropout": 0.0, "initializer_range": 0.02, "bos_token_id": 151643, "eos_token_id": 151645,
            "rope_scaling": {"mrope_interleaved": True, "mrope_section": [24, 20, 20], "rope_type": "default"},
            "tie_word_embeddings": False, "use_cache": True, "dtype": "float32"}
    vision = {"model_type": "qwen3_vl", "depth": 24, "hidden_size": 1024, "intermediate_size": 4096,
              "num_heads": 16, "out_hidden_size": hidden, "patch_size": 16, "spatial_merge_size": 2,
              "temporal_patch_size": 2, "in_channels": 3, "num_position_embeddings": 2304,
              "deepstack_visual_indexes": [5, 11, 17], "hidden_act": "gelu_pytorch_tanh", "initializer_range": 0.02}
    return {"architectures": ["Sa2VAChatModelQwen"], "auto_map": _QWEN_AUTO_MAP, "model_type": "sa2va_chat",
            "template": "qwen_chat", "text_config": text, "vision_config": vision, "image_token_id": 151655,
            "video_token_id": 151656, "vision_start_token_id": 151652, "vision_end_token_id": 151653,
            "tie_word_embeddings": False, "dtype": "float32", "transformers_version": "4.57.0"}


def _releases() -> dict[str, Release]:
    bf16, fp32 = torch.bfloat16, torch.float32
    internvl = [
        ("Sa2VA-1B", INTERNVIT_300M, _qwen2(896, 4864, 24, 14, 2), "qwen_chat"),
        # Sa2VA's 4B training config keeps the `phi3_chat` template of its InternVL2-4B origins on a Qwen2.5 model.
        ("Sa2VA-4B", INTERNVIT_300M, _qwen2(2048, 11008, 36, 16, 2), "phi3_chat"),
        ("Sa2VA-8B", INTERNVIT_300M, _internlm2(4096, 14336, 32, 32, 8), "internlm2_chat"),
        ("Sa2VA-26B", INTERNVIT_6B, _internlm2(6144, 16384, 48, 48, 8), "internlm2_chat"),
        ("Sa2VA-InternVL3-2B", INTERNVIT_300M_V3, _qwen2_internvl3(1536, 8960, 28, 12, 2), "qwen_chat"),
        ("Sa2VA-InternVL3-8B", INTERNVIT_300M_V3, _qwen2_internvl3(3584, 18944, 28, 28, 4), "qwen_chat"),
        ("Sa2VA-InternVL3-14B", INTERNVIT_300M_V3, _qwen2_internvl3(5120, 13824, 48, 40, 8), "qwen_chat"),
    ]
    releases = [Release(name, internvl_config(vision, llm, template), bf16)
                for name, vision, llm, template in internvl]
    releases += [
        Release("Sa2VA-Qwen2.5-VL-3B", _qwen2_5_vl(2048, 11008, 36, 16, 2), fp32),
        Release("Sa2VA-Qwen2.5-VL-7B", _qwen2_5_vl(3584, 18944, 28, 28, 4), fp32),
        Release("Sa2VA-Qwen3-VL-2B", _qwen3_vl(2048, 6144, 28, 16), fp32),
        Release("Sa2VA-Qwen3-VL-4B", _qwen3_vl(2560, 9728, 36, 32), fp32),
    ]
    return {r.name: r for r in releases}


RELEASES = _releases()


def with_depth(config: dict, text_layers: int, vision_layers: int) -> dict:
    """`config` with `text_layers` language-model and `vision_layers` vision layers (everything else as is; layer
    lists and layer indexes cut to the new depth)."""
    config = json.loads(json.dumps(config))
    if "llm_config" in config:
        text, vision = config["llm_config"], config["vision_config"]
        vision["num_hidden_layers"] = vision_layers
    else:
        text, vision = config["text_config"], config["vision_config"]
        vision["depth"] = vision_layers
        for key in ("fullatt_block_indexes", "deepstack_visual_indexes"):
            if key in vision:
                vision[key] = [i for i in vision[key] if i < vision_layers] or [vision_layers - 1]
        if "num_hidden_layers" in config:  # the flat copy of the text fields
            config["num_hidden_layers"] = text_layers
    text["num_hidden_layers"] = text_layers
    if "layer_types" in text:
        text["layer_types"] = text["layer_types"][:text_layers]
    return config


# --- tensor names and shapes ----------------------------------------------------------------------------------


def official_shapes(config: dict, sam2: Sam2Dims = HIERA_L) -> dict[str, tuple[int, ...]]:
    """Every tensor of a Sa2VA checkpoint with this config.json, by its official name, with its shape."""
    config = json.loads(json.dumps(config))  # transformers' config classes rewrite the dicts they are given
    if "llm_config" in config:
        shapes = {**_internvit_shapes(config), **_llm_shapes(config["llm_config"])}
        hidden = config["llm_config"]["hidden_size"]
    else:
        shapes = _qwen_vl_shapes(config)
        hidden = config["text_config"]["hidden_size"]
    shapes.update({SAM2_PREFIX + k: v for k, v in sam2_shapes(sam2).items()})
    shapes.update({"text_hidden_fcs.0.weight": (hidden, hidden), "text_hidden_fcs.0.bias": (hidden,),
                   "text_hidden_fcs.2.weight": (sam2.width, hidden), "text_hidden_fcs.2.bias": (sam2.width,)})
    return shapes


def _internvit_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """InternViT (`vision_model.*`) and the `mlp1` projector, as InternVL's remote code names them."""
    vc = config["vision_config"]
    width, inner, patch = vc["hidden_size"], vc["intermediate_size"], vc["patch_size"]
    image = config.get("force_image_size") or vc["image_size"]
    out = {"vision_model.embeddings.class_embedding": (1, 1, width),
           "vision_model.embeddings.patch_embedding.weight": (width, vc.get("num_channels", 3), patch, patch),
           "vision_model.embeddings.patch_embedding.bias": (width,),
           "vision_model.embeddings.position_embedding": (1, (image // patch) ** 2 + 1, width)}
    norm_bias = vc["norm_type"] == "layer_norm"
    for i in range(vc["num_hidden_layers"]):
        p = f"vision_model.encoder.layers.{i}."
        out.update({p + "attn.qkv.weight": (3 * width, width), p + "attn.proj.weight": (width, width),
                    p + "attn.proj.bias": (width,), p + "ls1": (width,), p + "ls2": (width,),
                    p + "mlp.fc1.weight": (inner, width), p + "mlp.fc1.bias": (inner,),
                    p + "mlp.fc2.weight": (width, inner), p + "mlp.fc2.bias": (width,),
                    p + "norm1.weight": (width,), p + "norm2.weight": (width,)})
        if vc["qkv_bias"]:
            out[p + "attn.qkv.bias"] = (3 * width,)
        if vc["qk_normalization"]:
            out.update({p + "attn.q_norm.weight": (width,), p + "attn.k_norm.weight": (width,)})
        if norm_bias:
            out.update({p + "norm1.bias": (width,), p + "norm2.bias": (width,)})
    merged = width * int(1 / config["downsample_ratio"]) ** 2
    hidden = config["llm_config"]["hidden_size"]
    out.update({"mlp1.0.weight": (merged,), "mlp1.0.bias": (merged,), "mlp1.1.weight": (hidden, merged),
                "mlp1.1.bias": (hidden,), "mlp1.3.weight": (hidden, hidden), "mlp1.3.bias": (hidden,)})
    return out


def _llm_shapes(llm: dict) -> dict[str, tuple[int, ...]]:
    """The language model (`language_model.*`); the head is left out when the config ties it."""
    if llm["model_type"] == "internlm2":
        shapes = _internlm2_shapes(llm)
    else:  # Qwen2, Phi-3, Llama: the remote code uses transformers' own module names
        from accelerate import init_empty_weights
        from transformers import AutoConfig, AutoModelForCausalLM

        # RoPE settings change no tensor (and transformers refuses Phi-3's legacy "su" name for long RoPE)
        fields = {k: v for k, v in llm.items() if k not in ("architectures", "model_type", "auto_map", "rope_scaling")}
        with init_empty_weights():
            model = AutoModelForCausalLM.from_config(AutoConfig.for_model(llm["model_type"], **fields))
        shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if llm.get("tie_word_embeddings"):
        shapes = {k: v for k, v in shapes.items() if k not in ("lm_head.weight", "output.weight")}
    return {"language_model." + k: v for k, v in shapes.items()}


def _internlm2_shapes(llm: dict) -> dict[str, tuple[int, ...]]:
    hidden, inner, vocab = llm["hidden_size"], llm["intermediate_size"], llm["vocab_size"]
    heads, kv_heads = llm["num_attention_heads"], llm["num_key_value_heads"]
    head_dim = hidden // heads
    out = {"model.tok_embeddings.weight": (vocab, hidden), "model.norm.weight": (hidden,),
           "output.weight": (vocab, hidden)}
    for i in range(llm["num_hidden_layers"]):
        p = f"model.layers.{i}."
        out.update({p + "attention.wqkv.weight": ((heads + 2 * kv_heads) * head_dim, hidden),
                    p + "attention.wo.weight": (hidden, heads * head_dim),
                    p + "feed_forward.w1.weight": (inner, hidden), p + "feed_forward.w3.weight": (inner, hidden),
                    p + "feed_forward.w2.weight": (hidden, inner), p + "attention_norm.weight": (hidden,),
                    p + "ffn_norm.weight": (hidden,)})
    return out


def _qwen_vl_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    """The whole Qwen-VL ForConditionalGeneration under `model.` (Sa2VA wraps it), built on the meta device."""
    from accelerate import init_empty_weights
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration, Qwen3VLConfig, \
        Qwen3VLForConditionalGeneration

    qwen3 = config["vision_config"]["model_type"] == "qwen3_vl"
    config_cls, model_cls = ((Qwen3VLConfig, Qwen3VLForConditionalGeneration) if qwen3
                             else (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration))
    keep = ("text_config", "vision_config", "image_token_id", "video_token_id", "vision_start_token_id",
            "vision_end_token_id", "tie_word_embeddings")
    with init_empty_weights():
        model = model_cls(config_cls(**{k: v for k, v in config.items() if k in keep}))
    shapes = {"model." + k: tuple(v.shape) for k, v in model.state_dict().items()}
    if config.get("tie_word_embeddings"):
        shapes.pop("model.lm_head.weight")
    return shapes


def sam2_shapes(dims: Sam2Dims) -> dict[str, tuple[int, ...]]:
    """SAM2's tensors as facebookresearch/sam2 names them (relative to the SAM2 module)."""
    d, mem = dims.width, dims.memory
    out: dict[str, tuple[int, ...]] = {}

    def linear(name: str, rows: int, cols: int) -> None:
        out[name + ".weight"], out[name + ".bias"] = (rows, cols), (rows,)

    def norm(name: str, width: int) -> None:
        out[name + ".weight"], out[name + ".bias"] = (width,), (width,)

    def conv(name: str, rows: int, cols: int, kernel: int) -> None:
        out[name + ".weight"], out[name + ".bias"] = (rows, cols, kernel, kernel), (rows,)

    def mlp(name: str, sizes: list[int]) -> None:
        for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
            linear(f"{name}.layers.{i}", b, a)

    # Hiera trunk and FPN neck
    trunk, w = "image_encoder.trunk.", dims.trunk_width
    conv(trunk + "patch_embed.proj", w, 3, 7)
    out[trunk + "pos_embed"] = (1, w, *dims.background)
    out[trunk + "pos_embed_window"] = (1, w, dims.first_window, dims.first_window)
    block, dim_in = 0, w
    for stage, blocks in enumerate(dims.blocks_per_stage):
        dim = w * 2**stage
        for _ in range(blocks):
            p = f"{trunk}blocks.{block}."
            norm(p + "norm1", dim_in)
            linear(p + "attn.qkv", 3 * dim, dim_in)
            linear(p + "attn.proj", dim, dim)
            norm(p + "norm2", dim)
            mlp(p + "mlp", [dim, 4 * dim, dim])
            if dim_in != dim:
                linear(p + "proj", dim, dim_in)
            block, dim_in = block + 1, dim
    for i, channels in enumerate(reversed([w * 2**s for s in range(len(dims.blocks_per_stage))])):
        conv(f"image_encoder.neck.convs.{i}.conv", d, channels, 1)
    # prompt encoder
    pe = "sam_prompt_encoder."
    out[pe + "pe_layer.positional_encoding_gaussian_matrix"] = (2, d // 2)
    for name in ("point_embeddings.0", "point_embeddings.1", "point_embeddings.2", "point_embeddings.3",
                 "not_a_point_embed", "no_mask_embed"):
        out[pe + name + ".weight"] = (1, d)
    conv(pe + "mask_downscaling.0", 4, 1, 2)
    norm(pe + "mask_downscaling.1", 4)
    conv(pe + "mask_downscaling.3", 16, 4, 2)
    norm(pe + "mask_downscaling.4", 16)
    conv(pe + "mask_downscaling.6", d, 16, 1)
    # mask decoder: two-way transformer (cross attention at half width), heads, upscaling
    md = "sam_mask_decoder."

    def attention(name: str, inner: int, kv_width: int = d) -> None:
        linear(name + ".q_proj", inner, d)
        linear(name + ".k_proj", inner, kv_width)
        linear(name + ".v_proj", inner, kv_width)
        linear(name + ".out_proj", d, inner)

    for i in range(2):
        p = f"{md}transformer.layers.{i}."
        attention(p + "self_attn", d)
        attention(p + "cross_attn_token_to_image", d // 2)
        attention(p + "cross_attn_image_to_token", d // 2)
        mlp(p + "mlp", [d, dims.decoder_mlp, d])
        for n in range(1, 5):
            norm(f"{p}norm{n}", d)
    attention(md + "transformer.final_attn_token_to_image", d // 2)
    norm(md + "transformer.norm_final_attn", d)
    out.update({md + "iou_token.weight": (1, d), md + "mask_tokens.weight": (4, d),
                md + "obj_score_token.weight": (1, d)})
    out[md + "output_upscaling.0.weight"], out[md + "output_upscaling.0.bias"] = (d, d // 4, 2, 2), (d // 4,)
    norm(md + "output_upscaling.1", d // 4)
    out[md + "output_upscaling.3.weight"], out[md + "output_upscaling.3.bias"] = (d // 4, d // 8, 2, 2), (d // 8,)
    conv(md + "conv_s0", d // 8, d, 1)
    conv(md + "conv_s1", d // 4, d, 1)
    for i in range(4):
        mlp(f"{md}output_hypernetworks_mlps.{i}", [d, d, d, d // 8])
    mlp(md + "iou_prediction_head", [d, dims.iou_head, dims.iou_head, 4])
    mlp(md + "pred_obj_score_head", [d, d, d, 1])
    # memory attention, memory encoder, object pointers
    for i in range(dims.memory_layers):
        p = f"memory_attention.layers.{i}."
        attention(p + "self_attn", d)
        attention(p + "cross_attn_image", d, mem)
        linear(p + "linear1", dims.memory_mlp, d)
        linear(p + "linear2", d, dims.memory_mlp)
        for n in range(1, 4):
            norm(f"{p}norm{n}", d)
    norm("memory_attention.norm", d)
    me = "memory_encoder."
    channels = 1
    for stage in range(4):  # stride-2 convs, each with a LayerNorm2d (and a GELU without weights)
        conv(f"{me}mask_downsampler.encoder.{3 * stage}", channels * 4, channels, 3)
        norm(f"{me}mask_downsampler.encoder.{3 * stage + 1}", channels * 4)
        channels *= 4
    conv(f"{me}mask_downsampler.encoder.12", d, channels, 1)
    conv(me + "pix_feat_proj", d, d, 1)
    for i in range(dims.fuser_layers):
        p = f"{me}fuser.layers.{i}."
        out[p + "dwconv.weight"], out[p + "dwconv.bias"] = (d, 1, 7, 7), (d,)
        norm(p + "norm", d)
        linear(p + "pwconv1", 4 * d, d)
        linear(p + "pwconv2", d, 4 * d)
        out[p + "g_weight"] = (d,)
    conv(me + "out_proj", mem, d, 1)
    out.update({"maskmem_tpos_enc": (dims.maskmem, 1, 1, mem), "no_mem_embed": (1, 1, d),
                "no_mem_pos_enc": (1, 1, d), "no_obj_ptr": (1, d)})
    mlp("obj_ptr_proj", [d, d, d, d])
    conv("mask_downsample", 1, 1, 4)
    return out


# --- writing --------------------------------------------------------------------------------------------------


def write_checkpoint(dst: Path, config: dict, tokenizer: PreTrainedTokenizerBase, dtype: torch.dtype,
                     sam2: Sam2Dims = HIERA_L, seed: int | None = None,
                     shard_bytes: int = 4 * 1024**3) -> Path:
    """A Sa2VA checkpoint folder in the official layout: `config.json`, the tokenizer's files and the weights of
    `official_shapes(config, sam2)` in `dtype`, sharded with an index, one shard in memory at a time. Weights are
    zeros (`seed` None: for sizes and memory) or random normal with std 0.05 (for a model that runs)."""
    generator = None if seed is None else torch.Generator().manual_seed(seed)

    def tensor(shape: tuple[int, ...]) -> torch.Tensor:
        if generator is None:
            return torch.zeros(shape, dtype=dtype)
        return (torch.randn(shape, generator=generator) * 0.05).to(dtype)

    dst.mkdir(parents=True)
    shapes = official_shapes(config, sam2)
    write_shards(((key, tensor(shape)) for key, shape in shapes.items()), dst, shard_bytes)
    (dst / "config.json").write_text(json.dumps(config, indent=2))
    tokenizer.save_pretrained(dst)
    return dst
