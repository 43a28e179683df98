"""`release_freed_memory` gives freed heap memory back to the system (the video and prefill steps call it)."""

import subprocess
import sys

import pytest

from model.memory import _MALLOC_TRIM

# In a fresh process: freeing a 30 MiB block raises glibc's mmap threshold, so 1 MiB tensors then come from the
# heap; small tensors kept between them pin the heap's top, so freeing the large ones leaves holes that glibc keeps
# mapped. The script prints the RSS growth (MiB) held after the frees, then after `release_freed_memory`.
SCRIPT = """
import torch
from model.memory import release_freed_memory

def rss():
    return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS:")).split()[1]) / 1024

big = torch.ones(30 * 2**18)  # 30 MiB of float32
del big
start = rss()
pairs = [(torch.ones(2**18), torch.ones(16)) for _ in range(200)]  # 200 x 1 MiB, each followed by a small one
kept = [small for _, small in pairs]
del pairs
held = rss() - start
release_freed_memory("cpu")
print(held, rss() - start)
"""


@pytest.mark.skipif(_MALLOC_TRIM is None, reason="not glibc: release_freed_memory does nothing here")
def test_freed_heap_memory_goes_back_to_the_system():
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    held, after = map(float, out.stdout.split())
    assert held > 150  # the premise: glibc kept the freed tensors' memory
    assert after < 30
