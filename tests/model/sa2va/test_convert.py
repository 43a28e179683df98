"""Sa2VA checkpoint conversion: config detection, strict loading, numerical parity with the official-code oracles."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model.sa2va.convert.internvl_keys import split_internlm2_wqkv
from model.sa2va.convert.sa2va import convert_config, detect_flavour, load_sa2va_modules, read_shapes
from model.sa2va.convert.sam2_keys import rename_sam2_key

from tests.helpers import SHARED

ORACLE_ROOT = SHARED / "oracle"
ORACLES = sorted(
    p for p in ORACLE_ROOT.glob("*") if (p / "config.json").exists() and (p / "cases.json").exists()
) if ORACLE_ROOT.exists() else []


def _array(path: Path) -> np.ndarray:
    if path.suffix == ".npz":
        with np.load(path) as z:
            return z[path.stem]
    return np.load(path)


def _maxdiff(a, b) -> float:
    a = a.detach().numpy() if isinstance(a, torch.Tensor) else a
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


_LOADED: dict[Path, tuple] = {}


def _folders(flavour: str | None = None) -> list:
    """Oracle folders (of one flavour), or [None] so that a test skips with a reason when shared/ is absent."""
    if not ORACLES:
        return [None]
    return [p for p in ORACLES if flavour is None or detect_flavour(json.loads((p / "config.json").read_text())) == flavour]


def _load(folder: Path | None) -> tuple:
    """(folder, vlm, sam2, projector, info), loaded once per oracle for the whole module."""
    if folder is None:
        pytest.skip(f"no Sa2VA oracle under {ORACLE_ROOT}: the shared material is absent")
    if folder not in _LOADED:
        _LOADED[folder] = (folder, *load_sa2va_modules(folder))
    return _LOADED[folder]


def _ids(folders: list) -> list[str]:
    return [p.name if p else "no-oracle" for p in folders]


@pytest.fixture(params=_folders(), ids=_ids(_folders()))
def oracle(request):
    return _load(request.param)


@pytest.fixture(params=_folders("internvl"), ids=_ids(_folders("internvl")))
def internvl_oracle(request):
    return _load(request.param)


@pytest.fixture(params=_folders("qwen3_vl"), ids=_ids(_folders("qwen3_vl")))
def qwen3vl_oracle(request):
    return _load(request.param)


def _decode_image_mask(sam2, g_pixel_values: torch.Tensor, seg_embeds: torch.Tensor):
    """Sa2VA's image decode: dummy point (label -1) + pad point + [SEG] embedding; all objects in one call."""
    embeddings = sam2.get_image_embeddings(g_pixel_values)
    n = seg_embeds.shape[0]
    points = torch.zeros(1, n, 1, 2)
    labels = -torch.ones(1, n, 1, dtype=torch.long)
    sparse, dense = sam2.prompt_encoder(input_points=points, input_labels=labels, input_boxes=None, input_masks=None)
    sparse = torch.cat([sparse, seg_embeds[None, :, None, :]], dim=2)
    masks, ious, _, object_scores = sam2.mask_decoder(
        image_embeddings=embeddings[-1],
        image_positional_embeddings=sam2.get_image_wide_positional_embeddings(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=True,
        high_resolution_features=embeddings[:-1],
    )
    best = ious[0].argmax(-1)
    lowres = masks[0, torch.arange(n), best]
    return lowres, ious[0], object_scores[0, :, 0]


# --- pure functions (no shared material needed) ---------------------------------------------------------------


def test_detect_flavour_and_rejects_other_configs():
    internvl = {"model_type": "sa2va_chat", "llm_config": {}, "vision_config": {}}
    qwen3 = {"model_type": "sa2va_chat", "text_config": {"model_type": "qwen3_vl_text"}, "vision_config": {}}
    qwen25 = {"architectures": ["Sa2VAChatModelQwen"], "vision_config": {"model_type": "qwen2_5_vl"}}
    assert detect_flavour(internvl) == "internvl"
    assert detect_flavour(qwen3) == "qwen3_vl"
    assert detect_flavour(qwen25) == "qwen2_5_vl"
    with pytest.raises(ValueError, match="not a Sa2VA config"):
        detect_flavour({"model_type": "llava"})
    with pytest.raises(ValueError, match="unsupported flavour"):
        detect_flavour({"model_type": "sa2va_chat", "vision_config": {"model_type": "siglip"}})


def test_sam2_key_renames():
    cfg = {"mask_decoder_config": {"iou_head_depth": 3}, "mask_downsampler_total_stride": 16}
    cases = {
        "image_encoder.trunk.blocks.3.mlp.layers.1.weight": "vision_encoder.backbone.blocks.3.mlp.proj_out.weight",
        "image_encoder.neck.convs.2.conv.bias": "vision_encoder.neck.convs.2.bias",
        "sam_mask_decoder.iou_prediction_head.layers.1.bias": "mask_decoder.iou_prediction_head.layers.0.bias",
        "sam_mask_decoder.transformer.layers.1.norm4.weight": "mask_decoder.transformer.layers.1.layer_norm4.weight",
        "sam_mask_decoder.transformer.final_attn_token_to_image.out_proj.weight":
            "mask_decoder.transformer.final_attn_token_to_image.o_proj.weight",
        "memory_encoder.mask_downsampler.encoder.4.bias": "memory_encoder.mask_downsampler.layers.1.layer_norm.bias",
        "memory_encoder.mask_downsampler.encoder.12.weight": "memory_encoder.mask_downsampler.final_conv.weight",
        "memory_encoder.fuser.layers.0.g_weight": "memory_encoder.memory_fuser.layers.0.scale",
        "memory_encoder.out_proj.weight": "memory_encoder.projection.weight",
        "obj_ptr_proj.layers.2.weight": "object_pointer_proj.proj_out.weight",
        "maskmem_tpos_enc": "memory_temporal_positional_encoding",
    }
    for src, expected in cases.items():
        assert rename_sam2_key(src, cfg) == expected


def test_internlm2_wqkv_split_follows_kv_groups():
    heads, kv_heads, head_dim, hidden = 4, 2, 3, 5
    # row r of the fused matrix holds the value r: the split must pick rows group by group
    fused = torch.arange(kv_heads * (heads // kv_heads + 2) * head_dim).float()[:, None].expand(-1, hidden)
    parts = dict(split_internlm2_wqkv("m.layers.0.attention.wqkv.weight", fused, heads, kv_heads))
    q = parts["m.layers.0.self_attn.q_proj.weight"][:, 0].tolist()
    k = parts["m.layers.0.self_attn.k_proj.weight"][:, 0].tolist()
    v = parts["m.layers.0.self_attn.v_proj.weight"][:, 0].tolist()
    assert q == [0, 1, 2, 3, 4, 5, 12, 13, 14, 15, 16, 17]
    assert k == [6, 7, 8, 18, 19, 20]
    assert v == [9, 10, 11, 21, 22, 23]


# --- oracle checkpoints ----------------------------------------------------------------------------------------


def test_convert_config_reads_shapes_and_sa2va_switches(oracle):
    folder, *_, info = oracle
    config = json.loads((folder / "config.json").read_text())
    converted = convert_config(config, read_shapes(folder), image_token_id=info["image_token_id"])
    assert converted["family"] == detect_flavour(config)
    assert converted["vlm_config"]["tie_word_embeddings"] is False
    assert converted["seg_hidden_state"] == ("last_layer" if converted["family"] == "qwen3_vl" else "final_norm")
    sam2 = converted["sam2_config"]
    backbone = sam2["vision_config"]["backbone_config"]
    assert backbone["hidden_size"] == 16  # the oracles' narrow trunk, read from the tensors
    assert backbone["blocks_per_stage"] == [2, 6, 36, 4]
    assert backbone["global_attention_blocks"] == [23, 33, 43]
    assert sam2["vision_config"]["backbone_channel_list"] == [128, 64, 32, 16]
    assert sam2["enable_temporal_pos_encoding_for_object_pointers"] is False
    assert sam2["enable_occlusion_spatial_embedding"] is False
    assert converted["projector_out"] == 256


def test_every_native_tensor_is_loaded(oracle):
    _, vlm, sam2, projector, info = oracle
    for module in (vlm, sam2, projector):
        on_meta = [n for n, t in [*module.named_parameters(), *module.named_buffers()] if t.is_meta]
        assert on_meta == []
    assert not vlm.config.tie_word_embeddings
    assert vlm.lm_head.weight.data_ptr() != vlm.get_input_embeddings().weight.data_ptr()
    assert info["seg_token_id"] is not None


@torch.no_grad()
def test_internvl_vision_llm_and_projector_match(internvl_oracle):
    folder, vlm, _, projector, info = internvl_oracle
    ref = folder / "reference" / "a_image"
    pixel_values = torch.from_numpy(_array(ref / "pixel_values.npz"))
    vit = vlm.model.get_image_features(pixel_values=pixel_values, return_dict=True).pooler_output
    assert _maxdiff(vit, np.load(ref / "vit_embeds.npy")) < 1e-4

    for case in ("a_image", "c_text_followup"):
        ref = folder / "reference" / case
        embeds = torch.from_numpy(np.load(ref / "prompt_inputs_embeds.npy"))[None]
        out = vlm(inputs_embeds=embeds, output_hidden_states=True)
        assert _maxdiff(out.hidden_states[-1][0], np.load(ref / "prefill_last_hidden.npy")) < 1e-4
        assert _maxdiff(out.logits[0, -1], np.load(ref / "step_logits.npy")[0]) < 1e-3

    ref = folder / "reference" / "e_image_two_seg"
    seg = projector(torch.from_numpy(np.load(ref / "seg_hidden_states.npy")))
    assert _maxdiff(seg, np.load(ref / "seg_embeds.npy")) < 1e-4


@torch.no_grad()
def test_internvl_sam2_features_and_image_masks(internvl_oracle):
    folder, _, sam2, _, info = internvl_oracle
    ref = folder / "reference" / "a_image"
    g = torch.from_numpy(_array(ref / "g_pixel_values.npz"))
    fpn = sam2.get_image_features(g, return_dict=True).fpn_hidden_states

    def grid(f: torch.Tensor, stride: int) -> torch.Tensor:
        side = int(f.shape[0] ** 0.5)
        return f.permute(1, 2, 0).reshape(1, -1, side, side)[:, :, ::stride, ::stride]

    assert _maxdiff(grid(fpn[0], 8), np.load(ref / "sam2_frame0_backbone_fpn0_stride8.npy")) < 1e-3
    assert _maxdiff(grid(fpn[1], 8), np.load(ref / "sam2_frame0_backbone_fpn1_stride8.npy")) < 1e-3
    assert _maxdiff(grid(fpn[2], 4), np.load(ref / "sam2_frame0_vision_features_stride4.npy")) < 1e-3

    for case in ("a_image", "e_image_two_seg"):
        ref = folder / "reference" / case
        g = torch.from_numpy(_array(ref / "g_pixel_values.npz"))
        lowres, ious, scores = _decode_image_mask(sam2, g, torch.from_numpy(np.load(ref / "seg_embeds.npy")))
        assert _maxdiff(lowres, np.load(ref / "sam2_lowres_mask_logits.npy")[:, 0]) < 1e-3
        assert _maxdiff(ious, np.load(ref / "sam2_decoder_ious.npy")[:, 0]) < 1e-4
        assert _maxdiff(scores, np.load(ref / "sam2_object_score_logits.npy")[:, 0]) < 1e-4


@torch.no_grad()
def test_qwen3vl_vlm_projector_and_image_mask(qwen3vl_oracle):
    folder, vlm, sam2, projector, info = qwen3vl_oracle
    ref = folder / "reference" / "image"
    ids = torch.from_numpy(np.load(ref / "input_ids.npy"))
    pixel_values = torch.from_numpy(_array(ref / "pixel_values.npz"))
    grid_thw = torch.from_numpy(np.load(ref / "image_grid_thw.npy"))
    visual = vlm.model.get_image_features(pixel_values=pixel_values, image_grid_thw=grid_thw, return_dict=True)
    assert _maxdiff(torch.cat(list(visual.pooler_output)), np.load(ref / "visual_embeds.npy")) < 1e-4

    # Sa2VA's [SEG] state for Qwen3-VL is the input of the final norm (transformers 5 returns it normed).
    captured = {}
    hook = vlm.model.language_model.norm.register_forward_pre_hook(lambda _m, a: captured.update(pre=a[0]))
    try:
        out = vlm(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            pixel_values=pixel_values,
            image_grid_thw=grid_thw,
            mm_token_type_ids=(ids == info["image_token_id"]).long(),
        )
    finally:
        hook.remove()
    states = np.load(ref / "hidden_states_all_layers.npy")
    assert _maxdiff(captured["pre"][0], states[-1, : ids.shape[1]]) < 1e-4
    assert _maxdiff(out.logits[0, -1], np.load(ref / "step_logits.npy")[0]) < 1e-3

    seg = projector(torch.from_numpy(np.load(ref / "seg_hidden_states.npy")))
    assert _maxdiff(seg, np.load(ref / "seg_embeddings_after_text_hidden_fcs.npy")) < 1e-4

    g = torch.from_numpy(_array(ref / "g_pixel_values.npz"))
    vision = sam2.get_image_features(g, return_dict=True).fpn_hidden_states[-1]
    vision = vision.permute(1, 2, 0).reshape(1, -1, 64, 64)[:, :, ::2, ::2]
    assert _maxdiff(vision, np.load(ref / "sam2_frame0_vision_features_stride2.npy")) < 1e-3
    lowres, ious, scores = _decode_image_mask(sam2, g, seg)
    assert _maxdiff(lowres, np.load(ref / "sam2_lowres_mask_logits.npy")[:, 0]) < 1e-3
    assert _maxdiff(ious, np.load(ref / "sam2_decoder_ious.npy")) < 1e-4
    assert _maxdiff(scores, np.load(ref / "sam2_decoder_object_score_logits.npy")[:, 0]) < 1e-4
