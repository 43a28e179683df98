"""InternVL (InternViT + Qwen2/Llama/...): dynamic 448-px tiling, `<img>` + `<IMG_CONTEXT>` runs, and Sa2VA's
region prompts (`<vp>` runs filled from the image's features under a region mask)."""

import numpy as np
import torch
import torch.nn.functional as F
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

    def region_cells(self, mask: np.ndarray) -> torch.Tensor:
        """A region mask (bool H x W at the image's size) on one tile's token grid: the cells whose features fill
        its `<vp>` tokens (Sa2VA's way: nearest-neighbour resize of the whole mask to the grid)."""
        side = int(self.tokens_per_tile ** 0.5)
        grid = F.interpolate(torch.from_numpy(np.asarray(mask, dtype=np.float32))[None, None], size=(side, side),
                             mode="nearest")
        return grid[0, 0].bool()

    def encode_images(self, images: list[Image.Image], as_video: bool = False) -> VisionInputs:
        if as_video:
            tiles = [internvl_video_frame(im, tile=self.tile_size) for im in images]
        else:
            tiles = [internvl_tiles(im, tile=self.tile_size, max_tiles=self.config.max_tiles) for im in images]
        context = self.prompts.tokenizer.convert_tokens_to_ids("<IMG_CONTEXT>")
        # One image-token run per image (all its tiles, tile-major) or per video frame.
        runs = [[context] * (self.tokens_per_tile * t.shape[0]) for t in tiles]
        return VisionInputs(runs, {"pixel_values": torch.cat(tiles)})

    def split_pictures(self, vision: VisionInputs) -> list[VisionInputs]:
        tiles = vision.tensors["pixel_values"].split([len(run) // self.tokens_per_tile for run in vision.runs])
        return [VisionInputs([run], {"pixel_values": rows}) for run, rows in zip(vision.runs, tiles)]
