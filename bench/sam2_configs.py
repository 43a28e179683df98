"""SAM2 shapes of the published checkpoints (random weights) for the benchmarks."""

from transformers import Sam2VideoConfig

# Hiera trunks: width, heads, blocks per stage, window sizes, global-attention blocks.
_HIERA = {
    "tiny": (96, 1, [1, 2, 7, 2], [8, 4, 14, 7], [5, 7, 9]),
    "large": (144, 2, [2, 6, 36, 4], [8, 4, 16, 8], [23, 33, 43]),
}


def hiera_sam2_config(variant: str) -> Sam2VideoConfig:
    """SAM2.1's shape for `variant` ("tiny": Hiera-T, "large": Hiera-L): 256-wide FPN and decoder, 1024 px input."""
    width, heads, blocks, windows, global_blocks = _HIERA[variant]
    dims = [width * 2**i for i in range(4)]
    return Sam2VideoConfig(vision_config=dict(
        model_type="sam2_vision_model",
        backbone_config=dict(model_type="sam2_hiera_det_model", hidden_size=width, num_attention_heads=heads,
                             blocks_per_stage=blocks, embed_dim_per_stage=dims,
                             num_attention_heads_per_stage=[heads * 2**i for i in range(4)],
                             window_size_per_stage=windows, global_attention_blocks=global_blocks,
                             image_size=[1024, 1024], window_positional_embedding_background_size=[7, 7]),
        backbone_channel_list=dims[::-1]))
