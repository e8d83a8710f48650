"""The figures a run and an evaluation leave behind (training curves, confusion matrix), and the one way every
figure is written: rendered in memory, then renamed into place, so a crash never leaves a truncated PNG."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..utils.files import write_bytes


def save_figure(fig: Any, path: str | Path, **savefig: Any) -> Path:
    """Write a matplotlib figure to ``path`` atomically (format from the suffix) and release it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip(".") or "png", **{"dpi": 100, **savefig})
    plt.close(fig)  # a pyplot figure stays alive until closed; a bare Figure is unaffected
    return write_bytes(path, buffer.getvalue())


def plot_curves(history: list[dict[str, Any]], path: str | Path) -> Path:
    """Loss and accuracy per epoch, train and held-out, as one PNG (matplotlib without a display)."""
    from matplotlib.figure import Figure

    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(10, 4))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.13, top=0.9, wspace=0.22)
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(epochs, [r["train_loss"] for r in history], label="train")
    ax_loss.plot(epochs, [r["val_loss"] for r in history], label="held-out")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_acc.plot(epochs, [100 * r["train_top1"] for r in history], label="train (augmented)")
    ax_acc.plot(epochs, [100 * r["val_top1"] for r in history], label="held-out top-1")
    ax_acc.set(xlabel="epoch", ylabel="%", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    return save_figure(fig, path)


def plot_confusion(confusion: torch.Tensor, classes: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix (true class down, predicted across); counts written in for <= 20 classes."""
    from matplotlib.figure import Figure

    k = len(classes)
    rows = confusion.double() / confusion.sum(1, keepdim=True).clamp(min=1)
    size = min(20.0, max(5.0, 0.45 * k + 2))
    fig = Figure(figsize=(size, size * 0.9), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(rows.numpy(), cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    if k <= 50:
        ax.set_xticks(range(k), classes, rotation=90 if k > 10 else 0)
        ax.set_yticks(range(k), classes)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if confusion[i, j]:
                    color = "white" if rows[i, j] > 0.5 else "black"
                    ax.text(j, i, int(confusion[i, j]), ha="center", va="center", fontsize=8, color=color)
    ax.set(xlabel="predicted", ylabel="true", title=title or "confusion matrix")
    return save_figure(fig, path, bbox_inches="tight", pad_inches=0.15)


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """The per-epoch rows of a run's ``log.csv``, with numbers as numbers."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()} for row in rows]
