"""The proof-of-learning recipe: train a tiny SegChat from random initialisation on synthetic reasoning scenes.

`build_proof(WORK_DIR)` writes WORK_DIR/train, WORK_DIR/heldout (synthetic scenes, different seeds), WORK_DIR/base
(the random model), WORK_DIR/language (its language model warmed up on text, see `language_warmup`), WORK_DIR/warmed
(then its vision tower too, see `vision_warmup`), WORK_DIR/run (checkpoints, loss_log.jsonl) and WORK_DIR/run/export
(the trained model, also the offline demo). `python -m model.recipes.proof WORK_DIR` runs it and scores both models.

Unlike the default recipe (LoRA, frozen vision tower and SAM2 image encoder), everything but SAM2's prompt
encoder trains here: randomly initialised encoders have nothing to preserve (with the SAM2 image encoder frozen
at random weights, the Dice loss stalled near 0.70 for 500 steps). The tokenizer is trained on
the scenes' text, the model is shaped for the task (`PROOF_TEXT_DIMS`, 16 image tokens) and SAM2 + projector
start from PyTorch's default init (see `model.tiny.torch_default_init`).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from itertools import chain
from pathlib import Path

from model.data.synthetic import generate_scenes, make_scene, write_jsonl
from model.recipes.proof.language_warmup import ReasoningText, warm_up_language
from model.recipes.proof.vision_warmup import warm_up_vision
from model.tiny import build_tiny
from model.training.loop import TrainConfig, train
from model.losses import LossWeights
from model.training.trainable import FinetuneConfig

# Qwen3-VL's vision tower adds learned absolute position embeddings to its patches, so image tokens say where
# they are; Qwen2.5-VL's carries position only through the language model's M-RoPE.
PROOF_FAMILY = "qwen3_vl"
# rope_theta: at the default 5e5 and head_dim 16, M-RoPE turns one image column into a rotation of at most
# 0.04 rad, too little to tell left from right on a 4 x 4 token grid; at 10 it is 0.56 rad.
PROOF_TEXT_DIMS = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=3, num_attention_heads=8,
                       num_key_value_heads=4, head_dim=16, rope_theta=10.0)
SCENE_SIZE = 96
# Raise it when the code changes what the same `ProofRecipe` builds, so that cached demos are rebuilt.
# 2: the learning rates follow transformers' warm-up schedule (which starts at 0, one step behind the former one).
REVISION = 2


@dataclass(frozen=True)
class ProofRecipe:
    n_train: int = 5000
    n_heldout: int = 140
    steps: int = 2000
    batch_size: int = 8
    lr: float = 3e-4
    warmup_steps: int = 100
    seed: int = 0
    language_scenes: int = 20000  # the training stream's first scenes, as text
    language_warmup_steps: int = 2000
    language_warmup_lr: float = 1e-3
    vision_warmup_steps: int = 5000
    vision_warmup_lr: float = 2e-3
    # From scratch, with one AdamW state the text loss's gradients drown the mask losses' in the language model
    # and the [SEG] state never learns which object is meant (Dice stalls near 0.6); see model.training.optimizers.
    separate_mask_optimizer: bool = True
    # The projector has to turn small [SEG] states into SAM2 prompts; at the base rate the language model inflates
    # its states instead, against the text loss.
    projector_lr_scale: float = 10.0
    weights: LossWeights = LossWeights(ce=1.0, bce=2.0, dice=1.0)


def describe_recipe(recipe: ProofRecipe) -> dict:
    """Everything that decides what `build_proof` produces, as it reads back from JSON (to spot a stale build)."""
    described = {**asdict(recipe), "family": PROOF_FAMILY, "text_dims": PROOF_TEXT_DIMS, "scene_size": SCENE_SIZE,
                 "revision": REVISION}
    return json.loads(json.dumps(described))


def build_proof(work_dir: str | Path, recipe: ProofRecipe = ProofRecipe(), progress: bool = True) -> Path:
    """Run the whole recipe; returns the exported trained model folder."""
    work = Path(work_dir)
    train_jsonl = write_jsonl(work / "train", recipe.n_train, seed=recipe.seed, size=SCENE_SIZE)
    write_jsonl(work / "heldout", recipe.n_heldout, seed=recipe.seed + 1, size=SCENE_SIZE)
    corpus = [text for line in train_jsonl.read_text().splitlines()
              for text in (json.loads(line)["instruction"], json.loads(line)["answer"])]
    # 128² pixels: a 96-px scene becomes 8 x 8 patches of 16 px, i.e. 16 image tokens after the 2 x 2 merge.
    base = build_tiny(work / "base", PROOF_FAMILY, seed=recipe.seed, corpus=corpus, text_dims=PROOF_TEXT_DIMS,
                      default_init_mask_path=True, qwen_min_pixels=128 * 128, qwen_max_pixels=128 * 128)
    scenes = generate_scenes(recipe.n_train, recipe.seed, SCENE_SIZE)
    later = (make_scene(recipe.seed, i, SCENE_SIZE) for i in range(recipe.n_train, recipe.language_scenes))
    texts = [ReasoningText(s.instruction, s.listing, s.reasoning) for s in chain(scenes, later)]
    language = warm_up_language(base, work / "language", texts, recipe.language_warmup_steps,
                                lr=recipe.language_warmup_lr, seed=recipe.seed, progress=progress)
    warmed = warm_up_vision(language, work / "warmed", scenes, recipe.vision_warmup_steps,
                            lr=recipe.vision_warmup_lr, seed=recipe.seed, progress=progress)
    config = TrainConfig(
        model=str(warmed), data=[str(train_jsonl)], out=str(work / "run"),
        finetune=FinetuneConfig(mode="full", train_vision=True), max_steps=recipe.steps,
        weights=recipe.weights, batch_size=recipe.batch_size, lr=recipe.lr, warmup_steps=recipe.warmup_steps,
        separate_mask_optimizer=recipe.separate_mask_optimizer, projector_lr_scale=recipe.projector_lr_scale,
        save_every=500, log_every=25, cache_examples=True, seed=recipe.seed, progress=progress)
    return train(config)

