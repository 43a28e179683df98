"""A Sa2VA-Qwen3-VL-4B checkpoint in the published layout at reduced depth, for load and disk measurements.

Real widths (Qwen3-VL-4B: text 2560 wide with a 151,674-row untied head, vision 1024 wide; SAM2 Hiera-L; the
2560 -> 256 [SEG] projector), real key names and fp32 storage as released; only the number of text and vision
layers is cut (`text_layers`, `vision_layers`) and the values are zeros. The SAM2 tensors are the Qwen3-VL oracle's
official key list with its narrow trunk widened back to Hiera-L (every trunk width x9, the neck's inputs too), so
this needs ../shared/oracle/sa2va-qwen3vl.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

ORACLE = Path(__file__).resolve().parents[2] / "shared" / "oracle" / "sa2va-qwen3vl"
SAM2 = "grounding_encoder.sam2_model."
TRUNK_SCALE = 144 // 16  # Hiera-L embed dim over the oracle's

TEXT = dict(model_type="qwen3_vl_text", hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
            num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=151674, rms_norm_eps=1e-6,
            rope_theta=5000000, max_position_embeddings=262144, tie_word_embeddings=False, hidden_act="silu",
            rope_scaling={"mrope_interleaved": True, "mrope_section": [24, 20, 20], "rope_type": "default"},
            bos_token_id=151643, eos_token_id=151645)
VISION = dict(model_type="qwen3_vl", depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16,
              out_hidden_size=2560, patch_size=16, spatial_merge_size=2, temporal_patch_size=2, in_channels=3,
              num_position_embeddings=2304, deepstack_visual_indexes=[5, 11, 17], hidden_act="gelu_pytorch_tanh")


def sa2va_config(text_layers: int, vision_layers: int) -> dict:
    vision = dict(VISION, depth=vision_layers,
                  deepstack_visual_indexes=[i for i in VISION["deepstack_visual_indexes"] if i < vision_layers]
                  or [vision_layers - 1])
    return {"architectures": ["Sa2VAChatModelQwen"], "model_type": "sa2va_chat", "template": "qwen_chat",
            "tie_word_embeddings": False, "torch_dtype": "float32", "image_token_id": 151655,
            "video_token_id": 151656, "vision_start_token_id": 151652, "vision_end_token_id": 151653,
            "text_config": dict(TEXT, num_hidden_layers=text_layers), "vision_config": vision}


def _vlm_shapes(config: dict) -> dict[str, tuple]:
    """Official `model.*` keys and shapes: the whole Qwen3-VL ForConditionalGeneration, built on meta."""
    from accelerate import init_empty_weights
    from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

    kwargs = {k: v for k, v in config.items() if k not in ("architectures", "model_type", "template", "torch_dtype")}
    with init_empty_weights():
        vlm = Qwen3VLForConditionalGeneration(Qwen3VLConfig(**kwargs))
    return {"model." + k: tuple(v.shape) for k, v in vlm.state_dict().items()}


def _sam2_shapes() -> dict[str, tuple]:
    shapes = {}
    with safe_open(ORACLE / "model.safetensors", "pt") as f:
        for key in f.keys():
            if not key.startswith(SAM2):
                continue
            shape = list(f.get_slice(key).get_shape())
            if ".image_encoder.trunk." in key:
                shape = [d * TRUNK_SCALE if d % 16 == 0 else d for d in shape]
            elif ".image_encoder.neck.convs." in key and key.endswith(".conv.weight"):
                shape[1] *= TRUNK_SCALE
            shapes[key] = tuple(shape)
    return shapes


def layer_bytes(text_layers: int, vision_layers: int) -> int:
    """fp32 bytes of the checkpoint at this depth (computed from shapes, nothing written)."""
    shapes = {**_vlm_shapes(sa2va_config(text_layers, vision_layers)), **_sam2_shapes()}
    return 4 * sum(torch.Size(s).numel() for s in shapes.values())


def build(dst: Path, text_layers: int = 2, vision_layers: int = 2, shard_bytes: int = 4 * 1024**3) -> Path:
    """Write the checkpoint (fp32 safetensors shards with an index, config, the oracle's tokenizer files)."""
    config = sa2va_config(text_layers, vision_layers)
    shapes = {**_vlm_shapes(config), **_sam2_shapes(), "text_hidden_fcs.0.weight": (2560, 2560),
              "text_hidden_fcs.0.bias": (2560,), "text_hidden_fcs.2.weight": (256, 2560), "text_hidden_fcs.2.bias": (256,)}
    dst.mkdir(parents=True)
    weight_map: dict[str, str] = {}
    shard: dict[str, torch.Tensor] = {}

    def flush() -> None:
        name = f"model-{len(set(weight_map.values())) + 1:05d}.safetensors"
        save_file(shard, dst / name, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(shard, name))
        shard.clear()

    for key, shape in shapes.items():  # one shard in memory at a time
        tensor = torch.zeros(shape)
        if shard and sum(t.nbytes for t in shard.values()) + tensor.nbytes > shard_bytes:
            flush()
        shard[key] = tensor
    flush()
    (dst / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    (dst / "config.json").write_text(json.dumps(config, indent=2))
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json",
                 "added_tokens.json", "chat_template.jinja", "preprocessor_config.json"):
        shutil.copyfile(ORACLE / name, dst / name)
    return dst
