"""The folder of a training run: everything a run writes, in one place and only on the main process.

``config.yaml`` (the resolved settings), ``log.csv`` (one row per epoch), TensorBoard events under ``tb/``,
``curves.png``, ``best.pt`` / ``last.pt`` and ``metrics.json``; ``mlp-mixer eval`` adds ``eval.json`` and
``confusion_matrix.png``. Every file is written atomically (:mod:`mlp_mixer.files`).
"""

from __future__ import annotations

import csv
import dataclasses
import shutil
from pathlib import Path
from typing import Any

from .distributed import is_main_process
from .files import atomic_save, write_json, write_text
from .plots import plot_curves
from .train_config import TrainConfig


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
        "skipped",
    )

    def __init__(self, output: Path, fresh: bool, purge_step: int | None = None) -> None:
        self.output = output
        self.enabled = is_main_process()
        self.tb = None
        if not self.enabled:
            return
        output.mkdir(parents=True, exist_ok=True)
        if fresh:  # a new run in an old directory: its files are replaced, TensorBoard events too
            shutil.rmtree(output / "tb", ignore_errors=True)
            for name in (
                "last.pt",
                "best.pt",
                "log.csv",
                "metrics.json",
                "eval.json",
                "curves.png",
                "confusion_matrix.png",
                "config.yaml",
            ):
                (output / name).unlink(missing_ok=True)
        from torch.utils.tensorboard import SummaryWriter

        self.tb = SummaryWriter(str(output / "tb"), purge_step=purge_step)

    def config(self, config: TrainConfig, extra: dict[str, Any]) -> None:
        if self.enabled:
            import yaml

            text = yaml.safe_dump({**dataclasses.asdict(config), **extra}, sort_keys=False)
            write_text(self.output / "config.yaml", text)

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
        write_text(self.output / "log.csv", "\n".join(lines) + "\n")

    def curves(self, history: list[dict[str, Any]]) -> None:
        """The PNG of the curves, once at the end (drawing takes seconds; TensorBoard shows them live)."""
        if self.enabled and history:
            plot_curves(history, self.output / "curves.png")

    def json(self, name: str, data: dict[str, Any]) -> None:
        if self.enabled:
            write_json(self.output / name, data)

    def checkpoint(self, name: str, checkpoint: dict[str, Any]) -> None:
        if self.enabled:
            atomic_save(checkpoint, self.output / name)

    def text(self, name: str, text: str) -> None:
        if self.enabled:
            write_text(self.output / name, text)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _csv_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The per-epoch rows of a run's ``log.csv``, with numbers as numbers."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()} for row in rows]
