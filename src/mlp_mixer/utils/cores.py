"""How many worker processes this machine's cores allow, in a module that imports nothing (no torch), so that
reading the training settings for ``mlp-mixer train --help`` stays cheap. :mod:`.devices` re-exports it."""

from __future__ import annotations

import os


def default_workers() -> int:
    """DataLoader processes when none are asked for: one per core, at most 4."""
    return min(4, os.cpu_count() or 1)
