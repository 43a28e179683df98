"""The common sample type shared by every dataset reader."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar, overload

import numpy as np

SEG_TOKEN = "[SEG]"


@dataclass
class Sample:
    """One instruction about one image or video.

    `masks` holds one bool array per `[SEG]` in `answer`, in the same order: HxW for images, TxHxW for videos.
    `ignore` marks pixels excluded from metrics (same spatial shape as the masks), or is None.
    """

    media_path: Path
    instruction: str
    answer: str | None
    masks: list[np.ndarray]
    ignore: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def count_seg(text: str) -> int:
    """Number of `[SEG]` tokens in `text`."""
    return text.count(SEG_TOKEN)


E = TypeVar("E")


class LazySamples(Sequence[Sample], Generic[E]):
    """A list of validated annotation entries whose pixels are decoded only when a sample is indexed."""

    def __init__(self, entries: Sequence[E], build: Callable[[E], Sample]) -> None:
        self.entries = list(entries)
        self._build = build

    def __len__(self) -> int:
        return len(self.entries)

    @overload
    def __getitem__(self, index: int) -> Sample: ...
    @overload
    def __getitem__(self, index: slice) -> list[Sample]: ...
    def __getitem__(self, index: int | slice) -> Sample | list[Sample]:
        if isinstance(index, slice):
            return [self._build(e) for e in self.entries[index]]
        return self._build(self.entries[index])
