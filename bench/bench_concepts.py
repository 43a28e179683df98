"""Concept-search benchmark: K phrases on one image, SAM 3's vision features computed once vs re-encoded per phrase.

Once (ours): `ConceptSegmenter.encode` once, then the K phrases in one batched `segment` call. Re-encoded (the
plain `Sam3Processor` + `Sam3Model` loop): the image is encoded again for every phrase. The model is random and
scaled down so that it runs on a CPU, keeping SAM 3's proportions (the ViT backbone dominates the cost): a
ViT of `--width` x `--layers` at `--size` px, 14 px patches, a 128-wide text encoder, DETR and mask decoder with
100 queries. Figures: median wall time of `--repeats` runs after one warm-up.

    python -m bench.bench_concepts [--size 448] [--width 384] [--layers 8] [--repeats 3]
"""

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from transformers import Sam3Config, Sam3ImageProcessor, Sam3Model, Sam3Processor

from model.segmenters.concepts import ConceptOptions, ConceptPrompt, ConceptPrompts, ConceptSegmenter
from model.tiny import build_clip_tokenizer

SHARED_PHOTO = Path(__file__).resolve().parents[2] / "shared" / "data" / "images" / "groceries.jpg"
PHRASES = ["apple", "cup", "bottle", "banana", "bag", "table", "person", "yellow school bus"]


def scaled_sam3(size: int, width: int, layers: int) -> ConceptSegmenter:
    tokenizer = build_clip_tokenizer()
    grid = size // 14
    text = dict(hidden_size=128, intermediate_size=512, num_attention_heads=4)
    config = Sam3Config(
        vision_config=dict(
            backbone_config=dict(model_type="sam3_vit_model", hidden_size=width, intermediate_size=4 * width,
                                 num_hidden_layers=layers, num_attention_heads=width // 64, image_size=size,
                                 patch_size=14, window_size=8, global_attn_indexes=[layers // 2 - 1, layers - 1],
                                 pretrain_image_size=size),
            fpn_hidden_size=128, backbone_feature_sizes=[[4 * grid, 4 * grid], [2 * grid, 2 * grid], [grid, grid]],
            scale_factors=[4.0, 2.0, 1.0]),
        text_config=dict(text, vocab_size=len(tokenizer), projection_dim=128, num_hidden_layers=4,
                         max_position_embeddings=32, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id),
        geometry_encoder_config=dict(text, num_layers=1),
        detr_encoder_config=dict(text, num_layers=3),
        detr_decoder_config=dict(text, num_layers=3, num_queries=100),
        mask_decoder_config=dict(hidden_size=128, num_attention_heads=4),
    )
    torch.manual_seed(0)
    model = Sam3Model(config).eval()
    processor = Sam3Processor(Sam3ImageProcessor(size={"height": size, "width": size}), tokenizer)
    return ConceptSegmenter(model, processor, ConceptOptions(max_phrases=len(PHRASES)))


def timed(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=Path, default=SHARED_PHOTO)
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--width", type=int, default=384)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    image = (Image.open(args.image).convert("RGB") if args.image.exists()
             else Image.fromarray(np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)))
    segmenter = scaled_sam3(args.size, args.width, args.layers)
    params = sum(p.numel() for p in segmenter.model.parameters()) / 1e6
    vision = sum(p.numel() for p in segmenter.model.vision_encoder.parameters()) / 1e6
    print(f"SAM 3 (random, {params:.1f}M parameters, {vision:.1f}M in the vision encoder), {args.size} px, "
          f"image {image.width}x{image.height}, torch threads {torch.get_num_threads()}")

    def once(k: int) -> None:
        segmenter.segment(segmenter.encode(image), ConceptPrompts([ConceptPrompt(p) for p in PHRASES[:k]]))

    def re_encoded(k: int) -> None:
        for phrase in PHRASES[:k]:
            segmenter.segment(segmenter.encode(image), ConceptPrompts([ConceptPrompt(phrase)]))

    with torch.inference_mode():
        rows = [(k, timed(lambda: once(k), args.repeats), timed(lambda: re_encoded(k), args.repeats))
                for k in (1, 4, 8)]
    base = rows[0][1]
    print(f"{'K':>3} {'features once (s)':>18} {'re-encoded (s)':>15} {'once / K=1':>11} {'speed-up':>9}")
    for k, ours, naive in rows:
        print(f"{k:>3} {ours:>18.3f} {naive:>15.3f} {ours / base:>10.2f}x {naive / ours:>8.2f}x")


if __name__ == "__main__":
    main()
