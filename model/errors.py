"""Errors a person can cause. Their messages are written for that person and are safe to show in the chat.

Everything raised for bad input, media, checkpoints or datasets is a `SegChatError`, so a caller (the app, a
script) catches that one base and shows the message; any other exception is a fault in the program.
"""

from pathlib import Path


class SegChatError(Exception):
    """Base of every error a person can cause."""


class InputError(SegChatError, ValueError):
    """Bad user input other than media (text too long, an unknown option, a click outside the image...)."""


class MediaError(SegChatError, ValueError):
    """An image or video that cannot be used."""


class CheckpointError(SegChatError, RuntimeError):
    """A checkpoint that cannot be found or loaded; the message says what to do."""


class DatasetError(SegChatError, ValueError):
    """A malformed annotation; the message starts with the offending file (and line, for JSONL)."""

    def __init__(self, path: str | Path, problem: str, line: int | None = None) -> None:
        self.path = Path(path)
        self.problem = problem
        self.line = line
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {problem}")
