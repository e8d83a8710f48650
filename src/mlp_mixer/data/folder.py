"""The image-folder source: files in the ImageFolder layout (``ROOT/<class>/...``, or ``ROOT/train/<class>/...``
and ``ROOT/val/<class>/...``), decoded by content in DataLoader workers; an image that cannot be decoded is
skipped and counted (:class:`FolderDataset`). A source module: see :mod:`mlp_mixer.data.splits` for its interface.
"""

from __future__ import annotations

import io
import random
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from .decode import IMAGE_EXTENSIONS, ImageError, read_bytes, read_image
from .splits import DataSplits, EvalSplit, share
from .transforms import sample_seed, seeded_sample

VAL_DIR_NAMES = ("val",)  # the held-out split of an ImageFolder root: ROOT/train/<class>/..., ROOT/val/<class>/...


class FolderDataset(Dataset):
    """Image files with labels; decoding happens in ``__getitem__`` (in DataLoader workers).

    A file that cannot be decoded yields ``None`` instead of a sample: :func:`.loader.collate` drops it and counts it,
    so one bad file never stops an epoch.
    """

    streamed, in_memory = False, False  # see mlp_mixer.data.splits

    def __init__(
        self, samples: Sequence[tuple[str, int]], in_channels: int, transform: v2.Transform | None = None
    ) -> None:
        self.samples, self.in_channels, self.transform = list(samples), in_channels, transform
        self.epoch_seed = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | tuple[None, str]:
        path, label = self.samples[index]
        seed = sample_seed(self.epoch_seed, index)
        image = seeded_sample(partial(read_image, path, self.in_channels), self.transform, seed, path)
        return (None, image) if isinstance(image, str) else (image, label)

    @property
    def targets(self) -> list[int]:
        return [label for _, label in self.samples]

    def split(self, rank: int, world: int) -> FolderDataset:
        """Process ``rank``'s contiguous share of ``world``."""
        start, stop = share(len(self), rank, world)
        return FolderDataset(self.samples[start:stop], self.in_channels, self.transform)


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


def load_splits(data: str | Path, val_fraction: float = 0.1, in_channels: int | None = None) -> DataSplits:
    """The training and held-out splits of an ImageFolder root: ``ROOT/train/<class>/...`` and
    ``ROOT/val/<class>/...``, or ``ROOT/<class>/...`` split per class with ``val_fraction`` held out (fixed seed).
    Fails, with one line saying why, on a folder without images, a class folder without images, a single class,
    or a class none of whose images decode.

    Args:
        data: the root folder.
        val_fraction: the held-out share of a folder without ``val/``.
        in_channels: decode image files to this many channels; None infers 1 (all grayscale) or 3.
    """
    root = _root(data)
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


def eval_split(data: str | Path, in_channels: int) -> EvalSplit:
    """The folder's ``val/`` when it has one, else every image under its class folders; fails when a class has
    no readable image (an accuracy without it would not be the accuracy asked for)."""
    root = _root(data)
    folder = next((root / n for n in VAL_DIR_NAMES if (root / n).is_dir()), root)
    scan = scan_image_folder(folder)
    if not scan.samples:
        raise ValueError(f"no images found under {folder} (expected {folder}/<class>/<image>)")
    for name, reasons in unreadable_classes(scan.samples, scan.classes, in_channels).items():
        raise ValueError(
            f"class {name} of {folder} has no readable image: all {len(reasons)} failed to decode, e.g. "
            f"{'; '.join(reasons[:3])}; an accuracy without it would not be the accuracy asked for"
        )
    return EvalSplit(FolderDataset(scan.samples, in_channels), scan.classes, str(folder))


def data_kind(data: str | Path) -> str:
    """``"folder"``, whatever the folder holds (it is read, and checked, by :func:`load_splits`)."""
    return "folder"


def _root(data: str | Path) -> Path:
    """``--data`` as a folder that exists, or the error that says what it is instead."""
    root = Path(data)
    if not root.exists():
        raise FileNotFoundError(f"--data {root} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"--data {root} is not a folder (expected an ImageFolder root or a CIFAR folder)")
    return root
