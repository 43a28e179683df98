"""Qwen2.5-VL and Qwen3-VL: native-resolution patches, `<|vision_start|><|image_pad|>...` runs, M-RoPE."""

import torch
from PIL import Image

from model.families.base import Family, VisionInputs
from model.preprocess import qwen_resize


class QwenVLFamily(Family):
    name = "qwen_vl"
    uses_image_processor = True

    def encode_images(self, images: list[Image.Image], as_video: bool = False) -> VisionInputs:
        # Sa2VA feeds video frames to Qwen as separate images, so both cases take the image path. As there, the
        # first resize uses qwen_vl_utils' own pixel bounds; the configured bounds apply in the processor.
        config = self.config
        resized = [qwen_resize(im) for im in images]
        size = {"shortest_edge": config.qwen_min_pixels, "longest_edge": config.qwen_max_pixels}
        out = self.image_processor(images=resized, size=size, return_tensors="pt")
        pad = self.prompts.tokenizer.convert_tokens_to_ids("<|image_pad|>")
        merge = self.image_processor.merge_size ** 2
        runs = [[pad] * int(grid.prod().item() // merge) for grid in out["image_grid_thw"]]
        return VisionInputs(runs, {"pixel_values": out["pixel_values"], "image_grid_thw": out["image_grid_thw"]})

    def split_pictures(self, vision: VisionInputs) -> list[VisionInputs]:
        grids = vision.tensors["image_grid_thw"]
        pixels = vision.tensors["pixel_values"].split(grids.prod(-1).tolist())  # a row per patch
        return [VisionInputs([run], {"pixel_values": rows, "image_grid_thw": grid[None]})
                for run, rows, grid in zip(vision.runs, pixels, grids)]

    def token_types(self, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        vlm_config = self.config.vlm_config
        types = (input_ids == vlm_config.image_token_id).int() + 2 * (input_ids == vlm_config.video_token_id).int()
        return {"mm_token_type_ids": types}
