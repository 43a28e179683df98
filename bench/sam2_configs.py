"""SAM2's published Hiera-T shape (random weights) for the benchmarks."""

from transformers import Sam2VideoConfig


def hiera_t_sam2_config() -> Sam2VideoConfig:
    """SAM2.1 Hiera-T: 96-wide trunk of 1/2/7/2 blocks, 256-wide FPN and decoder, 1024 px input."""
    dims = [96 * 2**i for i in range(4)]
    return Sam2VideoConfig(vision_config=dict(
        model_type="sam2_vision_model",
        backbone_config=dict(model_type="sam2_hiera_det_model", hidden_size=96, num_attention_heads=1,
                             blocks_per_stage=[1, 2, 7, 2], embed_dim_per_stage=dims,
                             num_attention_heads_per_stage=[2**i for i in range(4)],
                             window_size_per_stage=[8, 4, 14, 7], global_attention_blocks=[5, 7, 9],
                             image_size=[1024, 1024], window_positional_embedding_background_size=[7, 7]),
        backbone_channel_list=dims[::-1]))
