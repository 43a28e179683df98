"""The offline demo model: the proof-of-learning model, trained from random initialisation on synthetic scenes.

    python -m model.demo        # builds it on first use (minutes on a laptop CPU) and prints its folder

No weights are downloaded or shipped: the folder is produced by `model.training.proof` (the documented recipe)
in a cache directory, `$SEGCHAT_DEMO_DIR` or `~/.cache/segchat/demo`, and reused afterwards.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict
from pathlib import Path

from model.training.proof import ProofRecipe, build_proof

_READY = "demo.json"


def demo_dir() -> Path:
    return Path(os.environ.get("SEGCHAT_DEMO_DIR") or Path.home() / ".cache" / "segchat" / "demo")


def demo_checkpoint(progress: bool = True) -> Path:
    """The demo model's checkpoint folder (load it with `SegChat.from_pretrained`), built on first use."""
    root = demo_dir()
    marker = root / _READY
    if marker.is_file():
        return root / json.loads(marker.read_text())["checkpoint"]
    # Build beside the final folder and rename at the end, so an interrupted build is never mistaken for a model.
    work = root.with_name(f"{root.name}.building-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    recipe = ProofRecipe()
    export = build_proof(work, recipe, progress=progress)
    (work / _READY).write_text(json.dumps({"checkpoint": str(export.relative_to(work)), "recipe": asdict(recipe)}))
    if root.exists():
        shutil.rmtree(root)
    work.rename(root)
    return demo_checkpoint(progress)


if __name__ == "__main__":
    print(demo_checkpoint())
