"""Evaluate a SegChat checkpoint by free generation (no teacher forcing) on a segmentation data set.

    python -m model.evaluate --model CKPT --data DATA [--out REPORT_DIR] [--max-new-tokens 128] [--limit N]
    python -m model.evaluate --model Qwen/Qwen3-VL-4B-Instruct --concepts facebook/sam3 --data DATA   # agent mode

DATA is a JSONL file, a ReasonSeg folder or a RefCOCO-style folder (see model.data). Prints the metrics and writes
REPORT_DIR/report.json (gIoU / cIoU overall and per split — ReasonSeg short / long, synthetic templates — J&F for
video samples, the scoring rules, per-sample IoU and answers, and in agent mode each sample's tool calls and
rounds) and overlays of the worst cases.
On several GPUs: `accelerate launch -m model.evaluate ...` shards the samples.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import torch

from model.data.auto import FORMATS, load_dataset


def main(argv: Sequence[str] | None = None) -> dict | None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--format", choices=FORMATS, default=None, help="detected from DATA when omitted")
    p.add_argument("--split", default=None, help="RefCOCO split (val, testA, ...)")
    p.add_argument("--out", type=Path, default=Path("eval_report"))
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--limit", type=int, default=None, help="first N samples only")
    p.add_argument("--worst", type=int, default=4, help="overlay images of the N worst samples")
    p.add_argument("--empty-iou", type=float, default=1.0, help="IoU when prediction and truth are both empty")
    p.add_argument("--dtype", default=None)
    p.add_argument("--quantization", choices=["4bit", "8bit"], default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--mode", choices=["seg", "agent"], default=None,
                   help="agent: the model calls SAM 3 as a tool (default: agent for a plain VLM, else seg)")
    p.add_argument("--concepts", default=None, help="SAM 3 hub id or folder (agent mode; e.g. facebook/sam3)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    from accelerate import Accelerator

    from model.evaluation.runner import run
    from model.inference import Limits, SegChat

    accelerator = Accelerator()
    chat = SegChat.from_pretrained(args.model, device=accelerator.device, dtype=args.dtype,
                                   quantization=args.quantization, limits=Limits(max_new_tokens=args.max_new_tokens),
                                   concepts=args.concepts, mode=args.mode)
    samples = load_dataset(args.data, args.format, args.split)
    if args.limit is not None:
        samples = samples[: args.limit]
    info = {"model": str(args.model), "data": str(args.data), "max_new_tokens": args.max_new_tokens,
            "mode": chat.mode}
    report = run(chat, samples, args.out, info, args.empty_iou, args.worst, accelerator)
    if report is not None:
        print(json.dumps(report["metrics"], indent=1))
        print(f"report: {args.out / 'report.json'}")
    return report


if __name__ == "__main__":
    main()
