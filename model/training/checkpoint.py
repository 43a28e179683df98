"""Training checkpoints (accelerate's state: trainable tensors, optimizers, schedulers, RNG) and export of merged
native weights.

A run folder holds `run_config.json` (the base model and how it was fine-tuned) and `checkpoint-<step>/` folders,
each written by `Accelerator.save_state` (optimizer, scheduler, objects registered with `register_for_checkpointing`,
every process's RNG states) plus `trainable.safetensors` and `state.json` (step, epoch, batches done). Only trainable
tensors are stored, so a LoRA checkpoint of a 7B model stays small; export rebuilds the full-precision base, loads
them and merges.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from torch import nn

from model.errors import CheckpointError
from model.loading import load_model_and_processor
from model.training.trainable import FinetuneConfig, apply_finetuning

RUN_CONFIG = "run_config.json"
TRAINABLE = "trainable.safetensors"
STATE = "state.json"
_PREFIX = "checkpoint-"


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: nn.Module, folder: Path) -> None:
    tensors = load_file(str(folder / TRAINABLE))
    params = dict(model.named_parameters())
    missing = [name for name in tensors if name not in params]
    if missing:
        raise CheckpointError(f"{folder}: {len(missing)} stored tensors do not fit this model, e.g. {missing[:3]}")
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value)


def store_trainable_only(accelerator: Accelerator, model: nn.Module) -> None:
    """Make `accelerator.save_state` / `load_state` keep `model`'s trainable tensors (in `trainable.safetensors`)
    instead of the whole prepared model; everything else in the state stays accelerate's."""
    def save(models: list[nn.Module], weights: list[dict], folder: str) -> None:
        weights.clear()
        if accelerator.is_main_process:
            save_file(trainable_state(model), str(Path(folder) / TRAINABLE))

    def load(models: list[nn.Module], folder: str) -> None:
        models.clear()
        load_trainable(model, Path(folder))

    accelerator.register_save_state_pre_hook(save)
    accelerator.register_load_state_pre_hook(load)


def save_checkpoint(accelerator: Accelerator, run_dir: Path, state: dict, keep: int = 2) -> Path:
    """Write `checkpoint-<step>` atomically (temp folder, then rename) and keep the newest `keep` of them.

    Every process calls it (each saves its RNG states); `store_trainable_only` must have been called once.
    """
    final = run_dir / f"{_PREFIX}{state['step']}"
    tmp = run_dir / f".tmp-{final.name}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE).write_text(json.dumps(state, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint folders of a run, oldest first."""
    found = [p for p in Path(run_dir).glob(f"{_PREFIX}*") if p.name[len(_PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(_PREFIX):]))


def resume_checkpoint(accelerator: Accelerator, folder: Path) -> dict:
    """Load a checkpoint into the identically prepared model, optimizers, schedulers and registered objects, restore
    the RNG states, and return its `state.json`."""
    try:
        accelerator.load_state(str(folder))
    except CheckpointError:
        raise
    except (OSError, RuntimeError, ValueError) as error:
        raise CheckpointError(f"{folder}: cannot resume from it ({error}); was it trained with other options?") \
            from error
    return json.loads((folder / STATE).read_text())


def write_run_config(run_dir: Path, base_model: str, finetune: FinetuneConfig, extra: dict) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    config = {"base_model": str(base_model), "finetune": finetune.to_dict(), **extra}
    (run_dir / RUN_CONFIG).write_text(json.dumps(config, indent=1))


def export_merged(checkpoint: Path, out_dir: Path, base_model: str | Path | None = None) -> Path:
    """Merge a checkpoint into full-precision weights of its base and save a native SegChat checkpoint folder."""
    run = json.loads((checkpoint.parent / RUN_CONFIG).read_text())
    model, processor = load_model_and_processor(base_model or run["base_model"], device="cpu", dtype="fp32")
    wrapper = apply_finetuning(model, processor.seg_token_id, FinetuneConfig(**run["finetune"]))
    load_trainable(model, checkpoint)
    if wrapper is not None:
        model = wrapper.merge_and_unload()
    model.requires_grad_(False)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    processor.save_pretrained(out_dir)
    return out_dir
