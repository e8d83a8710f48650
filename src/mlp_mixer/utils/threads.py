"""Fewer PyTorch threads while other processes keep the cores busy, and all of them again once they are free.

PyTorch runs one intra-op thread per core, and every parallel region waits for its slowest thread. When another
process holds a core, the thread that shares it runs only part of the time and the others wait for it at every
barrier: a training run then slows down far more than its fair share (13x with three other processes on 2 cores,
issue #26), where one thread per free core loses only that share. :class:`ThreadGovernor` watches how much CPU the
rest of the machine uses (``/proc/stat`` less this process and its children, such as DataLoader workers) and sets
``torch.set_num_threads`` to the cores left free, changing only after two windows agree.

The thread count changes the order of floating-point sums, so a run whose count changed is not bit-identical to a
run on a quiet machine; ``--threads N`` pins the count (no governor) where exact repeatability matters more.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _machine_busy_seconds() -> float | None:
    """CPU seconds all cores have spent busy since boot (None where there is no /proc/stat)."""
    try:
        values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    idle = values[3] + values[4]  # idle, iowait
    return (sum(values) - idle) / _TICK


def _children_seconds() -> dict[int, float]:
    """CPU seconds of each live child process (DataLoader workers): their load is ours, not competition."""
    seconds: dict[int, float] = {}
    for children in Path("/proc/self/task").glob("*/children"):
        try:
            pids = [int(p) for p in children.read_text().split()]
        except (OSError, ValueError):
            continue
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                seconds[pid] = (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
            except (OSError, IndexError, ValueError):
                continue
    return seconds


class ThreadGovernor:
    """Call :meth:`step` once per training step; it returns a note for the user when it changed the thread count.

    Args:
        threads: the most threads to use (the count at the start of the run).
        window: seconds of wall time over which the others' CPU use is measured.
    """

    def __init__(self, threads: int, window: float = 2.0) -> None:
        self.most, self.window = max(1, threads), window
        self.cores = os.cpu_count() or 1
        self.current, self.pending = torch.get_num_threads(), None
        self.enabled = self.most > 1 and _machine_busy_seconds() is not None
        self._start()

    def _start(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        self.busy, self.children = _machine_busy_seconds(), _children_seconds()

    def others(self) -> float:
        """Cores the rest of the machine kept busy since the window began (and start a new window)."""
        wall, cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu
        busy, children = _machine_busy_seconds(), _children_seconds()
        own = cpu + sum(s - self.children.get(pid, 0.0) for pid, s in children.items())
        used = (busy or 0.0) - (self.busy or 0.0)
        self._start()
        return max(0.0, used - own) / max(wall, 1e-9)

    def step(self) -> str | None:
        if not self.enabled or time.perf_counter() - self.wall < self.window:
            return None
        others = self.others()
        want = max(1, min(self.most, int(self.cores - others + 0.5)))  # the cores left free, rounded
        if want == self.current:
            self.pending = None
            return None
        if want != self.pending:  # one window can be a blip: change only when the next one agrees
            self.pending = want
            return None
        before, self.current, self.pending = self.current, want, None
        torch.set_num_threads(want)
        return (
            f"other processes keep {others:.1f} of {self.cores} cores busy: {want} thread(s) instead of {before} "
            "(--threads N pins the count)"
        )
