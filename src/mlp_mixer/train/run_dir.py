"""The folder of a training run: everything a run writes, in one place and only on the main process.

``config.yaml`` (the resolved settings), ``log.csv`` (one row per epoch), TensorBoard events under ``tb/``,
``curves.png``, ``best.pt`` / ``last.pt`` and ``metrics.json``; ``mlp-mixer eval`` adds ``eval.json`` and
``confusion_matrix.png``. Every file is written atomically (:mod:`mlp_mixer.utils.files`), and its name recorded
in the folder's ``.mlp-mixer-written``: a new run moves aside (or, with ``--overwrite``, deletes) only what a run
wrote, and refuses a folder where a file it would write is someone else's.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from pathlib import Path
from typing import Any

from ..analysis.plots import plot_curves
from ..utils.files import atomic_save, ours, record_written, remove_ours, write_json, write_text, written
from .config import TrainConfig
from .distributed import is_main_process

# What a run writes into its folder; a new run moves these aside (or deletes them with --overwrite), nothing else.
RUN_FILES = (
    "last.pt",
    "best.pt",
    "log.csv",
    "metrics.json",
    "eval.json",
    "curves.png",
    "confusion_matrix.png",
    "config.yaml",
    "skipped.txt",
    "tb",
    "eval",
)
LOCK_NAME = ".lock"


class RunLock:
    """One run per folder: an exclusive ``flock`` on ``<folder>/.lock``, held for the run's life.

    The kernel drops the lock when its process ends in any way (kill -9 included), so a stale lock from a killed
    run never blocks the next one; the file's text (pid, host, start) only names the holder in the error.
    """

    def __init__(self, folder: Path) -> None:
        import fcntl

        self.path = folder / LOCK_NAME
        self.file = open(self.path, "a+")  # noqa: SIM115 - held open for the run's life
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            holder = self.file.read().strip() or "another process"
            self.file.close()
            raise ValueError(
                f"{folder} is in use by another run ({holder}); wait for it to end, or pass another --output"
            ) from None
        self.file.seek(0)
        self.file.truncate()
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        self.file.write(f"pid {os.getpid()} on {socket.gethostname()}, started {started}\n")
        self.file.flush()

    def release(self) -> None:
        if not self.file.closed:
            self.file.close()  # closing the descriptor releases the flock


def clear_run(folder: Path, overwrite: bool = False) -> Path | None:
    """Make ``folder`` ready for a new run: an earlier run's files go to ``<folder>.<n>`` (the first free n), or are
    deleted with ``overwrite``. Returns where they went (None when there was nothing, or they were deleted).

    Only what a run wrote is touched (the folder's record, :func:`mlp_mixer.utils.files.ours`). A file or folder of
    a run's names that no run wrote (the user's own ``config.yaml``, an ``eval/`` of notes) stops the run before
    anything is moved, deleted or written: the run would overwrite it. A folder from before the record existed
    (checkpoints, no record) is moved aside whole, never deleted.

    Raises:
        ValueError: naming the files that are not a run's.
    """
    folder = folder.resolve()  # "." has no name to put a number after
    legacy = not written(folder) and any((folder / name).is_file() for name in ("best.pt", "last.pt"))
    # someone else's eval/ is left where it is: a run writes nothing into it
    present = [folder / name for name in RUN_FILES if (folder / name).exists()]
    present = [path for path in present if legacy or path.name != "eval" or ours(path)]
    if not present:
        return None
    foreign = [path.name for path in present if not legacy and not ours(path)]
    if foreign:
        them = "it" if len(foreign) == 1 else "them"
        them = "it" if len(foreign) == 1 else "them"
        raise ValueError(
            f"{folder} holds {', '.join(foreign)}, which no run wrote; a run there would overwrite {them}: pass "
            f"another --output, or move {them}"
        )
    if overwrite and not legacy:
        for path in present:
            remove_ours(path)
        record_written(folder)  # the record stays: the new run adds to it
        return None
    n = 1
    while (aside := folder.with_name(f"{folder.name}.{n}")).exists():
        n += 1
    aside.mkdir(parents=True)
    for path in present:
        os.replace(path, aside / path.name)
    record_written(aside, *(path.name for path in present))
    return aside


class RunFiles:
    """Everything a run writes, in one place (and only on the main process): resolved config, per-epoch CSV,
    TensorBoard scalars, the curves PNG, checkpoints and ``metrics.json``."""

    CSV_FIELDS = (
        "epoch",
        "step",
        "lr",
        "train_loss",
        "train_top1",
        "val_loss",
        "val_top1",
        "val_top5",
        "epoch_seconds",
        "epoch_cpu_seconds",
        "images_per_second",
        "threads",
        "skipped",
    )

    def __init__(self, output: Path, fresh: bool, purge_step: int | None = None, overwrite: bool = False) -> None:
        """Take the folder for this run (:class:`RunLock`); a fresh run into a folder holding an earlier run moves
        that run aside to ``<output>.<n>`` (``overwrite``: deletes it instead)."""
        self.output = output
        self.enabled = is_main_process()
        self.tb = None
        self.lock: RunLock | None = None
        self.moved_to: Path | None = None
        if not self.enabled:
            return
        output.mkdir(parents=True, exist_ok=True)
        self.lock = RunLock(output)
        if fresh:
            self.moved_to = clear_run(output, overwrite)
        from torch.utils.tensorboard import SummaryWriter

        record_written(output, "tb")
        self.tb = SummaryWriter(str(output / "tb"), purge_step=purge_step)

    def config(self, config: TrainConfig, extra: dict[str, Any]) -> None:
        if self.enabled:
            import yaml

            text = yaml.safe_dump({**dataclasses.asdict(config), **extra}, sort_keys=False)
            self._write("config.yaml", write_text, text)

    def epoch(self, history: list[dict[str, Any]]) -> None:
        if not self.enabled:
            return
        row = history[-1]
        for key in ("lr", "train_loss", "train_top1", "val_loss", "val_top1", "val_top5", "images_per_second"):
            self.tb.add_scalar(
                key.replace("_", "/", 1) if key.startswith(("train_", "val_")) else key, row[key], row["step"]
            )
        self.tb.flush()
        lines = [",".join(self.CSV_FIELDS)]
        lines += [",".join(_csv_value(r.get(k)) for k in self.CSV_FIELDS) for r in history]
        self._write("log.csv", write_text, "\n".join(lines) + "\n")

    def curves(self, history: list[dict[str, Any]]) -> None:
        """The PNG of the curves, once at the end (drawing takes seconds; TensorBoard shows them live)."""
        if self.enabled and history:
            self._write("curves.png", lambda path, h: plot_curves(h, path), history)

    def json(self, name: str, data: dict[str, Any]) -> None:
        if self.enabled:
            self._write(name, write_json, data)

    def checkpoint(self, name: str, checkpoint: dict[str, Any]) -> None:
        if self.enabled:
            self._write(name, lambda path, c: atomic_save(c, path), checkpoint)

    def text(self, name: str, text: str) -> None:
        if self.enabled:
            self._write(name, write_text, text)

    def _write(self, name: str, write: Any, data: Any) -> None:
        """``write(path, data)`` for ``name`` in the folder, recorded first as a run's (so a run killed mid-write
        leaves nothing of its own unrecorded)."""
        record_written(self.output, name)
        write(self.output / name, data)

    def close(self) -> None:
        """Flush TensorBoard and give the folder back; safe to call more than once."""
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def _csv_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)
