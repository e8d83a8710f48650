"""The CIFAR-10/100 source: the python-pickle folders (``cifar-10-batches-py``, ``cifar-100-python``), read
without executing pickle code; train batches for training, the test batch held out. A source module: see
:mod:`mlp_mixer.data.splits` for its interface."""

from __future__ import annotations

import io
import pickle
import pickletools
from pathlib import Path

import numpy as np
import torch

from .decode import read_bytes
from .splits import DataSplits, EvalSplit
from .tensors import TensorImages

MAX_PICKLE_OPS = 2_000_000  # a CIFAR-100 train batch has ~300,000; each opcode builds at most one small object
_NUMERIC = {f"{kind}{size}" for kind in "uif" for size in (1, 2, 4, 8)} | {"b1"}  # the dtypes a batch may use


class _Numpy:
    """``numpy.ndarray`` as a pickle names it: only an argument of :func:`_reconstruct`, never called."""


def _reconstruct(subtype: object, shape: object, dtype: object) -> np.ndarray:
    """numpy's ``_reconstruct`` as ``ndarray.__reduce__`` calls it: an empty array whose state (shape, dtype and
    the raw bytes, which must match them) the pickle sets next, so an array never holds more than the file."""
    if subtype is not _Numpy or shape != (0,):
        raise pickle.UnpicklingError("refusing numpy._reconstruct of anything but an empty ndarray")
    return np.empty(0, dtype=np.uint8)


def _dtype(spec: object, align: object = False, copy: object = False) -> np.dtype:
    """A numeric dtype only: an object dtype would need pickled objects, a void one can claim any item size."""
    text = spec.decode() if isinstance(spec, bytes) else spec
    if text not in _NUMERIC:
        raise pickle.UnpicklingError(f"refusing numpy.dtype({text!r}) (only plain numeric arrays are expected)")
    return np.dtype(text)


def _latin1(text: object, encoding: object = "latin1") -> bytes:
    """``_codecs.encode`` as protocol-2 pickles written by Python 3 store bytes: ``encode(str, "latin1")``, which
    gives as many bytes as characters. Any other codec is refused: nesting ``encode(x, "hex")`` doubles each time
    (806 bytes of pickle built 8 GiB)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1", b"latin1"):
        raise pickle.UnpicklingError("refusing _codecs.encode other than str to latin1 bytes")
    return text.encode("latin1")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles the CIFAR batches (dicts of lists, bytes and numpy arrays) and nothing that could run code or
    build more than the file holds: each callable allowed is one of the small functions above, which take only
    what a batch needs."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
        ("numpy", "ndarray"): _Numpy,
        ("numpy", "dtype"): _dtype,
        ("_codecs", "encode"): _latin1,
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's signature
        if (module, name) in self.ALLOWED:
            return self.ALLOWED[module, name]
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only plain arrays are expected)")


def _unpickle(path: Path) -> dict:
    """A CIFAR file's dict, read within limits: the file's bytes (``limits.MAX_FILE_BYTES``), its opcodes counted
    before anything is built (each one-byte opcode can make a 56-byte object), the callables above only."""
    data = read_bytes(path, what="CIFAR batch")
    try:
        for count, _ in enumerate(pickletools.genops(data)):
            if count > MAX_PICKLE_OPS:
                raise pickle.UnpicklingError(f"more than {MAX_PICKLE_OPS:,} pickle opcodes (a CIFAR batch has fewer)")
        loaded = _ArrayUnpickler(io.BytesIO(data), encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
        raise ValueError(f"{path} is not a readable CIFAR python-pickle file: {err}") from err
    if not isinstance(loaded, dict):
        raise ValueError(f"{path} is not a readable CIFAR python-pickle file: expected a dict, got {type(loaded)}")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in loaded.items()}


def _images(value: object, path: Path) -> torch.Tensor:
    """A batch's ``data``: uint8 (N, 3072), as every CIFAR batch stores it, to (N, 3, 32, 32)."""
    if not isinstance(value, np.ndarray) or value.dtype != np.uint8 or value.ndim != 2 or value.shape[1] != 3072:
        found = f"{value.dtype} {value.shape}" if isinstance(value, np.ndarray) else type(value).__name__
        raise ValueError(f"{path}: 'data' is {found}, not uint8 (N, 3072) images of 3x32x32")
    return torch.from_numpy(value.copy()).reshape(-1, 3, 32, 32)


def _labels(value: object, path: Path, key: str) -> torch.Tensor:
    """A batch's labels: a list of ints (or a 1-D integer array); nothing nested, which a pickle could share."""
    if isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype.kind in "iu":
        return torch.from_numpy(value.astype(np.int64))
    if isinstance(value, list) and all(type(label) is int for label in value):
        return torch.tensor(value, dtype=torch.long)
    raise ValueError(f"{path}: '{key}' is not a list of class numbers")


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
    if not isinstance(names, list | tuple) or not names or not all(isinstance(n, bytes | str) for n in names):
        raise ValueError(f"{root / meta_file} does not list the class names under '{names_key}'")
    classes = [n.decode(errors="replace") if isinstance(n, bytes) else n for n in names]

    def read(files: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = [], []
        for name in files:
            path = root / name
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing from the {kind} folder {root}")
            batch = _unpickle(path)
            if "data" not in batch or label_key not in batch:
                raise ValueError(f"{path} does not hold CIFAR 'data' and '{label_key}'")
            try:
                data, label = _images(batch["data"], path), _labels(batch[label_key], path, label_key)
            except (RuntimeError, OverflowError) as err:  # e.g. a label beyond int64
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
