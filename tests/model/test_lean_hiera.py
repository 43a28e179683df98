"""The lean Hiera forwards (`model.lean_hiera`) compute exactly what transformers' forwards compute."""

import copy

import torch
from transformers import Sam2VisionModel
from transformers.models.sam2.modeling_sam2 import Sam2MultiScaleBlock

from model.lean_hiera import LeanMultiScaleBlock, streamline_hiera
from model.modeling import SegChatModel
from model.tiny import tiny_sam2_config


def vision_model(image_size: int, windows: list[int]) -> Sam2VisionModel:
    config = tiny_sam2_config(image_size).vision_config
    config.backbone_config.window_size_per_stage = windows
    torch.manual_seed(0)
    return Sam2VisionModel(config).eval()


def test_lean_forward_is_bit_identical_with_and_without_window_padding():
    # 96 px: token grids of 24, 12, 6 and 3 cells; windows of 4, 5, 4 and 2 pad some grids and not others, and the
    # first block of each stage pools its queries.
    library = vision_model(96, [4, 5, 4, 2])
    lean = copy.deepcopy(library)
    changed = streamline_hiera(lean)
    assert changed == 2 * sum(library.config.backbone_config.blocks_per_stage)  # every block and its attention
    pixels = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        expected, got = library(pixels), lean(pixels)
    assert torch.equal(expected.last_hidden_state, got.last_hidden_state)
    for a, b in zip(expected.fpn_hidden_states, got.fpn_hidden_states):
        assert torch.equal(a, b)


def test_lean_forward_trains_like_the_library():
    library = vision_model(64, [4, 4, 4, 4])
    lean = copy.deepcopy(library)
    streamline_hiera(lean)
    pixels = torch.randn(1, 3, 64, 64)
    for model in (library, lean):
        model.train()
        model(pixels).last_hidden_state.square().mean().backward()
    for (name, a), (_, b) in zip(library.named_parameters(), lean.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_segchat_models_carry_the_lean_encoder(tiny_dirs):
    model = SegChatModel.from_pretrained(tiny_dirs["qwen2_5_vl"])
    blocks = [m for m in model.sam2.modules() if isinstance(m, Sam2MultiScaleBlock)]
    assert blocks and all(type(block) is LeanMultiScaleBlock for block in blocks)
