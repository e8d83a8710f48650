"""Ctrl-C during training: the first one lets the current step finish, then the loop saves a checkpoint and
exits (``--resume`` continues exactly there); a second one aborts at once."""

from __future__ import annotations

import signal
import sys
from typing import Any


class Interrupt:
    """Ctrl-C (SIGINT) asks the loop to stop after the current step and save; a second Ctrl-C aborts at once."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __enter__(self) -> Interrupt:
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\ninterrupted: saving a checkpoint after this step (Ctrl-C again to abort without saving)",
            file=sys.stderr,
            flush=True,
        )
