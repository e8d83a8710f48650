"""Evaluate a checkpoint (``mlp-mixer eval``): top-1, top-5, per-class accuracy, a confusion matrix PNG and a JSON
report. Training uses :func:`evaluate_model` after every epoch, so a run's numbers and ``eval``'s agree.

Without ``--data``, a training checkpoint is evaluated on the held-out split it was trained with (for the default
run: the 1,000 embedded MNIST digits); with ``--data``: a CIFAR folder's test batch, an ImageFolder's ``val/``,
or every image of a folder of class folders. Classes are matched by name, so a folder may hold a subset of the
checkpoint's classes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data.loader import batches_of
from ..data.sources import eval_split, load_splits
from ..data.transforms import eval_geometry, to_input
from ..model.pretrained import Preprocessing
from ..utils.devices import default_workers, resolve_device
from ..utils.files import record_written, write_json
from ..weights.checkpoint import load_checkpoint
from ..weights.load import load_model
from .plots import plot_confusion

# Above this many classes the K x K confusion matrix is not kept (6,000 classes made a 325 MB eval.json and +3.2 GB;
# ImageNet-21k's would be ~40 GB): each class's images and hits are, which is what per-class accuracy needs.
MAX_CONFUSION_CLASSES = 1000


@dataclass
class EvalResult:
    """Counts from which every metric follows (sums, so results of several processes add up)."""

    confusion: torch.Tensor | None  # (K, K) int64: row = true class, column = predicted class; None for K > 1000
    loss_sum: float
    top5_correct: int
    skipped: list[str] = field(default_factory=list)
    class_counts: torch.Tensor | None = None  # (2, K) int64: images and top-1 hits per true class

    def __post_init__(self) -> None:
        if self.class_counts is None and self.confusion is not None:
            self.class_counts = torch.stack([self.confusion.sum(1), self.confusion.diag()])

    @property
    def count(self) -> int:
        return int(self.class_counts[0].sum())

    @property
    def top1(self) -> float:
        return float(self.class_counts[1].sum()) / max(1, self.count)

    @property
    def top5(self) -> float:
        return self.top5_correct / max(1, self.count)

    @property
    def loss(self) -> float:
        return self.loss_sum / max(1, self.count)

    def per_class(self, classes: Sequence[str]) -> dict[str, dict[str, float | int]]:
        """Accuracy (recall) and image count of every class that has images."""
        totals, hits = self.class_counts.tolist()
        return {
            name: {"accuracy": hits[i] / totals[i], "images": totals[i]}
            for i, name in enumerate(classes)
            if totals[i] > 0
        }


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    dataset: torch.utils.data.Dataset,
    preprocessing: Preprocessing,
    device: torch.device,
    batch_size: int = 256,
    workers: int = 0,
    amp: bool = False,
    reduce: Callable[[torch.Tensor], torch.Tensor] = lambda t: t,
    label_map: Sequence[int] | None = None,
) -> EvalResult:
    """Run ``model`` over ``dataset`` (uint8 images; see :mod:`mlp_mixer.data`) and count.

    Args:
        label_map: the model's class index for each of the dataset's labels (when the data's classes are a
            subset or a reordering of the model's); None when they are the same.
        reduce: sums a tensor over processes (distributed evaluation); the identity by default.
    """
    was_training = model.training
    model.eval()
    num_classes = model.num_classes
    dense = num_classes <= MAX_CONFUSION_CLASSES
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.long, device=device) if dense else None
    counts = torch.zeros(2, num_classes, dtype=torch.long, device=device)  # images, hits per true class
    sums = torch.zeros(2, dtype=torch.float64, device=device)  # loss, top-5 correct
    mapping = torch.as_tensor(label_map, device=device) if label_map is not None else None
    skipped: list[str] = []
    for batch in batches_of(dataset, batch_size, workers, device):
        skipped += batch.skipped
        if len(batch.labels) == 0:
            continue
        labels = batch.labels.to(device)
        if mapping is not None:
            labels = mapping[labels]
        x = to_input(batch.images, preprocessing, model.in_channels, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            logits = model(x).float()
        sums[0] += F.cross_entropy(logits, labels, reduction="sum").double()
        top = logits.topk(min(5, num_classes), dim=1).indices
        sums[1] += (top == labels[:, None]).any(1).sum()
        if dense:
            confusion += torch.bincount(labels * num_classes + top[:, 0], minlength=num_classes**2).view(
                num_classes, num_classes
            )
        counts[0] += torch.bincount(labels, minlength=num_classes)
        counts[1] += torch.bincount(labels[top[:, 0] == labels], minlength=num_classes)
    model.train(was_training)
    confusion = reduce(confusion).cpu() if dense else None
    counts, sums = reduce(counts).cpu(), reduce(sums).cpu()
    return EvalResult(confusion, float(sums[0]), int(sums[1]), skipped, counts)


def write_report(
    result: EvalResult, classes: Sequence[str], out_dir: str | Path, source: str = "", split: str = ""
) -> dict[str, Any]:
    """Write ``eval.json`` and ``confusion_matrix.png`` into ``out_dir``; returns the report."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = {
        "checkpoint": source,
        "split": split,
        "images": result.count,
        "top1": result.top1,
        "top5": result.top5,
        "loss": result.loss,
        "per_class": result.per_class(classes),
        "classes": list(classes),
        "confusion_matrix": result.confusion.tolist() if result.confusion is not None else None,
        "skipped_images": sorted(set(result.skipped)),
    }
    if result.confusion is None:
        report["confusion_matrix_omitted"] = (
            f"{len(classes)} classes: the {len(classes)}x{len(classes)} matrix is kept only up to "
            f"{MAX_CONFUSION_CLASSES} classes; per_class holds each class's accuracy and images"
        )
    record_written(out_dir, "eval.json", *(["confusion_matrix.png"] if result.confusion is not None else []))
    write_json(out_dir / "eval.json", report)
    if result.confusion is not None:
        title = f"{split} top-1 {100 * result.top1:.2f}% ({result.count} images)"
        plot_confusion(result.confusion, classes, out_dir / "confusion_matrix.png", title)
    return report


def eval_dataset(
    data: str | Path, classes: Sequence[str], in_channels: int
) -> tuple[torch.utils.data.Dataset, list[int], str]:
    """The images of ``--data`` to evaluate, with each data label's index among ``classes``, and a description.

    A CIFAR folder: its test batch. A folder with ``val/``: that. Otherwise every image under the folder's class
    folders. Shards: the index's ``val`` split, or the shards a brace pattern names.
    """
    found = eval_split(data, in_channels)  # the one picker of the source, as training's load_splits
    unknown = [c for c in found.classes if c not in classes]
    if unknown:
        raise ValueError(
            f"--data {Path(data)} has classes the checkpoint does not know: {', '.join(unknown[:8])}"
            f"{' ...' if len(unknown) > 8 else ''} (checkpoint classes: {', '.join(list(classes)[:8])}"
            f"{' ...' if len(classes) > 8 else ''})"
        )
    index = {name: i for i, name in enumerate(classes)}
    return found.dataset, [index[c] for c in found.classes], found.description


def evaluate(
    checkpoint: str | Path,
    data: str | Path | None = None,
    output: str | Path | None = None,
    batch_size: int = 256,
    workers: int | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """Evaluate a checkpoint and write ``eval.json`` and ``confusion_matrix.png``.

    Args:
        checkpoint: anything :func:`mlp_mixer.from_pretrained` reads (a run folder: its ``best.pt``).
        data: images to evaluate on (see :func:`eval_dataset`); None: the held-out split the checkpoint was
            trained with (training checkpoints only).
        output: folder for the report; default ``<checkpoint folder>/eval``.

    Returns:
        The report: ``top1``, ``top5``, ``loss``, ``per_class``, ``confusion_matrix``, ``images``, ...
    """
    model = load_model(checkpoint)
    path = Path(model.source or checkpoint)
    classes = model.classes or [str(i) for i in range(model.num_classes)]
    if len(classes) != model.num_classes:
        raise ValueError(f"{path} lists {len(classes)} classes for a head of {model.num_classes}")
    torch_device = resolve_device(device)
    workers = default_workers() if workers is None else workers
    if data is None:
        if path.is_dir():
            raise ValueError(f"{path} is a pretrained directory without its training data: pass --data")
        config = load_checkpoint(path).get("config") or {}
        splits = load_splits(config.get("data"), config.get("val_fraction") or 0.1, model.in_channels)
        if splits.classes != list(classes):
            raise ValueError(
                f"the data {config.get('data')} now has classes {splits.classes[:8]}, the checkpoint "
                f"{list(classes)[:8]}: pass --data"
            )
        dataset, label_map = splits.val, None
        if splits.native_size is None:
            dataset.transform = eval_geometry(model.preprocessing)
        split = f"held-out split of {config.get('data') or 'the embedded MNIST digits'}"
    else:
        dataset, label_map, split = eval_dataset(data, classes, model.in_channels)
        if not dataset.in_memory:  # decoded from files or bytes, each at its own size
            dataset.transform = eval_geometry(model.preprocessing)
    model.to(torch_device)
    result = evaluate_model(model, dataset, model.preprocessing, torch_device, batch_size, workers, label_map=label_map)
    if result.count == 0:
        raise ValueError(f"none of the {len(dataset)} images of {split} could be read")
    out_dir = Path(output) if output is not None else (path if path.is_dir() else path.parent) / "eval"
    report = write_report(result, classes, out_dir, source=str(path), split=split)
    report["output"] = str(out_dir)
    return report
