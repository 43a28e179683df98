"""Official Sa2VA checkpoints (remote-code layout) -> native transformers modules.

The only place that knows Sa2VA's config fields and key names (`layout` recognises them first). Three pure functions
(`convert_config`, `convert_state_dict`, `detect_flavour`) plus `load_sa2va_modules`, which builds
the native VLM, `Sam2VideoModel` and [SEG] projector from a checkpoint folder.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from accelerate import init_empty_weights
from safetensors import safe_open
from torch import Tensor, nn

from model.sa2va.convert.internvl_keys import convert_internvl_key
from model.sa2va.convert.sam2_keys import Sam2KeyConverter, sam2_config_from_shapes

SAM2_PREFIX = "grounding_encoder.sam2_model."
PROJECTOR_PREFIX = "text_hidden_fcs."
IMG_CONTEXT = "<IMG_CONTEXT>"

# Buffers the native modules recompute at construction; never copied.
_SKIPPED_SUFFIXES = ("rotary_emb.inv_freq", "pixel_mean", "pixel_std")

_QWEN_TEXT_TYPES = {"qwen3_vl": "qwen3_vl_text", "qwen2_5_vl": "qwen2_5_vl_text"}
_META_KEYS = {"auto_map", "architectures", "model_type", "template", "transformers_version", "_name_or_path"}


def detect_flavour(config: dict) -> str:
    """"internvl", "qwen2_5_vl" or "qwen3_vl" for a Sa2VA config; ValueError otherwise."""
    archs = config.get("architectures") or []
    is_sa2va = config.get("model_type") == "sa2va_chat" or any(a.startswith("Sa2VAChatModel") for a in archs)
    if not is_sa2va:
        raise ValueError(f"not a Sa2VA config (model_type={config.get('model_type')!r}, architectures={archs})")
    if "llm_config" in config and "vision_config" in config:
        return "internvl"
    vision = config.get("vision_config") or {}
    text = config.get("text_config") or {}
    if vision.get("model_type") == "qwen3_vl" or text.get("model_type") == "qwen3_vl_text":
        return "qwen3_vl"
    if vision.get("model_type") in ("qwen2_5_vl", "qwen2_5_vl_vision") or text.get("model_type") == "qwen2_5_vl_text":
        return "qwen2_5_vl"
    raise ValueError(
        "Sa2VA config of an unsupported flavour: expected `llm_config` (InternVL) or a Qwen2.5-VL / Qwen3-VL "
        f"`vision_config`; got vision model_type={vision.get('model_type')!r}"
    )


def convert_config(config: dict, tensors_shapes: dict[str, tuple], image_token_id: int | None = None) -> dict:
    """Native configs and Sa2VA behaviour switches for one Sa2VA checkpoint.

    `tensors_shapes` maps every checkpoint key to its shape (SAM2 dimensions are read from it).
    `image_token_id` is the `<IMG_CONTEXT>` id; required for the InternVL flavour (it lives in the
    tokenizer, not in the config).
    """
    flavour = detect_flavour(config)
    sam2_shapes = {k[len(SAM2_PREFIX) :]: tuple(v) for k, v in tensors_shapes.items() if k.startswith(SAM2_PREFIX)}
    if not sam2_shapes:
        raise ValueError(f"no `{SAM2_PREFIX}*` tensors in the checkpoint")
    if flavour == "internvl":
        if image_token_id is None:
            raise ValueError("the InternVL flavour needs image_token_id (the tokenizer's <IMG_CONTEXT> id)")
        vlm_config = _internvl_vlm_config(config, tensors_shapes, image_token_id)
        hidden = vlm_config["text_config"]["hidden_size"]
        pixel_mode = {"image": "fp32", "video": "fp32"}
    else:
        vlm_config = _qwen_vlm_config(config, tensors_shapes, flavour)
        hidden = vlm_config["text_config"]["hidden_size"]
        pixel_mode = {"image": "bf16_math", "video": "fp32_then_bf16"}
    return {
        "family": flavour,
        "vlm_config": vlm_config,
        "sam2_config": sam2_config_from_shapes(sam2_shapes),
        "projector_hidden": hidden,
        "projector_out": tensors_shapes[PROJECTOR_PREFIX + "2.weight"][0],
        "template": config.get("template"),
        # Qwen3-VL (transformers 4.57) returned the last decoder layer output before the final norm.
        "seg_hidden_state": "last_layer" if flavour == "qwen3_vl" else "final_norm",
        "sam2_pixel_mode": pixel_mode,
    }


def _native_fields(config_cls: type, src: dict) -> dict:
    """Keep the keys `config_cls` declares, plus legacy RoPE keys it still converts."""
    names = {f.name for f in dataclasses.fields(config_cls)} | {"rope_theta", "rope_scaling"}
    drop = {"transformers_version", "architectures", "dtype", "torch_dtype", "id2label", "label2id"}
    return {k: v for k, v in src.items() if k in names and k not in drop}


def _internvl_text_config(llm: dict, has_lm_head: bool) -> dict:
    from transformers import LlamaConfig, Phi3Config, Qwen2Config

    arch = (llm.get("architectures") or [""])[0]
    model_type = llm.get("model_type", "")
    if model_type == "internlm2" or arch.startswith("InternLM2"):
        out = _native_fields(LlamaConfig, llm)
        out.update(model_type="llama", attention_bias=bool(llm.get("bias", False)), mlp_bias=False)
        out["head_dim"] = llm["hidden_size"] // llm["num_attention_heads"]
    elif model_type in ("qwen2", "llama", "phi3"):
        cls = {"qwen2": Qwen2Config, "llama": LlamaConfig, "phi3": Phi3Config}[model_type]
        out = _native_fields(cls, llm)
        out["model_type"] = model_type
        rope = llm.get("rope_scaling") or {}
        if model_type == "phi3" and (rope.get("type") or rope.get("rope_type")) == "su":
            # Phi-3's first name for long RoPE (InternVL2-4B): transformers renames it only after checking the
            # long-RoPE fields, which then fails
            out["rope_scaling"] = {k: v for k, v in rope.items() if k not in ("type", "rope_type")} | {
                "rope_type": "longrope"}
    else:
        raise ValueError(f"unsupported Sa2VA language model: model_type={model_type!r}, architecture={arch!r}")
    out["tie_word_embeddings"] = not has_lm_head
    return out


def _internvl_vlm_config(config: dict, shapes: dict[str, tuple], image_token_id: int) -> dict:
    vc = config["vision_config"]
    vision = {
        "hidden_size": vc["hidden_size"],
        "num_hidden_layers": vc["num_hidden_layers"],
        "num_attention_heads": vc["num_attention_heads"],
        "intermediate_size": vc["intermediate_size"],
        "hidden_act": vc.get("hidden_act", "gelu"),
        "norm_type": vc.get("norm_type", "rms_norm"),
        "layer_norm_eps": vc.get("layer_norm_eps", 1e-6),
        "attention_bias": vc.get("qkv_bias", False),
        "use_qk_norm": vc.get("qk_normalization", False),
        "attention_dropout": vc.get("attention_dropout", 0.0),
        "projection_dropout": vc.get("dropout", 0.0),
        "image_size": config.get("force_image_size") or vc["image_size"],
        "patch_size": vc["patch_size"],
        "num_channels": vc.get("num_channels", 3),
        "layer_scale_init_value": vc.get("initializer_factor", 0.1),
        "use_absolute_position_embeddings": True,
        # InternViT has no final norm; `use_mean_pooling` keeps the native head an identity.
        "use_mean_pooling": True,
    }
    has_lm_head = any(k in shapes for k in ("language_model.lm_head.weight", "language_model.output.weight"))
    text = _internvl_text_config(config["llm_config"], has_lm_head)
    patch_tokens = (vision["image_size"] // vision["patch_size"]) ** 2
    ratio = config.get("downsample_ratio", 0.5)
    return {
        "model_type": "internvl",
        "vision_config": vision,
        "text_config": text,
        "image_token_id": image_token_id,
        "image_seq_length": int(patch_tokens * ratio**2),
        "downsample_ratio": ratio,
        "projector_hidden_act": "gelu",
        "vision_feature_layer": config.get("select_layer", -1),
        "vision_feature_select_strategy": "default",
        # The top-level default (True) would tie lm_head to the input embeddings.
        "tie_word_embeddings": text["tie_word_embeddings"],
    }


def _qwen_vlm_config(config: dict, shapes: dict[str, tuple], flavour: str) -> dict:
    out = {k: v for k, v in config.items() if k not in _META_KEYS and k != "dtype" and k != "torch_dtype"}
    if "text_config" in config:
        text = dict(config["text_config"])
    else:  # older flat Qwen2.5-VL layout: text fields at the top level
        text = {k: v for k, v in out.items() if k not in ("vision_config",) and not k.endswith("token_id")}
        for k in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if k in config:
                text[k] = config[k]
    text["model_type"] = _QWEN_TEXT_TYPES[flavour]
    has_lm_head = any(k in shapes for k in ("model.lm_head.weight", "lm_head.weight"))
    text["tie_word_embeddings"] = not has_lm_head
    vision = dict(config["vision_config"])
    vision["model_type"] = flavour
    keep = {"image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id"}
    result = {k: v for k, v in out.items() if k in keep}
    result.update(model_type=flavour, text_config=text, vision_config=vision, tie_word_embeddings=not has_lm_head)
    return result


def _qwen_key(key: str) -> str:
    """Sa2VA's `model.*` (a whole Qwen-VL ForConditionalGeneration) -> native key, old or new layout."""
    inner = key[len("model.") :]
    if inner.startswith(("model.language_model.", "model.visual.", "lm_head.")):
        return inner
    if inner.startswith("visual."):  # transformers < 4.52 layout
        return "model." + inner
    if inner.startswith("model."):
        return "model.language_model." + inner[len("model.") :]
    raise KeyError(f"unexpected Sa2VA Qwen key: {key}")


def convert_state_dict(
    items: Iterable[tuple[str, Tensor]], flavour: str, config: dict
) -> Iterator[tuple[str, Tensor]]:
    """Stream Sa2VA tensors as native `vlm.*` / `sam2.*` / `projector.*` tensors, one at a time.

    `config` is the output of `convert_config`. Recomputed buffers (`rotary_emb.inv_freq`, SAM2 pixel
    mean/std) are dropped. A head tied to the input embeddings is not written (the native model ties it at load).
    The only tensors held back are SAM2's few point-embedding rows.
    """
    sam2 = Sam2KeyConverter(config["sam2_config"])
    text_config = config["vlm_config"]["text_config"]
    for key, tensor in items:
        if key.endswith(_SKIPPED_SUFFIXES):
            continue
        if key.startswith(SAM2_PREFIX):
            for new, t in sam2(key[len(SAM2_PREFIX) :], tensor):
                yield "sam2." + new, t
            continue
        if key.startswith(PROJECTOR_PREFIX):
            yield "projector." + key[len(PROJECTOR_PREFIX) :], tensor
            continue
        if flavour == "internvl":
            converted = convert_internvl_key(key, tensor, text_config)
        elif key.startswith("model."):
            converted = [(_qwen_key(key), tensor)]
        else:
            raise KeyError(f"unexpected Sa2VA key: {key}")
        for new, t in converted:
            yield "vlm." + new, t
    sam2.finish()


def find_added_token_id(src_dir: str | Path, token: str) -> int:
    """Id of an added token, read from the tokenizer files (no tokenizer construction)."""
    src = Path(src_dir)
    added = src / "added_tokens.json"
    if added.exists():
        ids = json.loads(added.read_text())
        if token in ids:
            return int(ids[token])
    tok = src / "tokenizer.json"
    if tok.exists():
        for entry in json.loads(tok.read_text()).get("added_tokens", []):
            if entry["content"] == token:
                return int(entry["id"])
    raise ValueError(f"{token!r} not found in the tokenizer files of {src}")


def _safetensors_files(src: Path) -> list[Path]:
    index = src / "model.safetensors.index.json"
    if index.exists():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [src / n for n in names]
    single = src / "model.safetensors"
    if not single.exists():
        raise FileNotFoundError(f"no model.safetensors(.index.json) in {src}")
    return [single]


def read_shapes(src_dir: str | Path) -> dict[str, tuple]:
    """Every tensor's shape, without loading data."""
    shapes: dict[str, tuple] = {}
    for path in _safetensors_files(Path(src_dir)):
        with safe_open(path, "pt") as f:
            for k in f.keys():
                shapes[k] = tuple(f.get_slice(k).get_shape())
    return shapes


def iter_tensors(src_dir: str | Path) -> Iterator[tuple[str, Tensor]]:
    """(key, tensor) pairs from the checkpoint's safetensors files, one tensor in memory at a time."""
    for path in _safetensors_files(Path(src_dir)):
        with safe_open(path, "pt") as f:
            for k in f.keys():
                yield k, f.get_tensor(k)


def build_native_modules(converted: dict) -> tuple[nn.Module, nn.Module, nn.Sequential]:
    """Empty-weight native VLM, `Sam2VideoModel` and projector (parameters on meta, buffers real)."""
    from transformers import (
        InternVLConfig,
        InternVLForConditionalGeneration,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen3VLConfig,
        Qwen3VLForConditionalGeneration,
        Sam2VideoConfig,
        Sam2VideoModel,
    )

    classes = {
        "internvl": (InternVLConfig, InternVLForConditionalGeneration),
        "qwen2_5_vl": (Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration),
        "qwen3_vl": (Qwen3VLConfig, Qwen3VLForConditionalGeneration),
    }
    config_cls, model_cls = classes[converted["family"]]
    vlm_kwargs = {k: v for k, v in converted["vlm_config"].items() if k != "model_type"}
    hidden = converted["projector_hidden"]
    with init_empty_weights(include_buffers=False):
        vlm = model_cls(config_cls(**vlm_kwargs))
        sam2 = Sam2VideoModel(Sam2VideoConfig(**converted["sam2_config"]))
        projector = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, converted["projector_out"]))
    return vlm, sam2, projector


def _assign(module: nn.Module, name: str, state: dict[str, Tensor]) -> None:
    expected = set(module.state_dict().keys())
    missing = sorted(expected - state.keys())
    unexpected = sorted(state.keys() - expected)
    if missing or unexpected:
        raise ValueError(
            f"{name}: converted weights do not match the native module: "
            f"{len(missing)} missing {missing[:20]}, {len(unexpected)} unexpected {unexpected[:20]}"
        )
    module.load_state_dict(state, strict=True, assign=True)


def load_sa2va_modules(
    src_dir: str | Path, dtype: torch.dtype = torch.float32, image_token_id: int | None = None
) -> tuple[nn.Module, nn.Module, nn.Sequential, dict]:
    """Native (vlm, sam2, projector, info) from an official Sa2VA checkpoint folder.

    Every native parameter and persistent buffer must be covered by the converted weights;
    a ValueError lists what is missing or unexpected. `info` is `convert_config`'s output plus
    `image_token_id` and `seg_token_id` where the tokenizer files define them.
    """
    src = Path(src_dir)
    config = json.loads((src / "config.json").read_text())
    shapes = read_shapes(src)
    flavour = detect_flavour(config)
    if flavour == "internvl" and image_token_id is None:
        image_token_id = find_added_token_id(src, IMG_CONTEXT)
    converted = convert_config(config, shapes, image_token_id=image_token_id)
    vlm, sam2, projector = build_native_modules(converted)

    states: dict[str, dict[str, Tensor]] = {"vlm": {}, "sam2": {}, "projector": {}}
    for key, tensor in convert_state_dict(iter_tensors(src), flavour, converted):
        prefix, rest = key.split(".", 1)
        states[prefix][rest] = tensor.to(dtype).contiguous()
    if converted["vlm_config"]["tie_word_embeddings"]:
        states["vlm"]["lm_head.weight"] = states["vlm"]["model.language_model.embed_tokens.weight"]
    for name, module in (("vlm", vlm), ("sam2", sam2), ("projector", projector)):
        _assign(module, name, states.pop(name))
    if converted["vlm_config"]["tie_word_embeddings"]:
        vlm.tie_weights()
    for module in (vlm, sam2, projector):
        module.eval()

    info = dict(converted)
    info["image_token_id"] = image_token_id if flavour == "internvl" else converted["vlm_config"].get("image_token_id")
    try:
        info["seg_token_id"] = find_added_token_id(src, "[SEG]")
    except ValueError:
        info["seg_token_id"] = None
    return vlm, sam2, projector, info
