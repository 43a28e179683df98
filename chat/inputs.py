"""Type and range checks of what a client sends to the public endpoints.

Any HTTP client can call `/ask`, `/refine` and `/download` with any JSON: a string where a number belongs, NaN,
infinity, a list of files where one is expected. Each value is checked here, once, where it enters the handlers,
and a bad one is an `InputError` saying what was expected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from model.errors import InputError


def finite_number(value: object, name: str) -> float:
    """`value` as a float, or `InputError` for a non-number (bools included), NaN or infinity."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"The {name} must be a number, not {type(value).__name__}.")
    if not math.isfinite(value):
        raise InputError(f"The {name} must be a finite number, not {value}.")
    return float(value)


def whole_number(value: object, name: str, low: int, high: int) -> int:
    """`value` as an int in [low, high] (a float such as 3.0 is accepted; 3.5 is not)."""
    number = finite_number(value, name)
    if number != int(number) or not low <= number <= high:
        raise InputError(f"The {name} must be a whole number from {low} to {high}, not {value}.")
    return int(number)


def object_index(value: object, count: int) -> int:
    """The 0-based index of one of `count` objects; None means the first."""
    if value is None:
        return 0
    number = finite_number(value, "object index")
    if number != int(number):
        raise InputError(f"The object index must be a whole number, not {value}.")
    if not 0 <= number < count:  # objects are numbered from 1 on the page, indices from 0
        raise InputError(f"There is no object {int(number) + 1} (index {int(number)}); the last answer has "
                         f"{count}.")
    return int(number)


def object_indices(values: object, count: int) -> list[int]:
    """A list of object indices (the objects to show)."""
    if values is None:
        return []
    if not isinstance(values, (list, tuple)):
        raise InputError(f"The objects to show must be a list of indices, not {type(values).__name__}.")
    return [object_index(v, count) for v in values]


def choice(value: object, options: Sequence[str], name: str) -> str:
    if not isinstance(value, str) or value not in options:
        raise InputError(f"The {name} must be one of {list(options)}, not {value!r}.")
    return value


def message_parts(message: object) -> tuple[object, object]:
    """The text and files of a `{"text": ..., "files": [...]}` message (None is an empty message); each is checked
    by `message_text` and `upload`."""
    if message is None:
        return "", []
    if not isinstance(message, dict):
        raise InputError(f'A message must be {{"text": ..., "files": [...]}}, not {type(message).__name__}.')
    return message.get("text"), message.get("files")


def message_text(value: object) -> str:
    """The text of a message (None is an empty text; anything but a string is refused)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InputError(f"The message text must be a string, not {type(value).__name__}.")
    return value


def upload(files: object) -> Path | None:
    """The one file sent with a message, or None."""
    if not files:
        return None
    if isinstance(files, (str, Path)):
        files = [files]
    if not isinstance(files, (list, tuple)):
        raise InputError(f"The files of a message must be a list of paths, not {type(files).__name__}.")
    if len(files) > 1:
        raise InputError("Please send one image or video at a time.")
    path = files[0]
    if not isinstance(path, (str, Path)) or not str(path):
        raise InputError(f"A file of a message must be a path, not {type(path).__name__}.")
    return Path(path)
