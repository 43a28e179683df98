"""Tiny random SegChat checkpoints for tests and demos: no network, built in seconds.

    python -m model.tiny OUT_DIR --family {internvl,qwen2_5_vl,qwen3_vl,sam3,sam3_video} [--plain]

`--plain` writes the family's plain VLM (no `[SEG]`, no SAM2: the layout of the hub's instruct models), which
`SegChat.from_pretrained(OUT_DIR, concepts=SAM3_DIR)` loads in agent mode.

`--family sam3` writes a tiny random SAM 3 detector (image concept segmentation: `Sam3Model` + `Sam3Processor`);
`--family sam3_video` writes the published layout (`Sam3VideoModel`: detector + tracker, with both processors) that
also tracks concepts in videos. `SegChat.from_pretrained(..., concepts=OUT_DIR)` loads either.
"""

import argparse
import json
from pathlib import Path

import torch
from torch import nn
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    CLIPTokenizer,
    InternVLConfig,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2VLImageProcessor,
    Qwen3VLConfig,
    Sam2VideoConfig,
    Sam3Config,
    Sam3ImageProcessor,
    Sam3Model,
    Sam3Processor,
    Sam3VideoConfig,
    Sam3VideoModel,
    Sam3VideoProcessor,
)
from transformers.models.sam2_video.video_processing_sam2_video import Sam2VideoVideoProcessor

from model.config import FAMILIES, SegChatConfig
from model.modeling import SegChatModel

SEG_TOKENS = ["[SEG]", "<p>", "</p>"]
CHAT_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
MEDIA_TOKENS = {
    "internvl": ["<img>", "</img>", "<IMG_CONTEXT>", "<vp>", "</vp>"],
    "qwen2_5_vl": ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"],
    "qwen3_vl": ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"],
}
_CORPUS = [
    "Please segment the red object and explain why.",
    "Sure, it is the apple because it is ripe. The answer is [SEG].",
    "Which one is the ripest? What color is it? Where is the dog, the cat, the car?",
    "The shape with the most corners is the hexagon, left of the blue circle.",
    "user assistant system image video frame 0123456789 , . ! ? ' \" ( ) :",
]
TEXT_DIMS = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, head_dim=16)


def build_tokenizer(family: str, vocab_size: int = 400, corpus: list[str] | None = None,
                    seg_tokens: bool = True) -> PreTrainedTokenizerFast:
    """A byte-level BPE trained in-process, with the family's chat and media tokens, and the segmentation tokens
    unless `seg_tokens` is False (a plain VLM's layout).

    `corpus` adds training text (e.g. a task's instructions and answers, so its words become single tokens)."""
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    bpe.train_from_iterator(_CORPUS * 4 + list(corpus or []), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    extra = CHAT_TOKENS + MEDIA_TOKENS[family] + (SEG_TOKENS if seg_tokens else [])
    tokenizer.add_special_tokens({"additional_special_tokens": extra})
    return tokenizer


def tiny_sam2_config(image_size: int = 128, width: int = 128) -> Sam2VideoConfig:
    """A 1.6M-parameter SAM2 (video-capable: the memory path needs width > 64)."""
    grid = image_size // 4
    return Sam2VideoConfig(
        vision_config=dict(
            model_type="sam2_vision_model",
            backbone_config=dict(
                model_type="sam2_hiera_det_model", hidden_size=16, num_attention_heads=1,
                blocks_per_stage=[1, 1, 2, 1], embed_dim_per_stage=[16, 32, 64, 128],
                num_attention_heads_per_stage=[1, 1, 2, 2], window_size_per_stage=[4, 4, 4, 4],
                global_attention_blocks=[3], image_size=[image_size, image_size],
                window_positional_embedding_background_size=[4, 4],
            ),
            backbone_channel_list=[128, 64, 32, 16],
            backbone_feature_sizes=[[grid, grid], [grid // 2, grid // 2], [grid // 4, grid // 4]],
            fpn_hidden_size=width,
        ),
        prompt_encoder_config=dict(hidden_size=width, image_size=image_size, patch_size=16),
        mask_decoder_config=dict(hidden_size=width, mlp_dim=256, num_attention_heads=4, iou_head_hidden_dim=width),
        image_size=image_size, memory_attention_hidden_size=width, memory_attention_num_layers=1,
        memory_attention_feed_forward_hidden_size=256, memory_attention_rope_feat_sizes=[grid // 4, grid // 4],
        memory_encoder_hidden_size=width, mask_downsampler_embed_dim=width, memory_fuser_embed_dim=width,
        memory_fuser_intermediate_dim=256,
    )


def _vlm_config(family: str, tokenizer: PreTrainedTokenizerFast, text_dims: dict):
    ids = tokenizer.convert_tokens_to_ids
    text = dict(text_dims, vocab_size=len(tokenizer), bos_token_id=None, eos_token_id=ids("<|im_end|>"),
                pad_token_id=ids("<|endoftext|>"), tie_word_embeddings=False)
    if family == "internvl":
        return InternVLConfig(
            text_config=dict(text, model_type="qwen2"),
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                               image_size=[224, 224], patch_size=[14, 14]),
            image_token_id=ids("<IMG_CONTEXT>"), image_seq_length=64, tie_word_embeddings=False,
        )
    media = dict(image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                 vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
                 tie_word_embeddings=False)
    vision = dict(depth=2, hidden_size=32, num_heads=2, intermediate_size=64, out_hidden_size=text_dims["hidden_size"])
    if family == "qwen2_5_vl":
        rope = {"rope_type": "default", "mrope_section": [2, 3, 3]}
        return Qwen2_5_VLConfig(text_config=dict(text, rope_scaling=rope), vision_config=dict(
            vision, patch_size=14, fullatt_block_indexes=[1], window_size=56), **media)
    rope = {"rope_type": "default", "mrope_section": [4, 2, 2], "mrope_interleaved": True}
    return Qwen3VLConfig(text_config=dict(text, rope_scaling=rope), vision_config=dict(
        vision, patch_size=16, num_position_embeddings=256, deepstack_visual_indexes=[0]), **media)


def tiny_config(family: str, tokenizer: PreTrainedTokenizerFast, text_dims: dict | None = None,
                **overrides) -> SegChatConfig:
    """`text_dims` replaces entries of TEXT_DIMS (language-model shape); `overrides` set SegChatConfig fields."""
    if family not in FAMILIES:
        raise ValueError(f"Unknown family {family!r}; expected one of {FAMILIES}.")
    settings = {"max_tiles": 2, "qwen_min_pixels": 32 * 32, "qwen_max_pixels": 128 * 128, **overrides}
    return SegChatConfig(
        vlm_config=_vlm_config(family, tokenizer, {**TEXT_DIMS, **(text_dims or {})}).to_dict(),
        sam2_config=tiny_sam2_config().to_dict(), family=family,
        seg_hidden_state="last_layer" if family == "qwen3_vl" else "final_norm", **settings,
    )


OBJECT_SCORE_BIAS = 2.0
_DEFAULT_INIT_TYPES = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d, nn.LayerNorm, nn.Embedding)


def torch_default_init(module: nn.Module) -> None:
    """Re-initialise `module`'s layers with PyTorch's defaults, as SAM2's own code leaves them.

    transformers' normal(0, 0.02) init makes a randomly built SAM2 mask decoder output near-constant logits
    (std ~5e-4 here), so a model trained from scratch sits for hundreds of steps before its masks start to learn.
    """
    for layer in module.modules():
        if isinstance(layer, _DEFAULT_INIT_TYPES):
            layer.reset_parameters()


def build_tiny(out_dir: str | Path, family: str = "qwen2_5_vl", seed: int = 0, corpus: list[str] | None = None,
               text_dims: dict | None = None, default_init_mask_path: bool = False, **overrides) -> Path:
    """Write a random-weight checkpoint in SegChat's native format and return its folder.

    `corpus`, `text_dims` and `overrides` shape a task-specific tiny model (see `build_tokenizer`, `tiny_config`);
    `default_init_mask_path` gives SAM2 and the projector PyTorch's default init (for training from scratch).
    """
    out_dir = Path(out_dir)
    tokenizer = build_tokenizer(family, corpus=corpus)
    torch.manual_seed(seed)
    model = SegChatModel(tiny_config(family, tokenizer, text_dims, **overrides))
    if default_init_mask_path:
        torch_default_init(model.sam2)
        torch_default_init(model.projector)
    with torch.no_grad():  # random objects count as present (SAM2 object score > 0); absence tests lower it
        model.sam2.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(OBJECT_SCORE_BIAS)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    if family != "internvl":
        patch = model.config.vlm_config.vision_config.patch_size
        Qwen2VLImageProcessor(patch_size=patch, merge_size=2, temporal_patch_size=2).save_pretrained(out_dir)
    return out_dir


def build_tiny_plain(out_dir: str | Path, family: str = "qwen3_vl", seed: int = 0) -> Path:
    """Write a random-weight plain VLM (no `[SEG]`, no SAM2) in the layout of the hub's instruct models: the
    transformers VLM, its tokenizer and (Qwen families) image processor. It loads in agent mode."""
    out_dir = Path(out_dir)
    tokenizer = build_tokenizer(family, seg_tokens=False)
    torch.manual_seed(seed)
    config = tiny_config(family, tokenizer)
    SegChatModel(config).vlm.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    if family != "internvl":
        Qwen2VLImageProcessor(patch_size=config.vlm_config.vision_config.patch_size, merge_size=2,
                              temporal_patch_size=2, min_pixels=config.qwen_min_pixels,
                              max_pixels=config.qwen_max_pixels).save_pretrained(out_dir)
    return out_dir


SAM3_CORPUS = ["a yellow school bus", "the red car, the blue cup, a spoon, a dog, a cat, a person, an apple",
               "every object: shape, circle, square, triangle, fruit, bottle, chair, table, tree, visual"]
SAM3_IMAGE_SIZE = 112


def build_clip_tokenizer(vocab_size: int = 200) -> CLIPTokenizer:
    """A CLIP-style BPE (lower-cased words ending in `</w>`, CLIP's special tokens) trained in-process."""
    reference = CLIPTokenizer()  # CLIP's normalizer and pre-tokenizer, with an empty vocabulary
    bpe = Tokenizer(models.BPE(end_of_word_suffix="</w>", unk_token="<|endoftext|>"))
    bpe.normalizer = reference.backend_tokenizer.normalizer
    bpe.pre_tokenizer = reference.backend_tokenizer.pre_tokenizer
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|startoftext|>", "<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), end_of_word_suffix="</w>")
    bpe.train_from_iterator(SAM3_CORPUS * 4, trainer=trainer)
    trained = json.loads(bpe.to_str())["model"]
    vocab = trained["vocab"]
    for char in pre_tokenizers.ByteLevel.alphabet():  # as in CLIP's vocabulary: every byte may end a word
        vocab.setdefault(char + "</w>", len(vocab))
    return CLIPTokenizer(vocab=vocab, merges=[tuple(pair) for pair in trained["merges"]])


def tiny_sam3_config(tokenizer: CLIPTokenizer, width: int = 32) -> Sam3Config:
    """A SAM 3 detector (ViT 2 x 64, text 1 x 32, DETR 1 x `width`, 10 queries) on 112 px images: 0.3M
    parameters at width 32. The video tracker needs width 128 (its memory features are 64 wide, and it reads the
    first three of the four FPN levels, as in the published model)."""
    sizes = dict(hidden_size=width, num_attention_heads=2, intermediate_size=64)
    video = width > 64
    return Sam3Config(
        vision_config=dict(
            backbone_config=dict(model_type="sam3_vit_model", hidden_size=64, intermediate_size=128,
                                 num_hidden_layers=2, num_attention_heads=2, image_size=SAM3_IMAGE_SIZE,
                                 patch_size=14, window_size=4, global_attn_indexes=[1],
                                 pretrain_image_size=SAM3_IMAGE_SIZE),
            fpn_hidden_size=width, backbone_feature_sizes=[[32, 32], [16, 16], [8, 8]],
            scale_factors=[4.0, 2.0, 1.0, 0.5] if video else [4.0, 2.0, 1.0]),
        text_config=dict(sizes, hidden_size=32, vocab_size=len(tokenizer), projection_dim=width, num_hidden_layers=1,
                         max_position_embeddings=32, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
        geometry_encoder_config=dict(sizes, num_layers=1),
        detr_encoder_config=dict(sizes, num_layers=1),
        detr_decoder_config=dict(sizes, num_layers=1, num_queries=10),
        mask_decoder_config=dict(hidden_size=width, num_attention_heads=2),
    )


def tiny_sam3_video_config(tokenizer: CLIPTokenizer) -> Sam3VideoConfig:
    """Detector (width 128) + SAM2-style tracker (1 memory-attention layer) on 112 px frames. Detection thresholds
    are 0 so that a random model finds instances; the memory windows (2 memories, 4 object pointers, 2 conditioning
    frames) and `hotstart_delay` (4) are short so that a clip of a dozen frames exercises all of them."""
    width, grid = 128, SAM3_IMAGE_SIZE // 14
    detector = tiny_sam3_config(tokenizer, width)
    tracker = dict(
        model_type="sam3_tracker_video", image_size=SAM3_IMAGE_SIZE, vision_config=detector.vision_config.to_dict(),
        prompt_encoder_config=dict(hidden_size=width, image_size=SAM3_IMAGE_SIZE, patch_size=14),
        mask_decoder_config=dict(hidden_size=width, mlp_dim=256, num_attention_heads=4, iou_head_hidden_dim=width),
        memory_attention_hidden_size=width, memory_attention_num_layers=1, memory_attention_feed_forward_hidden_size=256,
        memory_attention_rope_feat_sizes=[grid, grid], memory_encoder_hidden_size=width,
        mask_downsampler_embed_dim=width, memory_fuser_embed_dim=width, memory_fuser_intermediate_dim=256,
        num_maskmem=3, max_object_pointers_in_encoder=4, max_cond_frame_num=2)
    return Sam3VideoConfig(detector_config=detector, tracker_config=tracker, low_res_mask_size=32,
                           score_threshold_detection=0.0, new_det_thresh=0.0, hotstart_delay=4,
                           hotstart_unmatch_thresh=3, hotstart_dup_thresh=3)


def build_tiny_sam3(out_dir: str | Path, seed: int = 0, video: bool = False) -> Path:
    """Write a random-weight SAM 3 with its processors (tokenizer included) and return its folder: the detector
    alone, or (`video`) the published detector + tracker layout."""
    out_dir = Path(out_dir)
    tokenizer = build_clip_tokenizer()
    torch.manual_seed(seed)
    model = Sam3VideoModel(tiny_sam3_video_config(tokenizer)) if video else Sam3Model(tiny_sam3_config(tokenizer))
    model.save_pretrained(out_dir)
    size = {"height": SAM3_IMAGE_SIZE, "width": SAM3_IMAGE_SIZE}
    image_processor = Sam3ImageProcessor(size=size)
    Sam3Processor(image_processor, tokenizer).save_pretrained(out_dir)
    if video:
        frames = Sam2VideoVideoProcessor(size=size, image_mean=image_processor.image_mean,
                                         image_std=image_processor.image_std)
        Sam3VideoProcessor(image_processor, frames, tokenizer).save_pretrained(out_dir)
    return out_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir")
    parser.add_argument("--family", choices=[*FAMILIES, "sam3", "sam3_video"], default="qwen2_5_vl")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plain", action="store_true",
                        help="a plain VLM (no [SEG], no SAM2; the hub instruct layout) that loads in agent mode")
    args = parser.parse_args()
    if args.family in ("sam3", "sam3_video"):
        print(build_tiny_sam3(args.out_dir, args.seed, video=args.family == "sam3_video"))
    elif args.plain:
        print(build_tiny_plain(args.out_dir, args.family, args.seed))
    else:
        print(build_tiny(args.out_dir, args.family, args.seed))


if __name__ == "__main__":
    main()
