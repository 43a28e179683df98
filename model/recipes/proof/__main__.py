"""Proof of learning, end to end: train the tiny model from scratch on synthetic scenes, then score the untrained
and the trained model on held-out scenes by free generation. Prints the warm-ups' and the training's curves,
timings and gIoU / cIoU.

    python -m model.recipes.proof WORK_DIR [--steps N] [--seed S] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from model.evaluate import main as evaluate
from model.recipes.proof import language_warmup, vision_warmup
from model.recipes.proof.recipe import ProofRecipe, build_proof


def _score(model: Path, work: Path, name: str) -> dict:
    report = evaluate(["--model", str(model), "--data", str(work / "heldout" / "data.jsonl"),
                       "--out", str(work / name), "--max-new-tokens", "96"])
    return report["metrics"]


def _records(path: Path, every: int, last: int | None = None) -> list[dict]:
    """The JSON lines of a log whose step is a multiple of `every` (or is `last`)."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in records if r["step"] % every == 0 or r["step"] == last]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("work_dir", type=Path)
    parser.add_argument("--steps", type=int, default=ProofRecipe.steps)
    parser.add_argument("--seed", type=int, default=ProofRecipe.seed,
                        help="seed of the training scenes and the model (the held-out scenes use seed + 1)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = args.work_dir
    started = time.time()
    export = build_proof(work, ProofRecipe(steps=args.steps, seed=args.seed))
    train_s = time.time() - started
    untrained = _score(work / "base", work, "eval-untrained")
    trained = _score(export, work, "eval-trained")

    print("\nlanguage warm-up (step, loss, next-token accuracy on the reasoning, [SEG] phrase accuracy):")
    for r in _records(work / "language" / language_warmup.WARMUP_LOG, 250):
        print(f"  {r['step']:5d} {r['loss']:.3f} {r['token_acc']:.3f} {r['phrase_acc']:.3f}")
    print("vision warm-up (step, loss, shape / colour / size accuracy on training objects):")
    for r in _records(work / "warmed" / vision_warmup.WARMUP_LOG, 500):
        print(f"  {r['step']:5d} {r['loss']:.3f} {r['shape_acc']:.3f} {r['colour_acc']:.3f} {r['size_acc']:.3f}")
    print("loss curve (step, total, ce, bce, dice, elapsed s):")
    for r in _records(work / "run" / "loss_log.jsonl", 250, last=args.steps):
        print(f"  {r['step']:5d} {r['loss']:.3f} {r['ce']:.3f} {r['bce']:.3f} {r['dice']:.3f} {r['elapsed_s']:7.1f}")
    print(f"data + model + training + export: {train_s:.0f} s")
    for name, metrics in (("untrained", untrained), ("trained", trained)):
        groups = metrics["image"]
        per = ", ".join(f"{k} {v['giou']:.2f}" for k, v in groups.items() if k != "all")
        print(f"{name}: held-out gIoU {groups['all']['giou']:.3f} cIoU {groups['all']['ciou']:.3f} "
              f"(no [SEG] in {metrics['no_seg_rate']:.0%}); per template: {per}")


if __name__ == "__main__":
    main()
