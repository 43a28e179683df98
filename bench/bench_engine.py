"""Engine benchmark: our turn pipeline against the naive one, for 1, 4 and 8 objects.

Ours: [SEG] states captured by hooks during `generate`; SAM2 image embeddings computed once; all objects decoded
in one batched mask-decoder call. Naive (what peers do): `generate(output_hidden_states=True)`, and SAM2's image
encoder run again for every [SEG]. The model is small and random: a Hiera-T-shaped SAM2 at 1024 px (the real
SAM2 input size) and a small LLM; answers are forced so that each case has exactly N [SEG].

    python -m bench.bench_engine [--image PHOTO] [--layers 4 8]
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from bench.common import Forced
from bench.sam2_configs import hiera_t_sam2_config
from model.inference import SegChat
from model.modeling import SegChatModel
from model.tiny import build_tokenizer, tiny_config

SHARED_PHOTO = Path(__file__).resolve().parents[2] / "shared" / "data" / "images" / "groceries.jpg"


def small_chat(layers: int) -> SegChat:
    tokenizer = build_tokenizer("qwen2_5_vl")
    text_dims = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=layers, num_attention_heads=16,
                     num_key_value_heads=8)
    config = tiny_config("qwen2_5_vl", tokenizer, text_dims, qwen_max_pixels=448 * 448)  # 256 image tokens
    config.sam2_config = hiera_t_sam2_config()
    config.vlm_config.vision_config.out_hidden_size = 256
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        SegChatModel(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        from transformers import Qwen2VLImageProcessor

        Qwen2VLImageProcessor(patch_size=14).save_pretrained(folder)
        return SegChat.from_pretrained(folder)


def answer_ids(chat: SegChat, n: int) -> list[int]:
    text = "Here: " + " and ".join(f"<p>object {k}</p> [SEG]" for k in range(n)) + ".<|im_end|>"
    return chat.processor.tokenizer(text, add_special_tokens=False)["input_ids"]


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def ours(chat: SegChat, image: Image.Image, n: int) -> dict:
    chat.generate_options = {"logits_processor": [Forced(answer_ids(chat, n))]}
    sam_time = 0.0
    segmenter = chat.segmenter
    encode, segment = segmenter.encode, segmenter.segment

    def counted(fn):
        def run(*args, **kwargs):
            nonlocal sam_time
            out, seconds = timed(fn, *args, **kwargs)
            sam_time += seconds
            return out
        return run

    segmenter.encode, segmenter.segment = counted(encode), counted(segment)
    try:
        reply, total = timed(chat.new_conversation().ask, "Segment the objects.", image=image)
    finally:
        del segmenter.encode, segmenter.segment
    assert len(reply.segments) == n
    # What the capture keeps: N vectors of the hidden size.
    kept = n * chat.model.config.text_hidden_size * 4
    return {"sam2_s": sam_time, "total_s": total, "capture_bytes": kept}


def naive(chat: SegChat, image: Image.Image, n: int) -> dict:
    start = time.perf_counter()
    processor, model = chat.processor, chat.model
    vision = processor.encode_images([image])
    prompt = processor.user_turn("Segment the objects.", vision)
    inputs = processor.model_inputs(torch.tensor([prompt]), vision, chat.device, model.vlm.dtype)
    out = model.vlm.generate(**inputs, max_new_tokens=256, do_sample=False, output_hidden_states=True,
                             return_dict_in_generate=True, logits_processor=[Forced(answer_ids(chat, n))],
                             eos_token_id=processor.prompts.stop_ids, pad_token_id=processor.tokenizer.pad_token_id)
    kept = sum(t.numel() * t.element_size() for step in out.hidden_states for t in step)
    new_ids = out.sequences[0, len(prompt):].tolist()
    # hidden_states[i] holds the states of the token fed at step i; [SEG] generated at step i is fed at i + 1.
    states = torch.cat([out.hidden_states[i + 1][-1][0, -1:] for i, t in enumerate(new_ids[:-1])
                        if t == processor.seg_token_id])
    prompts = model.project(states)
    sam_start = time.perf_counter()
    with torch.no_grad():
        for k in range(n):  # SAM2 image features recomputed per [SEG]
            features = chat.segmenter.encode(image)
            decoded = model.decode_masks(features, prompts[k : k + 1])
            model.upsample(decoded.low_res_logits, features.original_size)
    sam_time = time.perf_counter() - sam_start
    return {"sam2_s": sam_time, "total_s": time.perf_counter() - start, "capture_bytes": kept}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image", type=Path, default=SHARED_PHOTO)
    parser.add_argument("--layers", type=int, nargs="+", default=[4, 8])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    image = Image.open(args.image).convert("RGB") if args.image.exists() else \
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8))
    print(f"image {image.width}x{image.height}, {args.threads} threads, SAM2 Hiera-T shape at 1024 px")
    print(f"{'layers':>6} {'objects':>7} | {'SAM2 ours':>9} {'naive':>7} {'ratio':>6} | {'total ours':>10} "
          f"{'naive':>7} | {'capture ours':>12} {'naive':>10}")
    for layers in args.layers:
        chat = small_chat(layers)
        ours(chat, image, 1)  # warm-up
        for n in (1, 4, 8):
            a, b = ours(chat, image, n), naive(chat, image, n)
            print(f"{layers:>6} {n:>7} | {a['sam2_s']:>8.2f}s {b['sam2_s']:>6.2f}s {b['sam2_s'] / a['sam2_s']:>5.1f}x | "
                  f"{a['total_s']:>9.2f}s {b['total_s']:>6.2f}s | {a['capture_bytes'] / 1e3:>9.1f} kB "
                  f"{b['capture_bytes'] / 1e6:>7.1f} MB")


if __name__ == "__main__":
    main()
