"""The offline demo model: the proof-of-learning model, trained from random initialisation on synthetic scenes.

    python -m model.recipes.proof.demo     # builds it on first use (minutes on a laptop CPU) and prints its folder

No weights are downloaded or shipped: the folder is produced by `model.recipes.proof.recipe` (the documented recipe)
in a cache directory, `$SEGCHAT_DEMO_DIR` or `~/.cache/segchat/demo`, and reused afterwards until the recipe
changes (a demo built by an older version of the recipe is rebuilt).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from model.recipes.proof.recipe import ProofRecipe, build_proof, describe_recipe

_READY = "demo.json"


def demo_dir() -> Path:
    return Path(os.environ.get("SEGCHAT_DEMO_DIR") or Path.home() / ".cache" / "segchat" / "demo")


def _read_marker(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def demo_checkpoint(progress: bool = True) -> Path:
    """The demo model's checkpoint folder (load it with `SegChat.from_pretrained`), built on first use."""
    root = demo_dir()
    recipe = ProofRecipe()
    built = _read_marker(root / _READY)
    if built and built.get("recipe") == describe_recipe(recipe):
        return root / built["checkpoint"]
    # Build beside the final folder and rename at the end, so an interrupted build is never mistaken for a model.
    work = root.with_name(f"{root.name}.building-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    export = build_proof(work, recipe, progress=progress)
    (work / _READY).write_text(json.dumps({"checkpoint": str(export.relative_to(work)),
                                           "recipe": describe_recipe(recipe)}))
    if root.exists():
        shutil.rmtree(root)
    work.rename(root)
    return demo_checkpoint(progress)


if __name__ == "__main__":
    print(demo_checkpoint())
