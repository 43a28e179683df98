"""Type and range checks of what a client sends to the public endpoints.

Any HTTP client can call `/ask` (with regions), `/refine` and `/download` with any JSON: a string where a number belongs, NaN,
infinity, a list of files where one is expected. Each value is checked here, once, where it enters the handlers,
and a bad one is an `InputError` saying what was expected.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from model.errors import InputError
from model.media.masks import decode_rle
from model.regions import Region


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


REGION_KEYS = {"points", "labels", "box", "mask", "frame"}
MAX_MASK_PIXELS = 50_000_000  # a region mask is decoded only up to this size (the image's size is checked later)


def regions(value: object) -> list[Region]:
    """The regions of an `/ask` call: a list (or its JSON text) of {"points": [[x, y], ...], "labels": [1 | 0, ...],
    "box": [x0, y0, x1, y1], "mask": COCO RLE {"size": [h, w], "counts": "..."}}; None, "" or [] is none. Whether
    they fit the image is the conversation's check."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise InputError("The regions must be a JSON list of objects with points, box or mask.") from None
    if not isinstance(value, list):
        raise InputError(f"The regions must be a list, not {type(value).__name__}.")
    return [_region(item, k) for k, item in enumerate(value, start=1)]


def _region(item: object, number: int) -> Region:
    name = f"region {number}"
    if not isinstance(item, dict) or not item or set(item) - REGION_KEYS:
        raise InputError(f"Each region must be an object with some of {sorted(REGION_KEYS)}; {name} is not.")
    points = item.get("points") or []
    if not isinstance(points, list) or not all(isinstance(p, (list, tuple)) and len(p) == 2 for p in points):
        raise InputError(f"The points of {name} must be a list of [x, y] pairs.")
    points = [(finite_number(x, f"x of a point of {name}"), finite_number(y, f"y of a point of {name}"))
              for x, y in points]
    labels = item.get("labels")
    if labels is not None:
        if not isinstance(labels, list):
            raise InputError(f"The labels of {name} must be a list of 1 (on it) and 0 (not on it).")
        labels = [whole_number(v, f"label of {name}", 0, 1) for v in labels]
    box = item.get("box")
    if box is not None:
        if not isinstance(box, list) or len(box) != 4:
            raise InputError(f"The box of {name} must be [x0, y0, x1, y1].")
        box = tuple(finite_number(v, f"box coordinate of {name}") for v in box)
    mask = item.get("mask")
    if mask is not None:
        mask = _rle_mask(mask, name)
    frame = item.get("frame")
    if frame is not None:
        frame = whole_number(frame, f"frame of {name}", 0, 10**9)
    return Region(points, labels, box, mask, frame)


def _rle_mask(value: object, name: str) -> np.ndarray:
    size = value.get("size") if isinstance(value, dict) else None
    if not (isinstance(size, list) and len(size) == 2 and isinstance(value.get("counts"), str)):
        raise InputError(f'The mask of {name} must be COCO RLE: {{"size": [height, width], "counts": "..."}}.')
    height, width = (whole_number(v, f"mask size of {name}", 1, 100_000) for v in size)
    if height * width > MAX_MASK_PIXELS:
        raise InputError(f"The mask of {name} is {width}×{height}: larger than any image the app takes.")
    try:
        return decode_rle({"size": [height, width], "counts": value["counts"]})
    except Exception:  # pycocotools raises plain errors on malformed counts
        raise InputError(f"The mask of {name} is not valid COCO RLE.") from None
