"""Fine-tune a SegChat checkpoint on segmentation data (ReasonSeg folders, RefCOCO-style folders, JSONL).

    python -m model.train --model CKPT --data DATA [--data DATA2 ...] --out RUN_DIR
           [--mode lora|full] [--quantization 4bit] [--epochs N | --max-steps N] [--batch-size B] ...

LoRA on the language model (QLoRA with --quantization 4bit), the [SEG] embedding rows, the projector and the SAM2
mask decoder train; the vision tower and the SAM2 image encoder stay frozen. Loss = ce·CE + bce·BCE + dice·Dice.
Several GPUs or nodes: `accelerate launch -m model.train ...` (same arguments). Writes RUN_DIR/loss_log.jsonl,
RUN_DIR/checkpoint-<step>/ (resume with --resume) and RUN_DIR/export/ (merged weights, native format).
The flags are the fields of `TrainOptions`, `FinetuneConfig` and `LossWeights` (see --help).
"""
from __future__ import annotations

from argparse import ArgumentDefaultsHelpFormatter, RawDescriptionHelpFormatter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from transformers import HfArgumentParser

from model.training.loop import TrainConfig, TrainOptions, train
from model.losses import LossWeights
from model.training.trainable import FinetuneConfig


class _HelpFormatter(ArgumentDefaultsHelpFormatter, RawDescriptionHelpFormatter):
    """--help keeps this docstring's layout and shows each flag's default."""


@dataclass
class ProcessOptions:
    threads: int | None = field(default=None, metadata={"help": "CPU threads for torch"})


def parse_args(argv: Sequence[str] | None = None) -> tuple[TrainConfig, int | None]:
    parser = HfArgumentParser((TrainOptions, FinetuneConfig, LossWeights, ProcessOptions), description=__doc__,
                              formatter_class=_HelpFormatter)
    options, finetune, weights, process = parser.parse_args_into_dataclasses(args=argv)
    return TrainConfig(**asdict(options), finetune=finetune, weights=weights), process.threads


def main(argv: Sequence[str] | None = None) -> None:
    config, threads = parse_args(argv)
    if threads:
        torch.set_num_threads(threads)
    print(train(config))


if __name__ == "__main__":
    main()
