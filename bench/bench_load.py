"""Load memory and disk: peak RSS while converting / loading a Sa2VA checkpoint against its weight bytes, the size
of the converted cache per load dtype, and the analytic (NOT measured) peak GPU memory of a Sa2VA-4B-class model in
bf16 and with a 4-bit language model.

    python -m bench.bench_load [SA2VA_FOLDER]      (default: ../shared/oracle/sa2va-internvl-qwen2)
    python -m bench.bench_load --real-layout [NAME ...] [--layers N]
        the published releases (`model.sa2va.published.RELEASES`, or the named ones) in their layout and storage
        dtype: real widths, N text and N vision layers (default 2; 0: the full depth), zero weights. Figures are
        measured at that depth; cache sizes and load peaks are also given at the full depth, as the measurement
        plus the bytes of the layers left out: in the cache's dtype for the cache; for the load peak, in the load
        dtype, plus their cache bytes when the load casts them (the cast copy and the memory-mapped cache pages it
        was read from are both resident: checked against a full-depth Sa2VA-1B, 6.53 GiB both ways in fp32). The
        conversion peak is given as measured: the memory-mapped source pages still referenced and the output shard
        being filled (2 GiB), so it grows with the depth, less once the source spans several 4 GiB shards
        (Sa2VA-Qwen3-VL-2B: +5.8 GiB with 2 layers, +6.8 GiB at full depth, for a bf16 cache).

Each measurement runs in a fresh process (Linux: its peak RSS is reset through /proc/self/clear_refs); the RSS
after the imports is the baseline; a load reads every weight once (memory-mapped weights count only when read).
"""

import argparse
import json
import math
import shutil
import tempfile
from pathlib import Path

import torch

from bench.common import release_checkpoint, run_child

DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "shared" / "oracle" / "sa2va-internvl-qwen2"
GB = 1024**3

_CHILD = """
import json, sys, torch
from bench.common import reset_peak_rss, rss_mib
from model.sa2va.convert.checkpoint import convert_checkpoint
from model.modeling import SegChatModel

mode, src, dst = sys.argv[1:4]
base = reset_peak_rss()  # a child inherits its parent's peak RSS across fork and exec
if mode.startswith("convert"):
    dtype = mode.partition(":")[2]
    convert_checkpoint(src, dst, dtype=getattr(torch, dtype) if dtype else None)
else:
    model = SegChatModel.from_pretrained(dst, dtype=getattr(torch, mode))
    for p in model.parameters():  # read every weight, as a first forward does (safetensors maps them lazily)
        p.detach().sum()
print(json.dumps({"base_mb": base, "delta_mb": rss_mib("VmHWM:") - base}))
"""


def measure(mode: str, src: Path, dst: Path) -> dict:
    return run_child(["-c", _CHILD, mode, str(src), str(dst)])


def param_counts() -> dict[str, int]:
    """Parameters of Sa2VA-4B (InternVL2.5-4B: InternViT-300M + Qwen2.5-3B, untied head; SAM2 Hiera-L), from its
    published layout."""
    from model.sa2va.published import RELEASES, official_shapes

    counts = dict.fromkeys(("llm_linear", "llm_other", "lm_head", "vision", "sam2", "projector"), 0)
    for key, shape in official_shapes(RELEASES["Sa2VA-4B"].config).items():
        if key.startswith("language_model.model.layers.") and len(shape) == 2:
            part = "llm_linear"  # quantized in 4-bit
        elif key.startswith("language_model.model."):
            part = "llm_other"  # embeddings, norms, biases
        elif key.startswith("language_model."):
            part = "lm_head"
        elif key.startswith(("vision_model.", "mlp1.")):
            part = "vision"
        elif key.startswith("grounding_encoder."):
            part = "sam2"
        else:
            part = "projector"
        counts[part] += math.prod(shape)
    return counts


def analytic_vram(counts: dict[str, int]) -> dict[str, float]:
    """GB of GPU memory, computed: weights + activation/KV allowance (13-tile image, 3.4k-token prompt)."""
    bf16 = 2
    nf4 = 0.5 + 0.5 / 64 + 4 / (64 * 256)  # 4-bit values, double-quantized absmax per 64 weights
    kv_cache = 2 * 36 * 2 * 128 * bf16 * 3500  # K and V, 36 layers, 2 KV heads of 128, 3.5k tokens
    activations = 1.0 * GB  # ViT on 13 tiles, SAM2 Hiera-L at 1024 px (SDPA), LLM prefill: each < 1 GB
    context = 0.5 * GB  # CUDA context and allocator slack
    rest = (counts["llm_other"] + counts["lm_head"] + counts["vision"] + counts["sam2"] + counts["projector"]) * bf16
    weights_bf16 = counts["llm_linear"] * bf16 + rest
    weights_4bit = counts["llm_linear"] * nf4 + rest
    overhead = kv_cache + activations + context
    return {"weights_bf16": weights_bf16 / GB, "peak_bf16": (weights_bf16 + overhead) / GB,
            "weights_llm_4bit": weights_4bit / GB, "peak_llm_4bit": (weights_4bit + overhead) / GB}


def _numel(shapes: dict[str, tuple[int, ...]]) -> int:
    return sum(math.prod(shape) for shape in shapes.values())


def real_layout(names: list[str], layers: int) -> None:
    """Download (source) and cache bytes, conversion and load peaks of each release in its published layout at
    `layers` text and vision layers (0: full depth), per load dtype; sizes and load peaks also at the full depth."""
    from model.sa2va.published import RELEASES, official_shapes, with_depth

    rows = []
    for name in names:
        release = RELEASES[name]
        config = with_depth(release.config, layers, layers) if layers else release.config
        left_out = _numel(official_shapes(release.config, release.sam2)) - _numel(official_shapes(config, release.sam2))
        depth = f"{layers} text + {layers} vision layers" if layers else "full depth"
        with tempfile.TemporaryDirectory() as tmp:
            src = release_checkpoint(Path(tmp) / name, name, layers)  # zero weights, the release's dtype
            source = sum(p.stat().st_size for p in src.glob("*.safetensors"))
            item = release.dtype.itemsize
            print(f"{name} ({depth}, {release.dtype}): source {source / GB:.2f} GiB, full depth "
                  f"{(source + left_out * item) / GB:.2f} GiB", flush=True)
            row = [name, (source + left_out * item) / GB]
            for dtype_name in ("bfloat16", "float32"):
                dtype = getattr(torch, dtype_name)
                dst = Path(tmp) / f"native-{dtype_name}"
                convert = measure(f"convert:{dtype_name}", src, dst)
                cache = sum(p.stat().st_size for p in dst.iterdir())
                load = measure(dtype_name, src, dst)
                cached = min(item, dtype.itemsize)
                cache_full = cache + left_out * cached
                per_param = dtype.itemsize + (cached if cached != dtype.itemsize else 0)
                load_full = load["delta_mb"] * 2**20 + left_out * per_param
                print(f"  {dtype_name:>8}: cache {cache / GB:.2f} GiB (full depth {cache_full / GB:.2f}); peak RSS "
                      f"convert +{convert['delta_mb'] / 1024:.2f} GiB, load +{load['delta_mb'] / 1024:.2f} GiB "
                      f"(full depth {load_full / GB:.2f} GiB)", flush=True)
                row += [cache_full / GB, load_full / GB, convert["delta_mb"] / 1024]
                shutil.rmtree(dst)
        rows.append(row)
    print(f"\nGiB; sizes and load peaks at the full depth, conversion peaks as measured ({depth}):")
    print("release | download | bf16 cache | bf16 load | bf16 convert | fp32 cache | fp32 load | fp32 convert")
    for name, *figures in rows:
        print(" | ".join([name, *(f"{x:.1f}" for x in figures)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--real-layout", nargs="*", metavar="NAME",
                        help="measure published releases in their layout instead (no name: all of them)")
    parser.add_argument("--layers", type=int, default=2,
                        help="text and vision layers of the --real-layout checkpoints (0: the full depth)")
    args = parser.parse_args()
    if args.real_layout is not None:
        from model.sa2va.published import RELEASES

        unknown = sorted(set(args.real_layout) - RELEASES.keys())
        if unknown:
            parser.error(f"unknown releases {unknown}; known: {list(RELEASES)}")
        real_layout(args.real_layout or list(RELEASES), args.layers)
        return
    with tempfile.TemporaryDirectory() as tmp:
        dst = Path(tmp) / "native"
        weights = sum(p.stat().st_size for p in args.source.glob("*.safetensors"))
        print(f"source weights: {weights / 2**20:.1f} MiB ({args.source})")
        for mode in ("convert", "bfloat16", "float32"):
            r = measure(mode, args.source, dst)
            print(f"{mode:>9}: peak RSS +{r['delta_mb']:.1f} MiB over {r['base_mb']:.0f} MiB after imports "
                  f"({r['delta_mb'] * 2**20 / weights:.2f} x the weight bytes)")
    counts = param_counts()
    print("Sa2VA-4B-class parameters (M):", json.dumps({k: round(v / 1e6, 1) for k, v in counts.items()}))
    print("ANALYTIC, NOT MEASURED (GB):", json.dumps({k: round(v, 2) for k, v in analytic_vram(counts).items()}))


if __name__ == "__main__":
    main()
