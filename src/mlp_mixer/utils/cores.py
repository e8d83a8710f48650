"""How many worker processes this machine's cores allow, in a module that imports nothing (no torch), so that
reading the training settings for ``mlp-mixer train --help`` stays cheap. :mod:`.devices` re-exports it."""

from __future__ import annotations

import os


def default_workers() -> int:
    """DataLoader processes when none are asked for: one per core, at most 4."""
    return min(4, os.cpu_count() or 1)


def fit_to_cores(value: int | None, option: str) -> tuple[int | None, str | None]:
    """A thread or process count held to this machine's cores: ``(value, None)`` when it fits, else the core count
    and a note saying so (``--threads 2000`` on 2 cores ran for minutes at a load of 103: more threads than cores
    only wait for each other). None (the default) stays None.

    Raises:
        ValueError: naming ``option``, for a count below 0 (``--threads`` below 1).
    """
    if value is None:
        return None, None
    least = 1 if option == "--threads" else 0
    if value < least:
        raise ValueError(f"{option} must be {least} or more, got {value}")
    cores = os.cpu_count() or 1
    if value <= cores:
        return value, None
    return cores, f"{option} {value} is more than this machine's {cores} cores; using {cores}"
