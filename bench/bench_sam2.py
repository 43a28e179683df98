"""SAM2's image encoder (Hiera-L at 1024 px, random weights): transformers' forward against SegChat's lean one
(`model.lean_hiera`), and optionally `torch.compile` of the lean encoder.

    python -m bench.bench_sam2 [--rounds 3] [--size 1024] [--compile] [--dtype fp32|bf16] [--device cpu|cuda]
    python -m bench.bench_sam2 --memory [--size 1024]

The two forwards alternate round by round on the same weights and input, so a busy machine slows both alike; the
median of the rounds is printed, wall time and CPU time (all threads). The outputs (every feature level and its
position encoding) are checked to be identical. With `--compile` the lean encoder is also compiled
(`torch.compile`, default mode): its first call (compilation included) is reported apart, then it joins the rounds.

`--memory` instead runs each forward in a process of its own (CPU, fp32) and prints how far one encode raises the
peak resident memory over the process before it (after a first encode), and what the process holds after it.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch
from transformers import Sam2VideoConfig, Sam2VisionModel

from bench.common import machine, markdown_table, reset_peak_rss, rss_mib, run_child
from model.lean_hiera import streamline_hiera
from model.sa2va.convert.sam2_keys import sam2_config_from_shapes
from model.sa2va.published import HIERA_L, sam2_shapes

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def hiera_l(size: int) -> Sam2VisionModel:
    """SAM2 Hiera-L's image encoder (trunk and FPN neck) as Sa2VA ships it, random weights."""
    config = Sam2VideoConfig(**sam2_config_from_shapes(sam2_shapes(HIERA_L))).vision_config
    config.backbone_config.image_size = [size, size]
    grid = size // 4
    config.backbone_feature_sizes = [[grid, grid], [grid // 2, grid // 2], [grid // 4, grid // 4]]
    torch.manual_seed(0)
    return Sam2VisionModel(config).eval()


def encoder_named(name: str, size: int) -> Sam2VisionModel:
    encoder = hiera_l(size)
    if name == "lean":
        streamline_hiera(encoder)
    return encoder


def encode_peak(name: str, size: int) -> dict:
    """In this process: MiB one encode adds to the peak RSS, and to the RSS after it (outputs dropped)."""
    encoder = encoder_named(name, size)
    pixels = torch.randn(1, 3, size, size)
    with torch.inference_mode():
        encoder(pixels)
        base = reset_peak_rss()
        encoder(pixels)
    return {"peak": rss_mib("VmHWM:") - base, "after": rss_mib() - base}


def memory_table(size: int) -> str:
    rows = []
    for name in ("transformers", "lean"):
        result = run_child(["-m", "bench.bench_sam2", "--size", str(size), "--child", name])
        rows.append([name, f"+{result['peak']:.0f}", f"{result['after']:+.0f}"])
    return markdown_table(["encoder", "peak RSS over the process, MiB", "held after, MiB"], rows)


def timed(encoder, pixels: torch.Tensor, device: str) -> tuple[float, float, list[torch.Tensor]]:
    """(wall s, CPU s, every output tensor) of one forward."""
    if device == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    with torch.inference_mode():
        out = encoder(pixels)
        out = [out.last_hidden_state, *out.fpn_hidden_states, *out.fpn_position_encoding]
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile of the lean encoder")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="fp32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--memory", action="store_true", help="peak RSS of one encode instead (CPU, fp32)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(encode_peak(args.child, args.size)))
        return
    if args.memory:
        print(f"Machine: {machine()}; Hiera-L at {args.size} px, fp32 on cpu", flush=True)
        print(memory_table(args.size))
        return

    dtype = DTYPES[args.dtype]
    library = hiera_l(args.size).to(args.device, dtype)
    lean = copy.deepcopy(library)
    streamline_hiera(lean)
    encoders = {"transformers": library, "lean": lean}
    pixels = torch.randn(1, 3, args.size, args.size, device=args.device, dtype=dtype)
    print(f"Machine: {machine()}; Hiera-L at {args.size} px, {args.dtype} on {args.device}", flush=True)
    if args.compile:
        compiled = torch.compile(lean)
        wall, _, _ = timed(compiled, pixels, args.device)
        print(f"torch.compile: first call (compilation included) {wall:.1f} s", flush=True)
        encoders["lean + torch.compile"] = compiled
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in encoders}
    outputs = {}
    for round_ in range(args.rounds):
        for name, encoder in encoders.items():
            wall, cpu, outputs[name] = timed(encoder, pixels, args.device)
            times[name].append((wall, cpu))
            print(f"  round {round_ + 1} {name}: {wall:.2f} s wall, {cpu:.2f} s CPU", flush=True)
    reference = outputs["transformers"]
    rows = []
    for name, measured in times.items():
        wall = statistics.median(w for w, _ in measured)
        cpu = statistics.median(c for _, c in measured)
        base = statistics.median(w for w, _ in times["transformers"])
        diff = max((a.float() - b.float()).abs().max().item() for a, b in zip(outputs[name], reference, strict=True))
        rows.append([name, f"{wall:.2f}", f"{cpu:.2f}", f"{base / wall:.2f}x", "identical" if diff == 0 else
                     f"max |diff| {diff:.1e}"])
    print()
    print(markdown_table(["encoder", "median wall s", "median CPU s", "speed-up", "output"], rows))


if __name__ == "__main__":
    main()
