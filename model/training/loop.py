"""The training loop: one process on CPU or one GPU, or many through `accelerate launch` (no distributed code here)."""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import torch
from accelerate import Accelerator, DistributedDataParallelKwargs
from accelerate.utils import set_seed
from torch.utils.data import ConcatDataset, DataLoader
from tqdm.auto import tqdm
from transformers import get_cosine_schedule_with_warmup

from model.data.auto import load_dataset
from model.loading import load_model_and_processor
from model.training.checkpoint import (export_merged, list_checkpoints, resume_checkpoint, save_checkpoint,
                                       store_trainable_only, write_run_config)
from model.training.examples import ExampleDataset, collate
from model.losses import LossWeights
from model.training.optimizers import MaskOptimizer, adamw, param_groups
from model.training.trainable import FinetuneConfig, apply_finetuning

LOSS_LOG = "loss_log.jsonl"


def _flag(help: str, **argparse_options) -> dict:
    """`field` metadata read by `transformers.HfArgumentParser`: the flag's help, plus any argparse options."""
    return {"help": help, **argparse_options}


@dataclass
class TrainOptions:
    """The training options with one command-line flag each (`model.train`); `TrainConfig` adds the nested ones."""
    model: str = field(metadata=_flag("checkpoint folder or hub id"))
    data: list[str] = field(metadata=_flag("dataset path (repeat to mix several)", action="extend"))
    out: str = field(metadata=_flag("run folder"))
    quantization: str | None = field(default=None, metadata=_flag("4bit = QLoRA (LoRA mode only)",
                                                                  choices=["4bit", "8bit"]))
    epochs: int = field(default=1, metadata=_flag("passes over the data"))
    max_steps: int | None = field(default=None, metadata=_flag("optimizer steps (overrides --epochs)"))
    batch_size: int = field(default=1, metadata=_flag("samples per process and batch"))
    grad_accum: int = field(default=1, metadata=_flag("batches per optimizer step"))
    lr: float = field(default=2e-4, metadata=_flag("peak learning rate"))
    projector_lr_scale: float = field(default=1.0, metadata=_flag("the [SEG] projector's LR is --lr x this"))
    separate_mask_optimizer: bool = field(default=False, metadata=_flag(
        "a second AdamW state for the mask losses (training from scratch; one process, no --grad-accum, no fp16); "
        "see model.training.optimizers"))
    weight_decay: float = field(default=0.0, metadata=_flag("AdamW weight decay"))
    warmup_steps: int = field(default=0, metadata=_flag("linear LR warm-up steps before the cosine decay"))
    max_grad_norm: float = field(default=1.0, metadata=_flag("gradient clipping norm (0: no clipping)"))
    mixed_precision: str = field(default="no", metadata=_flag("autocast precision", choices=["no", "bf16", "fp16"]))
    gradient_checkpointing: bool = field(default=False, metadata=_flag("recompute activations in the backward"))
    save_every: int = field(default=0, metadata=_flag("checkpoint every N optimizer steps (0: at the end)"))
    keep_checkpoints: int = field(default=2, metadata=_flag("keep the newest N checkpoint folders"))
    log_every: int = field(default=10, metadata=_flag("log the mean losses every N optimizer steps"))
    resume: bool = field(default=False, metadata=_flag("continue from the newest checkpoint in --out"))
    export: bool = field(default=True, metadata=_flag("merge and export the weights to <out>/export at the end"))
    cache_examples: bool = field(default=False, metadata=_flag("keep encoded examples in memory (small data sets)",
                                                               aliases=["--cache"]))
    seed: int = field(default=0, metadata=_flag("seed of the data order, the RNGs and LoRA's initialisation"))
    progress: bool = field(default=True, metadata=_flag("show a progress bar"))


@dataclass
class TrainConfig(TrainOptions):
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    weights: LossWeights = field(default_factory=LossWeights)


def train(config: TrainConfig) -> Path:
    """Train, checkpoint, and export merged weights to `<out>/export` (returned; the run folder if export is off)."""
    if config.quantization and config.finetune.mode != "lora":
        raise ValueError("quantized training (QLoRA) needs the LoRA mode")
    accelerator = Accelerator(gradient_accumulation_steps=config.grad_accum, mixed_precision=config.mixed_precision,
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    if config.separate_mask_optimizer and (accelerator.num_processes > 1 or config.grad_accum > 1
                                           or config.mixed_precision == "fp16"):
        raise ValueError("separate_mask_optimizer needs one process, grad_accum 1 and no fp16 loss scaling")
    set_seed(config.seed)
    run_dir = Path(config.out)
    model, processor = load_model_and_processor(config.model, device=accelerator.device,
                                                dtype=None if config.quantization else "fp32",
                                                quantization=config.quantization)
    apply_finetuning(model, processor.seg_token_id, config.finetune, quantized=config.quantization is not None)
    if config.gradient_checkpointing:
        model.vlm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    data = ConcatDataset([ExampleDataset(processor, load_dataset(p), cache=config.cache_examples)
                          for p in config.data])

    batches_per_epoch = math.ceil(len(data) / (config.batch_size * accelerator.num_processes))
    steps_per_epoch = max(1, batches_per_epoch // config.grad_accum)
    total = config.max_steps or config.epochs * steps_per_epoch
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = adamw(param_groups(model, config.lr, config.projector_lr_scale), config.weight_decay)
    scheduler = get_cosine_schedule_with_warmup(optimizer, config.warmup_steps, total)
    trained, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    store_trainable_only(accelerator, model)
    mask_optimizer = None
    if config.separate_mask_optimizer:
        mask_optimizer = MaskOptimizer(param_groups(model, config.lr, config.projector_lr_scale),
                                       config.weight_decay, config.warmup_steps, total, config.max_grad_norm)
        accelerator.register_for_checkpointing(mask_optimizer)

    state = {"step": 0, "epoch": 0, "batches_done": 0, "elapsed_s": 0.0}
    found = list_checkpoints(run_dir) if config.resume else []
    if found:
        state = resume_checkpoint(accelerator, found[-1])
    elif accelerator.is_main_process:
        write_run_config(run_dir, config.model, config.finetune,
                         {"train": {k: v for k, v in asdict(config).items() if k not in ("finetune",)}})
    accelerator.wait_for_everyone()

    log = (run_dir / LOSS_LOG).open("a") if accelerator.is_main_process else None
    bar = tqdm(total=total, initial=state["step"], desc="train", disable=not (config.progress and
                                                                              accelerator.is_main_process))
    started, running = time.time() - state["elapsed_s"], []

    def checkpoint() -> None:
        state["elapsed_s"] = time.time() - started
        save_checkpoint(accelerator, run_dir, state, config.keep_checkpoints)

    collate_fn = partial(collate, processor=processor)
    while state["step"] < total:
        # The order, and the loader's own seed, come from generators of their own: the global RNG (dropout) then
        # draws the same numbers in a run resumed from a checkpoint as in an uninterrupted one.
        epoch_rng = torch.Generator().manual_seed(config.seed + state["epoch"])
        order = torch.randperm(len(data), generator=epoch_rng)
        loader = accelerator.prepare_data_loader(
            DataLoader(data, batch_size=config.batch_size, sampler=order.tolist(), collate_fn=collate_fn,
                       generator=epoch_rng), device_placement=False)
        for batch in accelerator.skip_first_batches(loader, state["batches_done"]):
            with accelerator.accumulate(trained):
                out = trained(**batch.model_inputs(accelerator.device, model.vlm.dtype), loss_weights=config.weights)
                if mask_optimizer:
                    mask_grads = mask_optimizer.take_gradients(out.mask_loss)
                    accelerator.backward(out.text_loss)
                else:
                    accelerator.backward(out.loss)
                if accelerator.sync_gradients and config.max_grad_norm:
                    accelerator.clip_grad_norm_(params, config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                if mask_optimizer:
                    mask_optimizer.step(mask_grads)
            state["batches_done"] += 1
            running.append(out.as_floats())
            if not accelerator.sync_gradients:
                continue
            state["step"] += 1
            bar.update(1)
            if state["step"] % config.log_every == 0 or state["step"] == total:
                mean = {k: sum(r[k] for r in running) / len(running) for k in running[0]}
                bar.set_postfix(loss=f"{mean['loss']:.3f}")
                if log:
                    record = {"step": state["step"], "epoch": state["epoch"], **mean,
                              "lr": scheduler.get_last_lr()[0], "elapsed_s": round(time.time() - started, 1)}
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                running = []
            if config.save_every and state["step"] % config.save_every == 0 and state["step"] < total:
                checkpoint()
            if state["step"] >= total:
                break
        else:
            state["epoch"] += 1
            state["batches_done"] = 0
    bar.close()
    if log:
        log.close()
    checkpoint()
    final = list_checkpoints(run_dir)[-1]
    if not config.export:
        return run_dir
    if accelerator.is_main_process:
        export_merged(final, run_dir / "export")
    accelerator.wait_for_everyone()
    return run_dir / "export"
