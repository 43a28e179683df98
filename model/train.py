"""Fine-tune a SegChat checkpoint on segmentation data (ReasonSeg folders, RefCOCO-style folders, JSONL).

    python -m model.train --model CKPT --data DATA [--data DATA2 ...] --out RUN_DIR
           [--mode lora|full] [--quantization 4bit] [--epochs N | --max-steps N] [--batch-size B] ...

LoRA on the language model (QLoRA with --quantization 4bit), the [SEG] embedding rows, the projector and the SAM2
mask decoder train; the vision tower and the SAM2 image encoder stay frozen. Loss = ce·CE + bce·BCE + dice·Dice.
Several GPUs or nodes: `accelerate launch -m model.train ...` (same arguments). Writes RUN_DIR/loss_log.jsonl,
RUN_DIR/checkpoint-<step>/ (resume with --resume) and RUN_DIR/export/ (merged weights, native format).
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

from model.training.loop import TrainConfig, train
from model.losses import LossWeights
from model.training.trainable import MODES, FinetuneConfig


def parse_args(argv: Sequence[str] | None = None) -> tuple[TrainConfig, int | None]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint folder or hub id")
    p.add_argument("--data", required=True, action="append", help="dataset path (repeat to mix several)")
    p.add_argument("--out", required=True, help="run folder")
    p.add_argument("--mode", choices=MODES, default="lora")
    p.add_argument("--train-vision", action="store_true", help="full mode: also train the vision tower")
    p.add_argument("--quantization", choices=["4bit", "8bit"], default=None)
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--lora-alpha", type=int, default=16)
    p.add_argument("--lora-dropout", type=float, default=0.05)
    p.add_argument("--ce-weight", type=float, default=LossWeights.ce)
    p.add_argument("--bce-weight", type=float, default=LossWeights.bce)
    p.add_argument("--dice-weight", type=float, default=LossWeights.dice)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-steps", type=int, default=None, help="optimizer steps (overrides --epochs)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--projector-lr-scale", type=float, default=1.0, help="the [SEG] projector's LR is --lr x this")
    p.add_argument("--separate-mask-optimizer", action="store_true",
                   help="a second AdamW state for the mask losses (training from scratch; one process)")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--warmup-steps", type=int, default=0)
    p.add_argument("--mixed-precision", choices=["no", "bf16", "fp16"], default="no")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--save-every", type=int, default=0, help="checkpoint every N steps (0: at the end)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--no-export", action="store_true")
    p.add_argument("--cache", action="store_true", help="keep encoded examples in memory (small data sets)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    a = p.parse_args(argv)
    finetune = FinetuneConfig(a.mode, a.lora_r, a.lora_alpha, a.lora_dropout, a.train_vision)
    weights = LossWeights(a.ce_weight, a.bce_weight, a.dice_weight)
    config = TrainConfig(
        model=a.model, data=a.data, out=a.out, finetune=finetune, weights=weights, quantization=a.quantization,
        epochs=a.epochs, max_steps=a.max_steps, batch_size=a.batch_size, grad_accum=a.grad_accum, lr=a.lr,
        projector_lr_scale=a.projector_lr_scale, separate_mask_optimizer=a.separate_mask_optimizer,
        weight_decay=a.weight_decay, warmup_steps=a.warmup_steps, mixed_precision=a.mixed_precision,
        gradient_checkpointing=a.gradient_checkpointing, save_every=a.save_every, log_every=a.log_every,
        resume=a.resume, export=not a.no_export, cache_examples=a.cache, seed=a.seed)
    return config, a.threads


def main(argv: Sequence[str] | None = None) -> None:
    config, threads = parse_args(argv)
    if threads:
        torch.set_num_threads(threads)
    print(train(config))


if __name__ == "__main__":
    main()
