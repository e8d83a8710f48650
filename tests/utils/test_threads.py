"""The thread governor: fewer threads while other processes hold cores, all of them again once they are free."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from mlp_mixer.utils import threads


class FakeMachine:
    """A 2-core machine whose other processes use ``others`` cores; this process uses ``own`` cores."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.clock, self.busy, self.cpu, self.others, self.own = 0.0, 0.0, 0.0, 0.0, 1.0
        monkeypatch.setattr(threads.os, "cpu_count", lambda: 2)
        monkeypatch.setattr(threads.time, "perf_counter", lambda: self.clock)
        monkeypatch.setattr(threads.time, "process_time", lambda: self.cpu)
        monkeypatch.setattr(threads, "_machine_busy_seconds", lambda: self.busy)
        monkeypatch.setattr(threads, "_children_seconds", dict)
        self.set_threads: list[int] = []
        monkeypatch.setattr(threads.torch, "set_num_threads", self.set_threads.append)
        monkeypatch.setattr(threads.torch, "get_num_threads", lambda: 2)

    def advance(self, seconds: float) -> None:
        self.clock += seconds
        self.cpu += self.own * seconds
        self.busy += (self.own + self.others) * seconds


def test_a_busy_core_takes_a_thread_away_and_a_free_one_gives_it_back(monkeypatch):
    machine = FakeMachine(monkeypatch)
    governor = threads.ThreadGovernor(2, window=2.0)
    assert governor.enabled
    machine.others = 1.0  # another process holds one of the two cores
    notes = []
    for _ in range(6):
        machine.advance(1.0)
        notes.append(governor.step())
    assert machine.set_threads == [1] and governor.current == 1
    assert [n for n in notes if n] and "1.0 of 2 cores" in next(n for n in notes if n)
    machine.others, machine.own = 0.0, 1.0
    for _ in range(6):
        machine.advance(1.0)
        governor.step()
    assert machine.set_threads == [1, 2] and governor.current == 2


def test_one_busy_window_changes_nothing(monkeypatch):
    machine = FakeMachine(monkeypatch)
    governor = threads.ThreadGovernor(2, window=2.0)
    for others in (0.0, 1.5, 0.0, 0.2, 1.2, 0.1):  # each a whole window: never two busy ones in a row
        machine.others = others
        machine.advance(2.0)
        assert governor.step() is None
    assert machine.set_threads == []


def test_one_thread_is_never_governed(monkeypatch):
    FakeMachine(monkeypatch)
    assert not threads.ThreadGovernor(1).enabled


def test_the_cpu_of_our_own_children_is_not_competition():
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\ninput()",
        ],
        stdin=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and threads._children_seconds().get(child.pid, 0.0) < 0.25:
            time.sleep(0.05)
        assert threads._children_seconds().get(child.pid, 0.0) >= 0.25
    finally:
        child.kill()
        child.wait()


def test_machine_busy_seconds_grow_while_we_compute():
    before = threads._machine_busy_seconds()
    if before is None:
        pytest.skip("no /proc/stat")
    start = time.process_time()
    while time.process_time() - start < 0.2:
        torch.ones(64, 64).sum()
    assert threads._machine_busy_seconds() - before >= 0.15
