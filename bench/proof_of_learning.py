"""Proof of learning, end to end: train the tiny model from scratch on synthetic scenes, then score the untrained
and the trained model on held-out scenes by free generation. Prints the loss curve, timings and gIoU / cIoU.

    python -m bench.proof_of_learning WORK_DIR [--steps N] [--seed S] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from model.evaluate import main as evaluate
from model.training.proof import ProofRecipe, build_proof
from model.training import language_warmup, vision_warmup


def _score(model: Path, work: Path, name: str) -> dict:
    report = evaluate(["--model", str(model), "--data", str(work / "heldout" / "data.jsonl"),
                       "--out", str(work / name), "--max-new-tokens", "96"])
    return report["metrics"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work_dir", type=Path)
    parser.add_argument("--steps", type=int, default=ProofRecipe.steps)
    parser.add_argument("--seed", type=int, default=ProofRecipe.seed,
                        help="seed of the training scenes and the model (the held-out scenes use seed + 1)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.time()
    export = build_proof(args.work_dir, ProofRecipe(steps=args.steps, seed=args.seed))
    train_s = time.time() - started
    untrained = _score(args.work_dir / "base", args.work_dir, "eval-untrained")
    trained = _score(export, args.work_dir, "eval-trained")

    print("\nlanguage warm-up (step, loss, next-token accuracy on the reasoning, [SEG] phrase accuracy):")
    for line in (args.work_dir / "language" / language_warmup.WARMUP_LOG).read_text().splitlines():
        r = json.loads(line)
        if r["step"] % 250 == 0:
            print(f"  {r['step']:5d} {r['loss']:.3f} {r['token_acc']:.3f} {r['phrase_acc']:.3f}")
    print("vision warm-up (step, loss, shape / colour / size accuracy on training objects):")
    for line in (args.work_dir / "warmed" / vision_warmup.WARMUP_LOG).read_text().splitlines():
        r = json.loads(line)
        if r["step"] % 500 == 0:
            print(f"  {r['step']:5d} {r['loss']:.3f} {r['shape_acc']:.3f} {r['colour_acc']:.3f} {r['size_acc']:.3f}")
    print("loss curve (step, total, ce, bce, dice, elapsed s):")
    for line in (args.work_dir / "run" / "loss_log.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["step"] % 250 == 0 or r["step"] == args.steps:
            print(f"  {r['step']:5d} {r['loss']:.3f} {r['ce']:.3f} {r['bce']:.3f} {r['dice']:.3f} {r['elapsed_s']:7.1f}")
    print(f"data + model + training + export: {train_s:.0f} s")
    for name, metrics in (("untrained", untrained), ("trained", trained)):
        groups = metrics["image"]
        per = ", ".join(f"{k} {v['giou']:.2f}" for k, v in groups.items() if k != "all")
        print(f"{name}: held-out gIoU {groups['all']['giou']:.3f} cIoU {groups['all']['ciou']:.3f} "
              f"(no [SEG] in {metrics['no_seg_rate']:.0%}); per template: {per}")


if __name__ == "__main__":
    main()
