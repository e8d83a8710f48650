"""Peak memory of a training step, and the glibc setting ``--keep-freed-memory`` measures under.

On CPU the peak is that of live tensor bytes allocated during one step above what was live before it
(activations saved for backward, gradients, temporaries): every tensor an operator returns is counted until it is
freed (:class:`TensorMemory`). It leaves out parameters and optimizer state allocated before the step, and scratch
space inside kernels. On CUDA it is ``torch.cuda.max_memory_allocated`` above the allocation before the step.
"""

from __future__ import annotations

import ctypes
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


# Why the bench has this: glibc's default gives each large tensor fresh pages, and their page faults are ~10% of a
# training step on a 2-core CPU and most of its run-to-run spread, more for models with many temporaries (timm's)
# than for ours. Measuring with it separates the models' compute from that allocator cost; it is an option, off by
# default, because a user's process runs with glibc's default (docs/bench.md, "Fresh pages for every large tensor").
# The same for any process, without code: GLIBC_TUNABLES=glibc.malloc.mmap_threshold=...:glibc.malloc.trim_threshold=...
def keep_freed_memory() -> bool:
    """glibc only: keep freed memory in the process for reuse instead of mapping and unmapping it per tensor.

    By default glibc gives every large allocation (above 32 MiB at most: each big activation) fresh pages from
    the OS, and the first touch of each page faults. On a 2-core CPU that is ~10% of a training step and most of
    its run-to-run spread; tcmalloc and jemalloc keep freed memory like this. Returns False without glibc.
    """
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    return all(mallopt(option, 2**30) == 1 for option in (m_mmap_threshold, m_trim_threshold))


class TensorMemory(TorchDispatchMode):
    """Counts the bytes of every tensor an operator returns until it is freed; ``peak`` is the most at once.

    Storages already live when the mode starts (parameters, optimizer state) and outputs that alias an input
    (views, in-place ops) are not counted.
    """

    def __init__(self) -> None:
        super().__init__()
        self.live = self.peak = 0
        self._refs: dict[int, weakref.ref] = {}

    def _release(self, key: int, nbytes: int) -> Callable[[Any], None]:
        def release(_: Any) -> None:
            self.live -= nbytes
            self._refs.pop(key, None)

        return release

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage()._cdata for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key = storage._cdata
            if key in inputs or key in self._refs:
                continue
            nbytes = storage.nbytes()
            self._refs[key] = weakref.ref(storage, self._release(key, nbytes))
            self.live += nbytes
            self.peak = max(self.peak, self.live)
        return out


def peak_memory(step: Callable[[], Any], device: torch.device) -> int:
    """Peak bytes allocated during ``step()`` above what was allocated before it (see the module docstring)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with TensorMemory() as tracker:
        step()
    return tracker.peak
