"""`@spaces.GPU` on Hugging Face ZeroGPU Spaces; a plain pass-through everywhere else."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable)


def gpu(duration: int = 120) -> Callable[[F], F]:
    """Request a GPU for up to `duration` seconds per call when the `spaces` package is installed."""
    try:
        import spaces
    except ImportError:
        return lambda fn: fn
    return spaces.GPU(duration=duration)
