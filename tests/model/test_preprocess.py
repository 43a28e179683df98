"""Sa2VA preprocessing: grid rules, and bit-exact pixels against the official-code oracles."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model.preprocess import (
    SA2VA_QWEN_PROCESSOR_KWARGS,
    internvl_grid,
    internvl_tiles,
    internvl_video_frame,
    pillow13_resize,
    qwen_resize,
    sam2_pixels,
    smart_resize,
)
from tests.helpers import SHARED

ORACLE_ROOT = SHARED / "oracle"


def _oracle(name: str) -> Path:
    path = ORACLE_ROOT / name / "reference"
    if not path.exists():
        pytest.skip(f"{path} is absent: this test needs the shared oracle material")
    return path


def _npz(path: Path) -> np.ndarray:
    with np.load(path) as z:
        return z[path.stem]


def _maxdiff(a: torch.Tensor, b: np.ndarray) -> float:
    return float(np.abs(a.numpy().astype(np.float64) - b).max())


def test_internvl_grid_aspect_and_tie_rule():
    assert internvl_grid(480, 240) == (2, 1)
    assert internvl_grid(900, 300) == (3, 1)
    # square images tie on every n x n grid: a larger grid wins only if the image fills half of it
    assert internvl_grid(500, 500) == (1, 1)
    assert internvl_grid(1000, 1000) == (3, 3)
    assert internvl_grid(10000, 100) == (12, 1)


def test_internvl_tiles_shapes():
    assert internvl_tiles(Image.new("RGB", (448, 448))).shape == (1, 3, 448, 448)
    assert internvl_tiles(Image.new("RGB", (896, 448))).shape == (3, 3, 448, 448)
    assert internvl_tiles(Image.new("RGB", (896, 448)), thumbnail=False).shape == (2, 3, 448, 448)
    assert internvl_video_frame(Image.new("L", (50, 20))).shape == (1, 3, 448, 448)


def test_smart_resize_matches_qwen_rules():
    assert smart_resize(96, 128) == (84, 140)
    assert smart_resize(84, 140, factor=32, **{"min_pixels": 512 * 28 * 28, "max_pixels": 2048 * 28 * 28}) == (
        512,
        832,
    )
    h, w = smart_resize(4000, 3000)
    assert h % 28 == 0 and w % 28 == 0 and h * w <= 16384 * 28 * 28


def test_sam2_pixels_rejects_unknown_mode():
    with pytest.raises(ValueError, match="unknown SAM2 pixel mode"):
        sam2_pixels(Image.new("RGB", (8, 8)), "bf16")


def test_internvl_oracle_pixels_bit_exact():
    ref = _oracle("sa2va-internvl-qwen2")
    for case, name in (("a_image", "image.png"), ("e_image_two_seg", "image_wide.png")):
        image = Image.open(ref / "inputs" / name)
        assert _maxdiff(internvl_tiles(image), _npz(ref / case / "pixel_values.npz")) == 0.0
        assert _maxdiff(sam2_pixels(image, "fp32"), _npz(ref / case / "g_pixel_values.npz")) == 0.0
    frames = [Image.open(p) for p in sorted((ref / "inputs" / "video").glob("*.png"))]
    llm_frames = torch.cat([internvl_video_frame(f) for f in frames[:5]])
    assert _maxdiff(llm_frames, _npz(ref / "b_video" / "pixel_values.npz")) == 0.0
    assert _maxdiff(sam2_pixels(frames[0], "fp32"), _npz(ref / "b_video" / "g_pixel_values_frame0.npz")) == 0.0


def test_qwen3vl_oracle_sam2_pixels_bit_exact():
    ref = _oracle("sa2va-qwen3vl")
    image = Image.open(ref / "inputs" / "image.png")
    assert _maxdiff(sam2_pixels(image, "bf16_math"), _npz(ref / "image" / "g_pixel_values.npz")) == 0.0
    frames = [Image.open(ref / "inputs" / f"video_frame_{i}.png") for i in range(6)]
    video = torch.cat([sam2_pixels(f, "fp32_then_bf16") for f in frames])
    assert _maxdiff(video, _npz(ref / "video" / "g_pixel_values.npz")) == 0.0


def test_qwen3vl_oracle_processor_inputs():
    from transformers import Qwen2VLImageProcessor

    ref = _oracle("sa2va-qwen3vl")
    processor = Qwen2VLImageProcessor.from_pretrained(ref.parent)
    image = qwen_resize(Image.open(ref / "inputs" / "image.png"))
    assert image.size == (140, 84)
    out = processor(images=[image], return_tensors="pt", size={
        "shortest_edge": SA2VA_QWEN_PROCESSOR_KWARGS["min_pixels"],
        "longest_edge": SA2VA_QWEN_PROCESSOR_KWARGS["max_pixels"],
    })
    assert out["image_grid_thw"].tolist() == np.load(ref / "image" / "image_grid_thw.npy").tolist()
    assert out["pixel_values"].numpy().tobytes() == _npz(ref / "image" / "pixel_values.npz").tobytes()


def _two_passes(image: Image.Image, size: tuple[int, int], vertical_first: bool) -> np.ndarray:
    w, h = size
    first = (image.width, h) if vertical_first else (w, image.height)
    return np.asarray(image.resize(first, Image.BICUBIC).resize(size, Image.BICUBIC))


@pytest.mark.parametrize("size,vertical_first", [
    ((140, 84), True),  # the height shrinks more than twice as much as the width: Pillow 13 goes vertical first
    ((100, 84), False),  # both shrink, the width about as much: horizontal first
    ((448, 448), False),  # upscaling
])
def test_pillow13_resize_pass_order(size, vertical_first):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8))
    out = np.asarray(pillow13_resize(image, size))
    assert out.shape == (size[1], size[0], 3)
    assert np.array_equal(out, _two_passes(image, size, vertical_first))
    # the order matters on this image, so the test tells the two apart
    assert not np.array_equal(out, _two_passes(image, size, not vertical_first))
