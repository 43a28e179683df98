"""GPU benchmark: SegChat on Sa2VA-Qwen3-VL-4B at full size (published layout, random weights) in bf16, 8-bit and 4-bit.

    python -m bench.bench_gpu [--modes bf16 8bit 4bit] [--bandwidth-gbs GBS] [--decode-tokens 128] [--frames 32]
                              [--workdir DIR] [--smoke]

One command on a machine with a CUDA GPU (it exits with a message when there is none). It writes the release's
official layout (config.json, safetensors, tokenizer and processor files: `bench.common.release_checkpoint`; real
widths and depth, SAM2 Hiera-L, random weights) in bf16 (9.4 GiB instead of the release's 18.8 GiB of fp32: the
load dtype is bf16 in every mode, so the converted cache is the same), converts it once through SegChat's cache
(timed apart), then per mode loads it with `SegChat.from_pretrained(folder, dtype=torch.bfloat16,
quantization=None | "8bit" | "4bit")` and measures:

- load s: `from_pretrained` from the converted cache (quantizing the language model on the way for 8/4-bit);
- peak VRAM: `torch.cuda.max_memory_allocated` over the load and every turn of the mode, and after the load;
- an image turn (after an untimed warm-up turn on the GPU) whose answer is forced (`bench.common.Forced`) to
  `--decode-tokens` tokens with one [SEG]: time to first token (first chunk of `conv.ask_stream`), prefill tokens/s
  (prompt tokens / the time from `generate`'s start to its first logits: the vision tower runs in that first
  forward pass), decode tokens/s (the tokens after the first / the rest of `generate`);
- decode against the memory-bandwidth bound: the bytes of weights one decoded token reads (the language model's
  layers and final norm, quantized as loaded, and the bf16 head; not the embeddings: one row each) over the GPU's
  memory bandwidth (a table by GPU name, or `--bandwidth-gbs`); the ratio is measured / bound;
- SAM2 per image: the image encoder (Hiera-L at 1024 px) and the mask decoding of the turn's [SEG], in ms;
- SAM2 per video frame: a `--frames`-frame clip (chat/examples/01_dog.mp4): SAM2's time in the turn (the LLM
  frames' features, then the propagation through the clip: every other frame encoded, memory attention, decoding;
  `VideoSegmenter.frame_features` and `.segment`) divided by its frames;
- a follow-up text question on the same image: time to first token (SegChat re-reads the whole conversation
  until multi-turn KV-cache reuse lands).

Every timing synchronizes the GPU. `--smoke` runs the same code on the CPU (peak RSS instead of VRAM) with one
text and one vision layer and a small SAM2 (Hiera-T's blocks, 16 wide), a short answer and 3 frames, to check the
code path where there is no GPU; its figures mean nothing. Expected on an H200 (not measured: no GPU was available
where this was written): a few minutes to write and convert the checkpoint, under a minute per mode.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from bench.common import (GIB, ROOT, Forced, machine, markdown_table, release_checkpoint, reset_peak_rss, rss_mib,
                          time_calls)

RELEASE = "Sa2VA-Qwen3-VL-4B"
MODES = {"bf16": None, "8bit": "8bit", "4bit": "4bit"}
IMAGE = ROOT / "chat" / "examples" / "example2.jpg"
VIDEO = ROOT / "chat" / "examples" / "01_dog.mp4"
# Memory bandwidth in GB/s (vendor figures), matched by substring of `torch.cuda.get_device_name()`, first match.
BANDWIDTH_GBS = [("GH200", 4000), ("H200", 4800), ("H100 NVL", 3900), ("H100 PCIe", 2000), ("H100", 3350),
                 ("B200", 8000), ("A100-SXM4-80GB", 2039), ("A100 80GB PCIe", 1935), ("A100", 1555),
                 ("L40S", 864), ("L40", 864), ("L4", 300), ("A10G", 600), ("A10", 600), ("RTX 6000 Ada", 960),
                 ("A6000", 768), ("4090", 1008), ("3090", 936), ("V100", 900), ("T4", 320)]
QUESTION = "Which item here would you use to make a salad? Segment it and explain why."
FOLLOW_UP = "Which one of them is the ripest?"
VIDEO_QUESTION = "Please segment the animal in this video."
SEG_ANSWER = "Sure, it is <p>the lettuce</p> [SEG]."
FOLLOW_UP_ANSWER = "The bananas look the ripest."
FILLER = " It is fresh and green."


# --- the device ---------------------------------------------------------------------------------------------


class Device:
    """CUDA, or the CPU for --smoke: synchronization and peak memory (VRAM allocated, or RSS)."""

    def __init__(self, cuda: bool):
        self.cuda = cuda
        self.name = torch.cuda.get_device_name() if cuda else "CPU"
        self.memory = "VRAM" if cuda else "RSS"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def now(self) -> float:
        self.sync()
        return time.perf_counter()

    def reset_peak(self) -> None:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        else:
            reset_peak_rss()

    def peak_gib(self) -> float:
        return torch.cuda.max_memory_allocated() / GIB if self.cuda else rss_mib("VmHWM:") / 1024

    def used_gib(self) -> float:
        return torch.cuda.memory_allocated() / GIB if self.cuda else rss_mib() / 1024

    def free(self) -> None:
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()


def bandwidth_gbs(device: Device, override: float | None) -> float | None:
    if override:
        return override
    return next((gbs for name, gbs in BANDWIDTH_GBS if name in device.name), None)


# --- what a decoded token reads -----------------------------------------------------------------------------


def _tensor_bytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def bytes_per_token(model) -> int:
    """Bytes of weights one decode step reads: the language model's parameters and buffers but its input embeddings
    (one row per token), as stored (bitsandbytes' packed weights plus their scales), and the output head."""
    vlm = model.vlm
    text = vlm.model.language_model
    total = 0
    for name, param in text.named_parameters():
        if name.startswith("embed_tokens."):
            continue
        total += _tensor_bytes(param)
        state = getattr(param, "quant_state", None)  # 4-bit: absmax (and the nested quantization's)
        if state is not None:
            total += _tensor_bytes(state.absmax)
            if getattr(state, "state2", None) is not None:
                total += _tensor_bytes(state.state2.absmax) + _tensor_bytes(state.state2.code)
        scales = getattr(param, "SCB", None)  # 8-bit: one scale per row
        if scales is not None:
            total += _tensor_bytes(scales)
    return total + sum(_tensor_bytes(p) for p in vlm.lm_head.parameters())


# --- one mode -----------------------------------------------------------------------------------------------


class SyncedForced(Forced):
    """`Forced` whose first-step timestamp waits for the GPU (the prefill's kernels have finished)."""

    def __init__(self, ids: list[int], device: Device):
        super().__init__(ids)
        self.device = device

    def __call__(self, input_ids, scores):
        if self.start is None or input_ids.shape[1] != self.last + 1:
            self.device.sync()
        return super().__call__(input_ids, scores)


@contextmanager
def timing(owner, attribute: str, device: Device, spent: list):
    """While active, `owner.<attribute>` records (start, end) of each call, synchronized, in `spent`."""
    restore = time_calls(owner, attribute, lambda start, end: spent.append((start, end)), clock=device.now)
    try:
        yield spent
    finally:
        restore()


def answer_ids(tokenizer, text: str, length: int | None = None) -> list[int]:
    """The ids of `text`, padded with FILLER's to `length` tokens in all (never cut short), the last `<|im_end|>`."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if length and len(ids) < length - 1:
        filler = tokenizer(FILLER, add_special_tokens=False)["input_ids"]
        ids = (ids + filler * length)[: length - 1]
    return ids + [tokenizer.convert_tokens_to_ids("<|im_end|>")]


def measure_mode(folder: Path, mode: str, device: Device, args) -> dict:
    from PIL import Image
    from transformers import LogitsProcessorList

    from model import SegChat

    device.free()
    device.reset_peak()
    start = device.now()
    chat = SegChat.from_pretrained(folder, device="cuda" if device.cuda else "cpu", dtype=torch.bfloat16,
                                   quantization=MODES[mode])
    row = {"load_s": device.now() - start, "loaded_gib": device.used_gib(),
           "weights_per_token": bytes_per_token(chat.model)}
    tokenizer = chat.processor.tokenizer
    forced = SyncedForced([], device)
    chat.generate_options["logits_processor"] = LogitsProcessorList([forced])
    image = Image.open(args.image).convert("RGB")

    def stream(conv, text: str, ids: list[int], **media) -> tuple[float, object, list]:
        """Ask with a forced answer; (time to first chunk, reply, generate's (start, end))."""
        forced.reset(ids)
        spent: list = []
        with timing(chat.model.vlm, "generate", device, spent):
            begin, first = device.now(), None
            for item in conv.ask_stream(text, **media):
                first = first or device.now() - begin
        return first, item, spent

    short = answer_ids(tokenizer, SEG_ANSWER)
    if device.cuda:  # warm-up: kernels, allocator, cuBLAS handles
        stream(chat.new_conversation(), QUESTION, short, image=image)
    sam2: dict[str, list] = {"encode": [], "segment": [], "video": []}
    conv = chat.new_conversation()
    with timing(chat.segmenter, "encode", device, sam2["encode"]), \
            timing(chat.segmenter, "segment", device, sam2["segment"]):
        ttft, reply, spent = stream(conv, QUESTION, answer_ids(tokenizer, SEG_ANSWER, args.decode_tokens),
                                    image=image)
    assert len(reply.segments) == 1, reply.text
    (gen_start, gen_end), = spent
    row.update(ttft_s=ttft, prompt_tokens=forced.start, decoded=forced.steps,
               prefill_tps=forced.start / (forced.first_at - gen_start),
               decode_tps=(forced.steps - 1) / (gen_end - forced.first_at),
               sam2_encode_ms=1000 * sum(b - a for a, b in sam2["encode"]),
               sam2_decode_ms=1000 * sum(b - a for a, b in sam2["segment"]))
    row["follow_up_ttft_s"], _, _ = stream(conv, FOLLOW_UP, answer_ids(tokenizer, FOLLOW_UP_ANSWER))
    row["follow_up_prompt_tokens"] = forced.start
    with timing(chat.video_segmenter, "frame_features", device, sam2["video"]), \
            timing(chat.video_segmenter, "segment", device, sam2["video"]):
        _, reply, _ = stream(chat.new_conversation(), VIDEO_QUESTION, short, video=str(args.video),
                             max_frames=args.frames)
    frames = reply.video_stats.frames_processed
    row.update(video_frames=frames, video_ms_per_frame=1000 * sum(b - a for a, b in sam2["video"]) / frames,
               peak_gib=device.peak_gib())
    del chat, conv, reply
    device.free()
    return row


# --- the run ------------------------------------------------------------------------------------------------


def report(rows: dict, device: Device, bandwidth: float | None, args, setup: dict) -> None:
    table = []
    for mode, r in rows.items():
        bound = bandwidth * 1e9 / r["weights_per_token"] if bandwidth else None
        table.append([mode, f"{r['load_s']:.1f}", f"{r['peak_gib']:.2f} ({r['loaded_gib']:.2f})",
                      f"{r['prefill_tps']:.0f}", f"{r['decode_tps']:.1f}",
                      f"{r['weights_per_token'] / GIB:.2f}", f"{bound:.0f}" if bound else "-",
                      f"{r['decode_tps'] / bound:.0%}" if bound else "-", f"{r['ttft_s']:.3f}",
                      f"{r['sam2_encode_ms']:.0f} + {r['sam2_decode_ms']:.0f}", f"{r['video_ms_per_frame']:.0f}",
                      f"{r['follow_up_ttft_s']:.3f}"])
    first = next(iter(rows.values()))
    print(f"\nMachine: {device.name}, memory bandwidth "
          f"{f'{bandwidth:.0f} GB/s' if bandwidth else 'unknown (pass --bandwidth-gbs)'}; {machine()}")
    print(f"Checkpoint: {RELEASE} published layout, {setup['depth']}, random bf16 weights; {setup['write']}, "
          f"{setup['convert']} (not in the table). Image turn: "
          f"{first['prompt_tokens']} prompt tokens, {first['decoded']} decoded (forced, one [SEG]); follow-up: "
          f"{first['follow_up_prompt_tokens']} prompt tokens; video: {first['video_frames']} frames.\n")
    print(markdown_table(
        ["mode", "load s", f"peak {device.memory} GiB (after load)", "prefill tok/s", "decode tok/s",
         "GiB read / token", "bandwidth bound tok/s", "decode / bound", "TTFT s", "SAM2 image ms (encode + decode)",
         "SAM2 video ms / frame", "follow-up TTFT s"], table))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=list(MODES))
    parser.add_argument("--bandwidth-gbs", type=float, help="GPU memory bandwidth (default: by GPU name)")
    parser.add_argument("--decode-tokens", type=int, default=128, help="length of the forced image-turn answer")
    parser.add_argument("--frames", type=int, default=32, help="frames of the video turn")
    parser.add_argument("--image", type=Path, default=IMAGE)
    parser.add_argument("--video", type=Path, default=VIDEO)
    parser.add_argument("--workdir", type=Path, help="keep the checkpoint and the converted cache here (reused)")
    parser.add_argument("--smoke", action="store_true",
                        help="the same code on the CPU with a tiny depth (no GPU needed; figures meaningless)")
    args = parser.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        sys.exit("bench_gpu needs a CUDA GPU and torch.cuda.is_available() is False here. "
                 "Run it with --smoke to check the code path on the CPU.")
    device = Device(cuda=not args.smoke)
    if args.smoke:
        args.decode_tokens, args.frames = min(args.decode_tokens, 32), min(args.frames, 3)
    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
        work = args.workdir or Path(tmp)
        run(work, device, args)


def run(work: Path, device: Device, args) -> None:
    import os

    from model.loading import prepare_checkpoint
    from model.sa2va.published import Sam2Dims

    os.environ["SEGCHAT_CACHE"] = str(work / "cache")
    layers = 1 if args.smoke else 0
    folder = work / ("checkpoint-smoke" if args.smoke else "checkpoint")
    start = time.perf_counter()
    reused = (folder / "config.json").exists()
    if not reused:
        small_sam2 = Sam2Dims(trunk_width=16, blocks_per_stage=(1, 2, 7, 2), width=64, decoder_mlp=64,
                              iou_head=32, memory_layers=1, memory_mlp=64, fuser_layers=1)
        release_checkpoint(folder, RELEASE, layers, layers, dtype=torch.bfloat16, seed=0,
                           corpus=[QUESTION, FOLLOW_UP, VIDEO_QUESTION, SEG_ANSWER, FOLLOW_UP_ANSWER, FILLER],
                           sam2=small_sam2 if args.smoke else None)
    setup = {"write": "reused" if reused else f"written in {time.perf_counter() - start:.0f} s",
             "depth": "1 text + 1 vision layer, small SAM2 (--smoke)" if args.smoke else "full depth, SAM2 Hiera-L"}
    start = time.perf_counter()
    prepare_checkpoint(folder, dtype=torch.bfloat16)  # converts on first use, into $SEGCHAT_CACHE
    setup["convert"] = f"converted in {time.perf_counter() - start:.0f} s"
    print(f"checkpoint ({setup['depth']}): {setup['write']}, {setup['convert']}", flush=True)
    rows, failed = {}, {}
    for mode in args.modes:
        try:
            rows[mode] = measure_mode(folder, mode, device, args)
        except Exception as err:  # e.g. bitsandbytes missing or built without this GPU: the other modes still run
            failed[mode] = f"{type(err).__name__}: {err}"
            print(f"  {mode} FAILED: {failed[mode]}", flush=True)
            device.free()
            continue
        print(f"  {mode}: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                                        for k, v in rows[mode].items()), flush=True)
    if not rows:
        sys.exit("every mode failed")
    report(rows, device, bandwidth_gbs(device, args.bandwidth_gbs), args, setup)
    for mode, message in failed.items():
        print(f"\n{mode} failed: {message}")


if __name__ == "__main__":
    main()
