"""Sa2VA's exact pixel preprocessing (InternVL tiles, Qwen-VL resize, SAM2 input), bit-exact with the official code."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SAM2_SIZE = 1024
SAM2_PIXEL_MODES = ("fp32", "bf16_math", "fp32_then_bf16")

# qwen_vl_utils defaults (factor 28 even for Qwen3-VL, as Sa2VA called it) and Sa2VA's processor kwargs.
QWEN_FACTOR = 28
QWEN_MIN_PIXELS = 4 * 28 * 28
QWEN_MAX_PIXELS = 16384 * 28 * 28
QWEN_MAX_RATIO = 200
SA2VA_QWEN_PROCESSOR_KWARGS = {"min_pixels": 512 * 28 * 28, "max_pixels": 2048 * 28 * 28}


def _rgb(image: Image.Image) -> Image.Image:
    return image if image.mode == "RGB" else image.convert("RGB")


def pillow13_resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """PIL bicubic resize to (width, height) with Pillow 13's pass order, whatever Pillow is installed.

    Pillow resamples in two passes with an 8-bit image in between, so the order changes the result. Since
    13.0 it runs the vertical pass first when the height shrinks by more than twice what the width does;
    older versions always go horizontal first. The official outputs we match were computed with Pillow 13,
    and gradio still pins Pillow below 13, so the passes are done one axis at a time here.
    """
    width, height = size
    shrink_h = image.height - height
    if shrink_h > 0 and shrink_h > 2 * (image.width - width):
        return image.resize((image.width, height), Image.BICUBIC).resize(size, Image.BICUBIC)
    return image.resize((width, image.height), Image.BICUBIC).resize(size, Image.BICUBIC)


def _normalize(image: Image.Image) -> torch.Tensor:
    """ToTensor (/255) then ImageNet Normalize, in float32 like torchvision."""
    x = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float().div(255)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None]
    return x.sub(mean).div(std)


def internvl_grid(width: int, height: int, tile: int = 448, min_tiles: int = 1, max_tiles: int = 12) -> tuple[int, int]:
    """(columns, rows) InternVL's dynamic_preprocess picks for an image of this size."""
    ratios = sorted(
        {(i, j) for n in range(min_tiles, max_tiles + 1) for i in range(1, n + 1) for j in range(1, n + 1)
         if min_tiles <= i * j <= max_tiles},
        key=lambda r: r[0] * r[1],
    )
    aspect = width / height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in ratios:
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and width * height > 0.5 * tile * tile * cols * rows:
            # exact tie: the larger grid wins only for images big enough to fill half of it
            best = (cols, rows)
    return best


def internvl_tiles(
    image: Image.Image, tile: int = 448, min_tiles: int = 1, max_tiles: int = 12, thumbnail: bool = True
) -> torch.Tensor:
    """InternVL dynamic tiling: [n, 3, tile, tile], row-major tiles then the thumbnail (if >1 tile)."""
    image = _rgb(image)
    cols, rows = internvl_grid(*image.size, tile=tile, min_tiles=min_tiles, max_tiles=max_tiles)
    resized = pillow13_resize(image, (tile * cols, tile * rows))
    crops = [
        resized.crop((c * tile, r * tile, (c + 1) * tile, (r + 1) * tile)) for r in range(rows) for c in range(cols)
    ]
    if thumbnail and len(crops) > 1:
        crops.append(pillow13_resize(image, (tile, tile)))
    return torch.stack([_normalize(c) for c in crops])


def internvl_video_frame(image: Image.Image, tile: int = 448) -> torch.Tensor:
    """One video frame for the InternVL LLM: direct bicubic resize, no tiling. [1, 3, tile, tile]."""
    return _normalize(pillow13_resize(_rgb(image), (tile, tile)))[None]


def sam2_pixels(image: Image.Image, mode: str, size: int = SAM2_SIZE) -> torch.Tensor:
    """SAM2 input [1, 3, size, size] float32: DirectResize (bicubic, aspect ignored), ImageNet norm with bf16 mean/std.

    mode: "fp32" (InternVL flavour: fp32 arithmetic), "bf16_math" (Qwen flavours, images: every op in
    bf16), "fp32_then_bf16" (Qwen flavours, video frames: fp32 arithmetic, result rounded to bf16).
    """
    if mode not in SAM2_PIXEL_MODES:
        raise ValueError(f"unknown SAM2 pixel mode {mode!r}; expected one of {SAM2_PIXEL_MODES}")
    resized = pillow13_resize(_rgb(image), (size, size))
    x = torch.from_numpy(np.array(resized, dtype=np.uint8)).permute(2, 0, 1).contiguous()
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.bfloat16)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=torch.bfloat16)[:, None, None]
    if mode == "bf16_math":
        x = x.to(torch.bfloat16) / 255.0
    else:
        x = x / 255.0
    # in-place ops keep x's dtype: fp32 with bf16-valued constants, or bf16 throughout
    x -= mean
    x /= std
    if mode == "fp32_then_bf16":
        x = x.to(torch.bfloat16)
    return x.float()[None]


def smart_resize(
    height: int,
    width: int,
    factor: int = QWEN_FACTOR,
    min_pixels: int = QWEN_MIN_PIXELS,
    max_pixels: int = QWEN_MAX_PIXELS,
) -> tuple[int, int]:
    """qwen_vl_utils' target (height, width): multiples of `factor`, area within [min_pixels, max_pixels]."""
    if max(height, width) / min(height, width) > QWEN_MAX_RATIO:
        raise ValueError(f"aspect ratio above {QWEN_MAX_RATIO}: {width}x{height}")
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def qwen_resize(
    image: Image.Image,
    factor: int = QWEN_FACTOR,
    min_pixels: int = QWEN_MIN_PIXELS,
    max_pixels: int = QWEN_MAX_PIXELS,
) -> Image.Image:
    """What qwen_vl_utils' process_vision_info hands to the processor: RGB, smart-resized with PIL bicubic.

    Then call the Qwen-VL image processor with `**SA2VA_QWEN_PROCESSOR_KWARGS` to match Sa2VA.
    """
    if image.mode == "RGBA":  # qwen_vl_utils composites transparency onto white
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.split()[3])
        image = background
    image = _rgb(image)
    h, w = smart_resize(image.height, image.width, factor, min_pixels, max_pixels)
    return pillow13_resize(image, (w, h))
