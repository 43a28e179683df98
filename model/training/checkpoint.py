"""Training checkpoints (trainable tensors + optimizer state, resumable) and export of merged native weights.

A run folder holds `run_config.json` (the base model and how it was fine-tuned) and `checkpoint-<step>/` folders,
each with `trainable.safetensors`, `optimizer.pt` and `state.json`. Only trainable tensors are stored, so a LoRA
checkpoint of a 7B model stays small; export rebuilds the full-precision base, loads them and merges.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from model.loading import load_model_and_processor
from model.training.trainable import FinetuneConfig, apply_finetuning

RUN_CONFIG = "run_config.json"
_PREFIX = "checkpoint-"


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().cpu().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: nn.Module, folder: Path) -> None:
    tensors = load_file(str(folder / "trainable.safetensors"))
    params = dict(model.named_parameters())
    missing = [name for name in tensors if name not in params]
    if missing:
        raise RuntimeError(f"{folder}: {len(missing)} stored tensors do not fit this model, e.g. {missing[:3]}")
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value)


def save_checkpoint(run_dir: Path, model: nn.Module, stateful: dict, state: dict, keep: int = 2) -> Path:
    """Write `checkpoint-<step>` atomically (temp folder, then rename) and keep the newest `keep` of them.

    `stateful` names the optimizers and schedulers whose `state_dict()` goes into `optimizer.pt`.
    """
    final = run_dir / f"{_PREFIX}{state['step']}"
    tmp = run_dir / f".tmp-{final.name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
    torch.save({name: obj.state_dict() for name, obj in stateful.items()}, tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps(state, indent=1))
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in list_checkpoints(run_dir)[:-keep]:
        shutil.rmtree(old)
    return final


def list_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint folders of a run, oldest first."""
    found = [p for p in Path(run_dir).glob(f"{_PREFIX}*") if p.name[len(_PREFIX):].isdigit()]
    return sorted(found, key=lambda p: int(p.name[len(_PREFIX):]))


def resume_checkpoint(folder: Path, model: nn.Module, stateful: dict) -> dict:
    """Load a checkpoint into the (identically prepared) model and `stateful` objects; return its state."""
    load_trainable(model, folder)
    saved = torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=True)
    missing = [name for name in stateful if name not in saved]
    if missing:
        raise RuntimeError(f"{folder}: the checkpoint has no state for {missing}; was it trained with other options?")
    for name, obj in stateful.items():
        obj.load_state_dict(saved[name])
    return json.loads((folder / "state.json").read_text())


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
