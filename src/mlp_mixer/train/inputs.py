"""What training reads and in which order: the splits of ``--data``, per-sample and per-batch augmentation, and
the order of every epoch. Every random draw is a function of (seed, what, step), so a resumed run repeats exactly
and several processes agree without talking to each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from ..data.loader import Batch, iterate_stream
from ..data.shard_reader import ShardImages
from ..data.sources import load_splits
from ..data.splits import DataSplits
from ..data.transforms import eval_geometry, random_affine, random_hflip, train_geometry
from ..model.pretrained import Preprocessing
from . import distributed
from .config import TrainConfig


def mix_seed(*values: int) -> int:
    """A 63-bit seed from a tuple of ints (distinct tuples give unrelated seeds)."""
    h = 0x9E3779B97F4A7C15
    for v in values:
        h = (h ^ (int(v) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        h ^= h >> 31
    return h & 0x7FFFFFFFFFFFFFFF


def epoch_batches(num_samples: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """The batches of one epoch: a permutation drawn from (seed, epoch) only, cut into full batches.

    The last partial batch is dropped (unless it is the only one), so every step sees ``batch_size`` images.
    """
    generator = torch.Generator().manual_seed(mix_seed(seed, 1, epoch))
    order = torch.randperm(num_samples, generator=generator).tolist()
    full = max(1, num_samples // batch_size)
    return [order[i * batch_size : (i + 1) * batch_size] for i in range(full)]


def seed_global(seed: int, device: torch.device) -> None:
    """Seed the global generators that dropout, drop-path and mixup draw from: the CPU one and, on CUDA, that
    device's. (``torch.manual_seed`` would also queue seeds for every uninitialised accelerator backend, which
    costs milliseconds per call: too much for once per step.)"""
    torch.default_generator.manual_seed(seed)
    if device.type == "cuda":
        torch.cuda.manual_seed(seed)


def open_data(config: TrainConfig) -> DataSplits:
    """The train and held-out splits of ``config.data`` (no transforms yet); fails with one line if unusable.
    Any number of shards feeds any number of processes × workers (readers split at the sample level)."""
    return load_splits(config.data, config.val_fraction, config.in_channels)


def shard_epoch(
    dataset: ShardImages, config: TrainConfig, epoch: int, steps: int, skip: int, device: torch.device
) -> Iterator[Batch]:
    """This process's batches of epoch ``epoch`` from shards: ``steps`` of ``batch_size / world`` images each
    (the same count on every process), the first ``skip`` dropped (a resumed epoch).

    The shard order and every reader's shuffle buffer are drawn from (seed, epoch), so the epoch is the same
    after a resume on the same number of processes and workers (:func:`mlp_mixer.data.shards.reader_samples`).
    """
    dataset.seed, dataset.epoch = config.seed, epoch
    dataset.epoch_seed = mix_seed(config.seed, 4, epoch)
    part = dataset.split(distributed.rank(), distributed.world_size())
    per_process = config.batch_size // distributed.world_size()
    return iterate_stream(part, per_process, config.workers, device, steps=steps, skip=skip)


def augments(config: TrainConfig, epoch: int) -> bool:
    """Whether epoch ``epoch`` (counted from 0) is augmented: all but the last ``no_aug_epochs`` (none when that is
    ``epochs`` or more: a short ``--epochs`` on a recipe with clean final epochs). Those train on
    images as the held-out split sees them (no crop, RandAugment, affine, flip, mixup or cutmix)."""
    return epoch < config.epochs - config.no_aug_epochs


def attach_transforms(
    splits: DataSplits, config: TrainConfig, preprocessing: Preprocessing, augment: bool = True
) -> None:
    """Per-sample transforms (in workers): image files get a random resized crop (train) or the eval resize and
    crop (held-out, and training without ``augment``); RandAugment on request. Everything else happens on whole
    batches (:class:`BatchAugment`)."""
    files = splits.native_size is None
    size = tuple(preprocessing.image_size)
    ra = tuple(config.randaugment) if config.randaugment else None
    splits.val.transform = eval_geometry(preprocessing) if files else None
    if augment:
        splits.train.transform = train_geometry(size if files else None, config.crop_scale, ra)
    else:
        splits.train.transform = splits.val.transform


class BatchAugment:
    """Training augmentation on a float batch in [0, 1] (before normalising): random affine and flips."""

    def __init__(self, config: TrainConfig) -> None:
        self.degrees, self.translate, self.scale = config.affine
        self.hflip = config.hflip
        self.rows = distributed.batch_rows(config.batch_size)  # several processes: draw as for the whole batch

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        images = random_affine(images, generator, self.degrees, self.translate, self.scale, rows=self.rows)
        return random_hflip(images, generator, self.hflip, rows=self.rows)


def mixing(config: TrainConfig, num_classes: int) -> Callable | None:
    """torchvision v2 MixUp / CutMix (one of the two per batch when both are on), or None."""
    from torchvision.transforms import v2

    chosen = []
    if config.mixup > 0:
        chosen.append(v2.MixUp(alpha=config.mixup, num_classes=num_classes))
    if config.cutmix > 0:
        chosen.append(v2.CutMix(alpha=config.cutmix, num_classes=num_classes))
    if not chosen:
        return None
    return chosen[0] if len(chosen) == 1 else v2.RandomChoice(chosen)
