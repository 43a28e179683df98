"""The app's clickable examples: a few real photos and one short video shipped in this folder, each with an implicit
instruction in the style of reasoning segmentation, listed in `examples.json` (their sources and licence: README,
"Chat app").

The files are the app's own and shared by every session: a session sends them like an upload but never removes
them (`is_example_file`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

FOLDER = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Example:
    file: Path
    instruction: str

    @property
    def message(self) -> dict:
        """The example as the message box's value."""
        return {"text": self.instruction, "files": [str(self.file)]}


def load_examples() -> list[Example]:
    """The examples in the order of `examples.json`."""
    entries = json.loads((FOLDER / "examples.json").read_text(encoding="utf-8"))
    return [Example(FOLDER / entry["file"], entry["instruction"]) for entry in entries]


def is_example_file(path: str | Path) -> bool:
    """Whether `path` is one of the shipped example files (wherever the package is installed)."""
    return Path(path).resolve().parent == FOLDER
