"""The lean Hiera forwards (`model.lean_hiera`) compute exactly what transformers' forwards compute."""

import copy
import gc
import weakref

import pytest
import torch
from transformers import Sam2VisionModel
from transformers.models.sam2.modeling_sam2 import Sam2MultiScaleBlock, Sam2SinePositionEmbedding

from model.lean_hiera import LeanMultiScaleBlock, SeparableSinePositionEmbedding, streamline_hiera
from model.modeling import SegChatModel
from model.tiny import tiny_sam2_config


def vision_model(image_size: int, windows: list[int]) -> Sam2VisionModel:
    config = tiny_sam2_config(image_size).vision_config
    config.backbone_config.window_size_per_stage = windows
    torch.manual_seed(0)
    return Sam2VisionModel(config).eval()


def lean_and_library_outputs(pixels: torch.Tensor, windows: list[int]) -> tuple[list, list]:
    library = vision_model(pixels.shape[-1], windows)
    lean = copy.deepcopy(library)
    changed = streamline_hiera(lean)
    # every block and its attention, and the neck's position encoding
    assert changed == 2 * sum(library.config.backbone_config.blocks_per_stage) + 1
    with torch.no_grad():
        expected, got = library(pixels), lean(pixels)
    return ([got.last_hidden_state, *got.fpn_hidden_states, *got.fpn_position_encoding],
            [expected.last_hidden_state, *expected.fpn_hidden_states, *expected.fpn_position_encoding])


# 96 px: token grids of 24, 12, 6 and 3 cells; windows of 4, 5, 4 and 2 pad some grids and not others, and the first
# block of each stage pools its queries.
WINDOWS = [4, 5, 4, 2]


def test_lean_forward_is_bit_identical_with_and_without_window_padding():
    got, expected = lean_and_library_outputs(torch.randn(2, 3, 96, 96), WINDOWS)
    for a, b in zip(got, expected, strict=True):
        assert torch.equal(a, b)


def test_blocks_run_in_bands_compute_what_the_whole_computes(monkeypatch):
    # Bands of one window row, the last one padded. Products over a few rows may round differently from products
    # over the whole grid (the BLAS picks other kernels for small matrices); at 1024 px the outputs are
    # bit-identical (bench/bench_sam2.py checks it).
    monkeypatch.setattr(LeanMultiScaleBlock, "band_tokens", 16)
    got, expected = lean_and_library_outputs(torch.randn(2, 3, 96, 96), WINDOWS)
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("size", [(256, 256), (75, 133)], ids=str)
def test_separable_position_encoding_equals_the_library_s(size, dtype):
    shape = torch.Size((1, 256, *size))
    expected = Sam2SinePositionEmbedding(num_position_features=128, normalize=True)(shape, "cpu", dtype)
    got = SeparableSinePositionEmbedding(num_position_features=128, normalize=True)(shape, "cpu", dtype)
    assert torch.equal(expected, got) and expected.stride() == got.stride()


def test_lean_encoder_keeps_no_position_encoding_after_the_call():
    # transformers caches the neck's last (finest) position encoding for the life of the process
    library = vision_model(64, [4, 4, 4, 4])
    lean = copy.deepcopy(library)
    streamline_hiera(lean)
    alive = {}
    for name, model in (("library", library), ("lean", lean)):
        with torch.no_grad():
            finest = weakref.ref(model(torch.randn(1, 3, 64, 64)).fpn_position_encoding[0])
        gc.collect()
        alive[name] = finest() is not None
    assert alive == {"library": True, "lean": False}


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
