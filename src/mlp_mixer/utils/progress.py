"""Progress of a long loop that a person can see however its output is read: a tqdm bar on a terminal, and a plain
line every :data:`PROGRESS_SECONDS` when stderr goes to a file or a pipe (where a bar is one endless line of
carriage returns, and without which ``predict`` on 100,000 files printed nothing for six minutes)."""

from __future__ import annotations

import sys
import time
from typing import IO, Any

PROGRESS_SECONDS = 10.0  # between two lines in a log; read at each call


class Lines:
    """tqdm's ``update`` / ``set_postfix`` / ``close``, printing ``desc: done/total unit (p%), rate, left`` to
    ``stream`` at most every ``every`` seconds, and a last line on close when it printed any."""

    def __init__(self, total: int, desc: str, unit: str, every: float, stream: IO[str]) -> None:
        self.total, self.desc, self.unit, self.every, self.stream = total, desc, unit, every, stream
        self.done, self.postfix, self.printed, self.shown = 0, "", False, 0
        self.start = self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.done += n
        if time.monotonic() - self.last >= self.every:
            self._line()

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **values: Any) -> None:
        values = {**(ordered_dict or {}), **values}
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def close(self) -> None:
        if self.printed and self.done != self.shown:
            self._line()

    def _line(self) -> None:
        now = time.monotonic()
        elapsed = now - self.start
        rate = self.done / elapsed if elapsed > 0 else 0.0
        share = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        left = f", ~{(self.total - self.done) / rate:.0f} s left" if rate and self.done < self.total else ""
        extra = f", {self.postfix}" if self.postfix else ""
        print(
            f"{self.desc}: {self.done:,}/{self.total:,} {self.unit}{share}, {rate:,.1f} {self.unit}/s, "
            f"{elapsed:.0f} s{left}{extra}",
            file=self.stream,
            flush=True,
        )
        self.last, self.printed, self.shown = now, True, self.done


def progress_bar(total: int, desc: str, unit: str = "it", enabled: bool | None = None) -> Any:
    """A tqdm bar on a terminal (or when ``enabled`` is True), :class:`Lines` when ``enabled`` is None and stderr is
    not a terminal, nothing shown when ``enabled`` is False. Both take ``update``, ``set_postfix`` and ``close``."""
    from tqdm import tqdm

    stream = sys.stderr
    if enabled is None and not (hasattr(stream, "isatty") and stream.isatty()):
        return Lines(total, desc, unit, PROGRESS_SECONDS, stream)
    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True, disable=enabled is False)
