"""Giving the memory that a step's temporary tensors freed back to the operating system.

On Linux, glibc's malloc keeps freed blocks smaller than its mmap threshold (which grows up to 32 MiB as large
blocks are freed) in the process's heap, so a CPU process stays at the size of its largest step: after a prompt's
prefill, the vision tower's and the language model's activations; during a video, every frame's SAM2 activations
add to what the next one finds. `release_freed_memory` asks glibc to return the heap's free pages (`malloc_trim`);
where there is no glibc, and for tensors on an accelerator, it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util

import torch


def _malloc_trim():
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc
        return None


_MALLOC_TRIM = _malloc_trim()


def release_freed_memory(device: torch.device | str) -> None:
    """Return the process heap's free pages to the system when the work ran on the CPU (a few ms)."""
    if _MALLOC_TRIM is not None and torch.device(device).type == "cpu":
        _MALLOC_TRIM(0)
