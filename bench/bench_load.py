"""Load memory and disk: peak RSS while converting / loading a Sa2VA checkpoint against its weight bytes, the size
of the converted cache per load dtype, and the analytic (NOT measured) peak GPU memory of a Sa2VA-4B-class model in
bf16 and with a 4-bit language model.

    python -m bench.bench_load [SA2VA_FOLDER]      (default: ../shared/oracle/sa2va-internvl-qwen2)
    python -m bench.bench_load --real-layout 2     (Sa2VA-Qwen3-VL-4B in the published fp32 layout, 2 text and
                                                    2 vision layers; figures also scaled to the full depth)

Each measurement runs in a fresh process (Linux: its peak RSS is reset through /proc/self/clear_refs); the RSS
after the imports is the baseline; a load reads every weight once (memory-mapped weights count only when read).
"""

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DEFAULT_SOURCE = Path(__file__).resolve().parents[2] / "shared" / "oracle" / "sa2va-internvl-qwen2"
GB = 1024**3

_CHILD = """
import json, sys, torch
from pathlib import Path
from model.sa2va.convert.checkpoint import convert_checkpoint
from model.modeling import SegChatModel

def rss_mb(field):
    return int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith(field))) / 1024

mode, src, dst = sys.argv[1:4]
# a child inherits its parent's peak RSS across fork and exec: reset it, so the peak is this process's own
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
base = rss_mb("VmRSS:")
if mode.startswith("convert"):
    dtype = mode.partition(":")[2]
    convert_checkpoint(src, dst, dtype=getattr(torch, dtype) if dtype else None)
else:
    model = SegChatModel.from_pretrained(dst, dtype=getattr(torch, mode))
    for p in model.parameters():  # read every weight, as a first forward does (safetensors maps them lazily)
        p.detach().sum()
print(json.dumps({"base_mb": base, "delta_mb": rss_mb("VmHWM:") - base}))
"""


def measure(mode: str, src: Path, dst: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, mode, str(src), str(dst)], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1])
    return json.loads(out.stdout.strip().splitlines()[-1])


def param_counts() -> dict[str, int]:
    """Parameters of a Sa2VA-4B-class layout built on the meta device: InternVL2.5-4B (InternViT-300M +
    Qwen2.5-3B, untied head) and SAM2 Hiera-L."""
    from accelerate import init_empty_weights
    from transformers import InternVLConfig, InternVLForConditionalGeneration, Sam2VideoModel

    from bench.sam2_configs import hiera_sam2_config

    vlm_config = InternVLConfig(
        vision_config=dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096,
                           image_size=448, patch_size=14, norm_type="layer_norm", use_mean_pooling=True),
        text_config=dict(model_type="qwen2", hidden_size=2048, intermediate_size=11008, num_hidden_layers=36,
                         num_attention_heads=16, num_key_value_heads=2, vocab_size=151674,
                         tie_word_embeddings=False),
        tie_word_embeddings=False)
    sam2_config = hiera_sam2_config("large")
    with init_empty_weights():
        vlm = InternVLForConditionalGeneration(vlm_config)
        sam2 = Sam2VideoModel(sam2_config)
    text = vlm.model.language_model
    linear = sum(m.weight.numel() for m in text.modules() if m.__class__.__name__ == "Linear")
    return {
        "llm_linear": linear,  # quantized in 4-bit
        "llm_other": sum(p.numel() for p in text.parameters()) - linear,  # embeddings, norms, biases
        "lm_head": vlm.lm_head.weight.numel(),
        "vision": sum(p.numel() for p in vlm.model.vision_tower.parameters())
        + sum(p.numel() for p in vlm.model.multi_modal_projector.parameters()),
        "sam2": sum(p.numel() for p in sam2.parameters()),
        "projector": 2048 * 2048 + 2048 * 256,
    }


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


def real_layout(layers: int) -> None:
    """Download (source) and cache bytes, conversion and load peaks for the reduced-depth Sa2VA-Qwen3-VL-4B, per
    load dtype, and the same scaled by the full-depth / reduced-depth weight ratio."""
    from bench import real_layout as layout

    full = layout.layer_bytes(36, 24)
    with tempfile.TemporaryDirectory() as tmp:
        src = layout.build(Path(tmp) / "Sa2VA-Qwen3-VL-4B", text_layers=layers, vision_layers=layers)
        source = sum(p.stat().st_size for p in src.glob("*.safetensors"))
        scale = full / source
        print(f"source (fp32, {layers} text + {layers} vision layers): {source / GB:.2f} GiB; full depth "
              f"{full / GB:.2f} GiB (x{scale:.2f})")
        for dtype in ("bfloat16", "float32"):
            dst = Path(tmp) / f"native-{dtype}"
            convert = measure(f"convert:{dtype}", src, dst)
            cache = sum(p.stat().st_size for p in dst.iterdir())
            load = measure(dtype, src, dst)
            print(f"{dtype:>9}: cache {cache / GB:.2f} GiB (full depth ~{cache * scale / GB:.1f} GiB; download + "
                  f"cache ~{(source + cache) * scale / GB:.1f} GiB); peak RSS convert +{convert['delta_mb'] / 1024:.2f}"
                  f" GiB, load +{load['delta_mb'] / 1024:.2f} GiB (full depth ~{load['delta_mb'] * scale / 1024:.1f} GiB)")
            shutil.rmtree(dst)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", nargs="?", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--real-layout", type=int, metavar="LAYERS",
                        help="measure a Sa2VA-Qwen3-VL-4B-layout checkpoint with this many layers instead")
    args = parser.parse_args()
    if args.real_layout:
        real_layout(args.real_layout)
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
