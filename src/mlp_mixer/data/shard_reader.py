"""The shard source: WebDataset tar shards (:mod:`.shards`) streamed by :class:`ShardImages` and decoded where
they are read, in the DataLoader workers; a brace pattern of shards selects some of an index. A source module:
see :mod:`mlp_mixer.data.splits` for its interface."""

from __future__ import annotations

import copy
import zlib
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path

import torch
from torch.utils.data import IterableDataset
from torchvision.transforms import v2

from . import shards as shardlib
from .decode import decode_image_bytes
from .splits import DataSplits, EvalSplit
from .transforms import sample_seed, seeded_sample


class ShardImages(IterableDataset):
    """Images streamed from WebDataset shards (:mod:`mlp_mixer.data.shards`) and decoded where they are read: in the
    DataLoader workers. Yields ``(uint8 image, label, key)``; an image that cannot be decoded yields
    ``(None, reason)`` (skipped and counted, as :class:`.folder.FolderDataset`), a shard that breaks the format yields
    ``(None, ShardError)`` and ends that reader (:func:`.loader.iterate_stream` raises it in the main process).

    Which images a reader reads, and in which order, follows from ``seed``, ``epoch``, ``shuffle``, ``rank`` and
    ``world`` (set before each epoch) and the DataLoader worker it runs in (:func:`.shards.reader_samples`).
    ``transform`` is seeded per image from (``epoch_seed``, key), so augmentation does not depend on who reads it.
    """

    streamed, in_memory = True, False  # see mlp_mixer.data.splits

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
                seed = sample_seed(self.epoch_seed, zlib.crc32(key.encode()))
                image = seeded_sample(
                    partial(decode_image_bytes, payload, self.in_channels, name), self.transform, seed, name
                )
                yield (None, image) if isinstance(image, str) else (image, label, key)
        except shardlib.ShardError as err:
            yield None, err


def load_splits(data: str | Path, val_fraction: float = 0.1, in_channels: int | None = None) -> DataSplits:
    """The train and held-out splits of shards (see :func:`.shards.open_shards`): the index's ``train``
    and ``val`` splits; a brace pattern selects the training shards (the held-out ones, when it names none, are
    the index's ``val``). ``val_fraction`` does not apply (the index holds both splits); ``in_channels``, when
    given, overrides the index's."""
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


def eval_split(data: str | Path, in_channels: int) -> EvalSplit:
    """The shards a brace pattern (or a ``.tar``) names, else the index's ``val`` split."""
    found = shardlib.open_shards(data)
    shards = found.selected if found.selected is not None else found.splits.get("val", [])
    if not shards:
        raise ValueError(f"--data {data}: {found.index} has no val split; name the shards to evaluate instead")
    dataset = ShardImages(shards, found.classes, in_channels)
    return EvalSplit(dataset, found.classes, f"{len(shards)} shard(s) of {found.index}")


def data_kind(data: str | Path) -> str:
    """The kind of source the shards were written from: they train with its defaults."""
    return shardlib.open_shards(data).kind
