"""What the proof's warm-up stages share: train part of a model with a step function, log, save a full copy."""
from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from torch import nn
from tqdm.auto import tqdm


def train_and_save(model: nn.Module, model_dir: str | Path, out_dir: str | Path, log_name: str,
                   step: Callable[[], dict[str, float]], steps: int, log_every: int, desc: str,
                   progress: bool) -> Path:
    """Run `step` (one optimizer step on `model`, returning its figures) `steps` times, then save.

    `out_dir` receives a copy of `model_dir` (tokenizer, processor) with `model`'s weights, and `log_name`: one JSON
    line per `log_every` steps with the mean of each figure.
    """
    out_dir = Path(out_dir)
    shutil.copytree(model_dir, out_dir, dirs_exist_ok=True)
    with (out_dir / log_name).open("w") as log:
        running: list[dict[str, float]] = []
        for index in tqdm(range(1, steps + 1), desc=desc, disable=not progress):
            running.append(step())
            if index % log_every == 0 or index == steps:
                means = {key: float(np.mean([r[key] for r in running])) for key in running[0]}
                log.write(json.dumps({"step": index, **means}) + "\n")
                running = []
    model.save_pretrained(out_dir)
    return out_dir
