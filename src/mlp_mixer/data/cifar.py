"""The CIFAR-10/100 source: the python-pickle folders (``cifar-10-batches-py``, ``cifar-100-python``), read
without executing pickle code; train batches for training, the test batch held out. A source module: see
:mod:`mlp_mixer.data.splits` for its interface."""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

from .splits import DataSplits, EvalSplit
from .tensors import TensorImages


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR batches (dicts of lists, bytes and numpy arrays) and nothing that could run code."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # how protocol-2 pickles written by Python 3 store bytes
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's signature
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only plain arrays are expected)")


def _unpickle(path: Path) -> dict:
    try:
        with path.open("rb") as f:
            data = _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"{path} is not a readable CIFAR python-pickle file: {err}") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a readable CIFAR python-pickle file: expected a dict, got {type(data)}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in data.items()}


CIFAR_LAYOUTS = {  # kind: (train files, test files, meta file, label key, class-name key)
    "cifar10": ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta", "labels", "label_names"),
    "cifar100": (["train"], ["test"], "meta", "fine_labels", "fine_label_names"),
}


def cifar_kind(root: str | Path) -> str | None:
    """``"cifar10"`` or ``"cifar100"`` when ``root`` is (or holds) a CIFAR python-pickle folder, else None."""
    root = Path(root)
    for kind, (train_files, _, meta, _, _) in CIFAR_LAYOUTS.items():
        if (root / meta).is_file() and (root / train_files[0]).is_file():
            return kind
    return None


def load_cifar(
    root: str | Path,
) -> tuple[str, tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor], list[str]]:
    """Read a CIFAR-10 (``cifar-10-batches-py``) or CIFAR-100 (``cifar-100-python``) folder.

    Returns:
        ``(kind, (train_images, train_labels), (test_images, test_labels), classes)``, images uint8 (N, 3, 32, 32).
    """
    root = Path(root)
    kind = data_kind(root)
    train_files, test_files, meta_file, label_key, names_key = CIFAR_LAYOUTS[kind]
    meta = _unpickle(root / meta_file)
    names = meta.get(names_key)
    if not isinstance(names, list | tuple) or not names:
        raise ValueError(f"{root / meta_file} does not list the class names under '{names_key}'")
    classes = [n.decode(errors="replace") if isinstance(n, bytes) else str(n) for n in names]

    def read(files: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = [], []
        for name in files:
            path = root / name
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing from the {kind} folder {root}")
            batch = _unpickle(path)
            try:
                data = torch.as_tensor(batch["data"], dtype=torch.uint8).reshape(-1, 3, 32, 32)
                label = torch.as_tensor(batch[label_key], dtype=torch.long)
            except (KeyError, RuntimeError, TypeError, ValueError, OverflowError) as err:
                raise ValueError(f"{path} does not hold CIFAR 'data' and '{label_key}': {err}") from err
            if label.ndim != 1 or len(label) != len(data):
                raise ValueError(f"{path}: {len(data)} images but '{label_key}' of shape {tuple(label.shape)}")
            images.append(data)
            labels.append(label)
        return torch.cat(images), torch.cat(labels)

    train, test = read(train_files), read(test_files)
    for name, (_, labels) in (("train", train), ("test", test)):
        if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
            raise ValueError(f"{root}: {name} labels outside the {len(classes)} classes of {meta_file}")
    return kind, train, test, classes


def load_splits(data: str | Path, val_fraction: float = 0.1, in_channels: int | None = None) -> DataSplits:
    """The train batches and the test batch (held out), uint8 (N, 3, 32, 32); ``val_fraction`` and
    ``in_channels`` do not apply (the split is the dataset's; the model's input matches channels)."""
    kind, (train_x, train_y), (val_x, val_y), classes = load_cifar(data)
    return DataSplits(TensorImages(train_x, train_y), TensorImages(val_x, val_y), classes, 3, kind, (32, 32))


def eval_split(data: str | Path, in_channels: int | None = None) -> EvalSplit:
    """The test batch."""
    _, _, (images, labels), classes = load_cifar(data)
    return EvalSplit(TensorImages(images, labels), classes, "test batch")


def data_kind(data: str | Path) -> str:
    """``"cifar10"`` or ``"cifar100"``; ValueError when ``data`` is neither."""
    kind = cifar_kind(data)
    if kind is None:
        raise ValueError(
            f"{data} is not a CIFAR python-pickle folder (expected data_batch_1 and batches.meta, or train and meta)"
        )
    return kind
