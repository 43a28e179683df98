"""Original SAM2 (facebookresearch/sam2, as embedded in Sa2VA) -> transformers `Sam2VideoModel`.

Two jobs: infer a `Sam2VideoConfig` dict from tensor shapes, and rename one original key to its
native name. Key names here are relative to the SAM2 module (Sa2VA's `grounding_encoder.sam2_model.`
prefix already stripped).
"""

from __future__ import annotations

import math
import re

import torch

# Hiera settings that are not visible in tensor shapes, keyed by blocks per stage.
# (Sa2VA always ships Hiera-L; the others are the official SAM2 variants.)
_HIERA_BY_STAGES: dict[tuple[int, ...], dict] = {
    (1, 2, 7, 2): {"global_attention_blocks": [5, 7, 9], "window_size_per_stage": [8, 4, 14, 7], "heads": 1},
    (1, 2, 11, 2): {"global_attention_blocks": [7, 10, 13], "window_size_per_stage": [8, 4, 14, 7], "heads": 1},
    (2, 3, 16, 3): {"global_attention_blocks": [12, 16, 20], "window_size_per_stage": [8, 4, 14, 7], "heads": 2},
    (2, 6, 36, 4): {"global_attention_blocks": [23, 33, 43], "window_size_per_stage": [8, 4, 16, 8], "heads": 2},
}

_TRUNK = "image_encoder.trunk."


def _count(shapes: dict[str, tuple], pattern: str) -> int:
    """Number of distinct integer indices captured by `pattern` (one group) over the keys."""
    found = {int(m.group(1)) for k in shapes if (m := re.fullmatch(pattern, k))}
    return len(found)


def sam2_config_from_shapes(shapes: dict[str, tuple]) -> dict:
    """Build a `Sam2VideoConfig` keyword dict from the shapes of original SAM2 tensors."""
    embed_dim = shapes[_TRUNK + "patch_embed.proj.weight"][0]
    depth = _count(shapes, re.escape(_TRUNK) + r"blocks\.(\d+)\..*")
    # A block with its own `proj` changes the width: it is the first block of a new stage.
    stage_starts = sorted(
        int(m.group(1)) for k in shapes if (m := re.fullmatch(re.escape(_TRUNK) + r"blocks\.(\d+)\.proj\.weight", k))
    )
    bounds = [0, *stage_starts, depth]
    stages = tuple(b - a for a, b in zip(bounds, bounds[1:]))
    if stages not in _HIERA_BY_STAGES:
        raise ValueError(f"unknown Hiera layout {stages}; add its global-attention blocks and windows")
    hiera = _HIERA_BY_STAGES[stages]
    dims = [shapes[_TRUNK + "patch_embed.proj.weight"][0]]
    for start in stage_starts:
        dims.append(shapes[f"{_TRUNK}blocks.{start}.proj.weight"][0])
    window = list(hiera["window_size_per_stage"])
    window[0] = shapes[_TRUNK + "pos_embed_window"][-1]
    n_convs = _count(shapes, r"image_encoder\.neck\.convs\.(\d+)\.conv\.weight")
    channels = [shapes[f"image_encoder.neck.convs.{i}.conv.weight"][1] for i in range(n_convs)]
    fpn_dim = shapes["image_encoder.neck.convs.0.conv.weight"][0]

    backbone = {
        "model_type": "sam2_hiera_det_model",
        "hidden_size": embed_dim,
        "num_attention_heads": hiera["heads"],
        "blocks_per_stage": list(stages),
        "embed_dim_per_stage": dims,
        "num_attention_heads_per_stage": [hiera["heads"] * 2**i for i in range(len(stages))],
        "window_size_per_stage": window,
        "global_attention_blocks": list(hiera["global_attention_blocks"]),
        "window_positional_embedding_background_size": list(shapes[_TRUNK + "pos_embed"][-2:]),
    }
    vision = {
        "model_type": "sam2_vision_model",
        "backbone_config": backbone,
        "backbone_channel_list": channels,
        "fpn_hidden_size": fpn_dim,
    }
    dec = "sam_mask_decoder."
    prompt_encoder = {
        "hidden_size": shapes["sam_prompt_encoder.no_mask_embed.weight"][-1],
        "mask_input_channels": shapes["sam_prompt_encoder.mask_downscaling.3.weight"][0],
        "num_point_embeddings": _count(shapes, r"sam_prompt_encoder\.point_embeddings\.(\d+)\.weight"),
    }
    mask_decoder = {
        "hidden_size": shapes[dec + "iou_token.weight"][-1],
        "mlp_dim": shapes[dec + "transformer.layers.0.mlp.layers.0.weight"][0],
        "num_hidden_layers": _count(shapes, re.escape(dec) + r"transformer\.layers\.(\d+)\..*"),
        "num_multimask_outputs": shapes[dec + "mask_tokens.weight"][0] - 1,
        "iou_head_depth": _count(shapes, re.escape(dec) + r"iou_prediction_head\.layers\.(\d+)\.weight"),
        "iou_head_hidden_dim": shapes[dec + "iou_prediction_head.layers.0.weight"][0],
    }
    fuser = "memory_encoder.fuser.layers.0."
    downsampler_convs = sum(
        1
        for k, v in shapes.items()
        if re.fullmatch(r"memory_encoder\.mask_downsampler\.encoder\.\d+\.weight", k) and len(v) == 4
    )
    return {
        "vision_config": vision,
        "prompt_encoder_config": prompt_encoder,
        "mask_decoder_config": mask_decoder,
        "num_maskmem": shapes["maskmem_tpos_enc"][0],
        # SAM2.0 (what Sa2VA ships) has neither tensor; SAM2.1 has both.
        "enable_temporal_pos_encoding_for_object_pointers": "obj_ptr_tpos_proj.weight" in shapes,
        "enable_occlusion_spatial_embedding": "no_obj_embed_spatial" in shapes,
        "memory_attention_hidden_size": shapes["memory_attention.norm.weight"][0],
        "memory_attention_num_layers": _count(shapes, r"memory_attention\.layers\.(\d+)\..*"),
        "memory_attention_feed_forward_hidden_size": shapes["memory_attention.layers.0.linear1.weight"][0],
        "memory_encoder_hidden_size": shapes["memory_encoder.pix_feat_proj.weight"][0],
        "memory_encoder_output_channels": shapes["memory_encoder.out_proj.weight"][0],
        "mask_downsampler_embed_dim": shapes["memory_encoder.out_proj.weight"][1],
        "mask_downsampler_kernel_size": shapes["memory_encoder.mask_downsampler.encoder.0.weight"][-1],
        # n stride-2 conv stages followed by one 1x1 conv
        "mask_downsampler_total_stride": 2 ** (downsampler_convs - 1),
        "memory_fuser_num_layers": _count(shapes, r"memory_encoder\.fuser\.layers\.(\d+)\..*"),
        "memory_fuser_embed_dim": shapes[fuser + "dwconv.weight"][0],
        "memory_fuser_intermediate_dim": shapes[fuser + "pwconv1.weight"][0],
        "memory_fuser_kernel_size": shapes[fuser + "dwconv.weight"][-1],
        "memory_fuser_padding": shapes[fuser + "dwconv.weight"][-1] // 2,
    }


# Simple substring renames, applied in order to every key.
_RENAMES: list[tuple[str, str]] = [
    (r"^image_encoder\.trunk\.", "vision_encoder.backbone."),
    (r"^image_encoder\.neck\.convs\.(\d+)\.conv\.", r"vision_encoder.neck.convs.\1."),
    (r"\.patch_embed\.proj\.", ".patch_embed.projection."),
    (r"^sam_prompt_encoder\.", "prompt_encoder."),
    (r"^sam_mask_decoder\.", "mask_decoder."),
    (r"\.pe_layer\.positional_encoding_gaussian_matrix$", ".shared_embedding.positional_embedding"),
    (r"\.mask_downscaling\.0\.", ".mask_embed.conv1."),
    (r"\.mask_downscaling\.1\.", ".mask_embed.layer_norm1."),
    (r"\.mask_downscaling\.3\.", ".mask_embed.conv2."),
    (r"\.mask_downscaling\.4\.", ".mask_embed.layer_norm2."),
    (r"\.mask_downscaling\.6\.", ".mask_embed.conv3."),
    (r"\.output_upscaling\.0\.", ".upscale_conv1."),
    (r"\.output_upscaling\.1\.", ".upscale_layer_norm."),
    (r"\.output_upscaling\.3\.", ".upscale_conv2."),
    (r"\.norm_final_attn\.", ".layer_norm_final_attn."),
    (r"\.norm(\d?)\.", r".layer_norm\1."),
    (r"^memory_encoder\.out_proj\.", "memory_encoder.projection."),
    (r"\.out_proj\.", ".o_proj."),
    (r"^memory_encoder\.pix_feat_proj\.", "memory_encoder.feature_projection."),
    (r"^memory_encoder\.fuser\.", "memory_encoder.memory_fuser."),
    (r"\.dwconv\.", ".depthwise_conv."),
    (r"\.pwconv(\d)\.", r".pointwise_conv\1."),
    (r"\.(g_weight|gamma)$", ".scale"),
    (r"^no_mem_embed$", "no_memory_embedding"),
    (r"^no_mem_pos_enc$", "no_memory_positional_encoding"),
    (r"^maskmem_tpos_enc$", "memory_temporal_positional_encoding"),
    (r"^no_obj_ptr$", "no_object_pointer"),
    (r"^obj_ptr_proj\.", "object_pointer_proj."),
    (r"^obj_ptr_tpos_proj\.", "temporal_positional_encoding_projection_layer."),
    (r"^no_obj_embed_spatial$", "occlusion_spatial_embedding_parameter"),
]

# MLPs whose `layers.i` list becomes proj_in / layers.(i-1) / proj_out, with their depth.
_MLP_DEPTH: list[tuple[str, int]] = [
    (r"^vision_encoder\.backbone\.blocks\.\d+\.mlp\.", 2),
    (r"^mask_decoder\.transformer\.layers\.\d+\.mlp\.", 2),
    (r"^mask_decoder\.iou_prediction_head\.", 3),
    (r"^mask_decoder\.pred_obj_score_head\.", 3),
    (r"^mask_decoder\.output_hypernetworks_mlps\.\d+\.", 3),
    (r"^object_pointer_proj\.", 3),
]


def _rename_mlp(key: str, mask_decoder_cfg: dict) -> str:
    for prefix, depth in _MLP_DEPTH:
        m = re.match(prefix + r"layers\.(\d+)\.(.*)$", key)
        if not m:
            continue
        if "iou_prediction_head" in prefix:
            depth = mask_decoder_cfg.get("iou_head_depth", depth)
        i = int(m.group(1))
        head = key[: m.start(1) - len("layers.")]
        if i == 0:
            return f"{head}proj_in.{m.group(2)}"
        if i == depth - 1:
            return f"{head}proj_out.{m.group(2)}"
        return f"{head}layers.{i - 1}.{m.group(2)}"
    return key


def _rename_mask_downsampler(key: str, total_stride: int) -> str:
    m = re.match(r"^memory_encoder\.mask_downsampler\.encoder\.(\d+)\.(.*)$", key)
    if not m:
        return key
    i, rest = int(m.group(1)), m.group(2)
    n_stages = round(math.log2(total_stride))
    base = "memory_encoder.mask_downsampler."
    if i == 3 * n_stages:
        return f"{base}final_conv.{rest}"
    # each stage is (conv, LayerNorm2d, GELU)
    part = "conv" if i % 3 == 0 else "layer_norm"
    return f"{base}layers.{i // 3}.{part}.{rest}"


def rename_sam2_key(key: str, sam2_config: dict) -> str:
    """Native `Sam2VideoModel` name for one original SAM2 key (point embeddings excluded)."""
    new = key
    for pattern, repl in _RENAMES:
        new = re.sub(pattern, repl, new)
    new = _rename_mlp(new, sam2_config.get("mask_decoder_config", {}))
    return _rename_mask_downsampler(new, sam2_config.get("mask_downsampler_total_stride", 16))


_POINT_EMBED = re.compile(r"^sam_prompt_encoder\.point_embeddings\.(\d+)\.weight$")


class Sam2KeyConverter:
    """Streams original SAM2 tensors into native ones.

    Holds back only the few point-embedding rows (concatenated into one `point_embed.weight`),
    and emits the random-Fourier matrix twice: the native model keeps one copy in the prompt
    encoder and one for the image-wide positional embedding.
    """

    def __init__(self, sam2_config: dict) -> None:
        self.config = sam2_config
        self.n_points = sam2_config["prompt_encoder_config"]["num_point_embeddings"]
        self._points: dict[int, torch.Tensor] = {}

    def __call__(self, key: str, tensor: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        m = _POINT_EMBED.match(key)
        if m:
            self._points[int(m.group(1))] = tensor
            if len(self._points) < self.n_points:
                return []
            rows = [self._points[i] for i in range(self.n_points)]
            self._points = {}
            return [("prompt_encoder.point_embed.weight", torch.cat(rows, dim=0))]
        new = rename_sam2_key(key, self.config)
        if new == "prompt_encoder.shared_embedding.positional_embedding":
            return [(new, tensor), ("shared_image_embedding.positional_embedding", tensor)]
        return [(new, tensor)]

    def finish(self) -> None:
        if self._points:
            raise ValueError(f"incomplete SAM2 point embeddings: got {sorted(self._points)} of {self.n_points}")
