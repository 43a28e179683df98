"""InternVL (InternViT + Qwen2/Llama/...): dynamic 448-px tiling, `<img>` + `<IMG_CONTEXT>` runs."""

import torch
from PIL import Image

from model.families.base import Family, VisionInputs
from model.preprocess import internvl_tiles, internvl_video_frame


class InternVLFamily(Family):
    name = "internvl"

    @property
    def tile_size(self) -> int:
        size = self.config.vlm_config.vision_config.image_size
        return size[0] if isinstance(size, (list, tuple)) else size

    @property
    def tokens_per_tile(self) -> int:
        patch = self.config.vlm_config.vision_config.patch_size
        patch = patch[0] if isinstance(patch, (list, tuple)) else patch
        side = self.tile_size // patch * self.config.vlm_config.downsample_ratio
        return int(side * side)

    def encode_images(self, images: list[Image.Image], as_video: bool = False) -> VisionInputs:
        if as_video:
            tiles = [internvl_video_frame(im, tile=self.tile_size) for im in images]
        else:
            tiles = [internvl_tiles(im, tile=self.tile_size, max_tiles=self.config.max_tiles) for im in images]
        context = self.prompts.tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
        # One image-token run per image (all its tiles, tile-major) or per video frame.
        runs = [[context] * (self.tokens_per_tile * t.shape[0]) for t in tiles]
        return VisionInputs(runs, {"pixel_values": torch.cat(tiles)})
