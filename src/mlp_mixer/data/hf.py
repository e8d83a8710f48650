"""The Hugging Face datasets source: a Hub dataset (``hf:owner/name``), a ``save_to_disk`` folder or Parquet files,
read through the ``datasets`` library (imported here only, when such data is read). A source module: see
:mod:`mlp_mixer.data.splits` for its interface.

Most image datasets live on the Hub as Parquet/Arrow with an ``Image`` feature; ``--data`` names one as

- ``hf:owner/name`` (a Hub id, or a dataset ``datasets`` has cached), ``hf:PATH`` or ``PATH`` for a
  ``save_to_disk`` folder, a ``.parquet`` file, a glob of them or a folder of them (``train-*.parquet``,
  ``test-*.parquet``: the split is the name's first part);
- followed by options as a query: ``?split=train&val=test&image=img&label=fine_label&streaming=1&name=CONFIG
  &revision=REV`` (``split``: the training split, default ``train``; ``val``: the held-out one, default the first
  of validation, val, valid, test, else ``--val-fraction`` of the training split per class; ``image``,
  ``label``: the columns, default the first ``Image`` and ``ClassLabel`` features).

Images keep their encoded bytes (``Image(decode=False)``) until a DataLoader worker decodes them with
:func:`.decode.decode_image_bytes`, as every other source: an image that does not decode is skipped and counted.
Class names are the ``ClassLabel`` feature's. A dataset read whole is indexed (:class:`HFImages`: the training
loop's batches split it over processes); a streamed one (``streaming=1``, :class:`HFStream`) is split over
processes × workers at the sample level: every reader reads the stream and keeps its own examples (process
``i % world``, then worker), so every example is read by exactly one reader per epoch.
"""

from __future__ import annotations

import copy
import io
import random
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

import torch
from torch.utils.data import Dataset, IterableDataset
from torchvision.transforms import v2

from .decode import ImageError, decode_image_bytes, read_bytes
from .shards import SHUFFLE_BUFFER, shuffle_buffer
from .splits import DataSplits, EvalSplit, share
from .transforms import sample_seed, seeded_sample

PREFIX = "hf:"
HELD_OUT = ("validation", "val", "valid", "test")  # the held-out split, when the query names none
OPTIONS = ("split", "val", "image", "label", "streaming", "name", "revision")


@dataclass(frozen=True)
class Spec:
    """What ``--data`` names: where the dataset is (``source``: a Hub id or a local path) and the query's options."""

    source: str
    local: bool
    options: dict[str, str]

    @property
    def streaming(self) -> bool:
        return self.options.get("streaming", "0").lower() in ("1", "true", "yes")


def is_hf(data: str | Path | None) -> bool:
    """Whether ``--data`` names a Hugging Face dataset: ``hf:...``, a ``.parquet`` file or glob, a folder that
    ``save_to_disk`` wrote (``dataset_dict.json`` or ``state.json``) or that holds Parquet files."""
    if data is None:
        return False
    text = str(data).split("?")[0]
    if text.startswith(PREFIX) or text.endswith(".parquet"):
        return True
    path = Path(text)
    if not path.is_dir():
        return False
    marks = (path / "dataset_dict.json").is_file() or (path / "state.json").is_file()
    return marks or any(path.glob("*.parquet")) or any(path.glob("data/*.parquet"))


def parse(data: str | Path) -> Spec:
    """The :class:`Spec` of ``--data``; ValueError naming an unknown option."""
    text, _, query = str(data).partition("?")
    options = dict(parse_qsl(query, keep_blank_values=True))
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"--data {data}: unknown option(s) {', '.join(unknown)} (known: {', '.join(OPTIONS)})")
    source = text.removeprefix(PREFIX)
    local = not text.startswith(PREFIX) or Path(source).exists() or "*" in source
    return Spec(source, local, options)


def _parquet_files(source: str) -> dict[str, list[str]]:
    """Parquet files by split: a file or glob is ``train``; a folder's files go to the split their name starts
    with (``train-00000-of-00002.parquet``, ``data/test-*.parquet``), all to ``train`` when a name says none."""
    path = Path(source)
    if path.is_dir():
        files = sorted(str(p) for p in path.rglob("*.parquet"))
    else:
        files = sorted(str(p) for p in Path(path.anchor or ".").glob(str(path.relative_to(path.anchor or "."))))
    if not files:
        raise FileNotFoundError(f"--data {source}: no Parquet files")
    if not path.is_dir():
        return {"train": files}
    by_split: dict[str, list[str]] = {}
    for file in files:
        by_split.setdefault(Path(file).name.split("-")[0].split(".")[0], []).append(file)
    return by_split if "train" in by_split else {"train": files}


def open_splits(spec: Spec) -> tuple[dict[str, Any], dict[str, int | None]]:
    """The dataset's splits (``datasets.Dataset``, or ``IterableDataset`` when streaming) and their lengths
    (None where a stream does not say)."""
    import datasets

    try:
        if spec.local and Path(spec.source).is_dir() and not any(Path(spec.source).rglob("*.parquet")):
            loaded = datasets.load_from_disk(spec.source)
            loaded = loaded if isinstance(loaded, datasets.DatasetDict) else datasets.DatasetDict(train=loaded)
            lengths = {name: len(split) for name, split in loaded.items()}
            if spec.streaming:
                loaded = {name: split.to_iterable_dataset() for name, split in loaded.items()}
            return dict(loaded), lengths
        if spec.local:
            import pyarrow.parquet as pq

            files = _parquet_files(spec.source)
            loaded = datasets.load_dataset("parquet", data_files=files, streaming=spec.streaming)
            lengths = {name: sum(pq.read_metadata(f).num_rows for f in fs) for name, fs in files.items()}
            return dict(loaded), lengths
        loaded = datasets.load_dataset(
            spec.source, spec.options.get("name"), revision=spec.options.get("revision"), streaming=spec.streaming
        )
    except (FileNotFoundError, ValueError, ConnectionError, OSError) as err:
        if isinstance(err, FileNotFoundError) and spec.local:
            raise
        raise ValueError(f"--data {PREFIX}{spec.source}: the datasets library cannot load it ({err})") from err
    lengths = {}
    for name, split in loaded.items():
        known = split.info.splits.get(name) if split.info.splits else None
        lengths[name] = len(split) if not spec.streaming else (known.num_examples if known else None)
    return dict(loaded), lengths


def columns(spec: Spec, features: Any) -> tuple[str, str]:
    """The image and label columns: the query's, else the first ``Image`` and ``ClassLabel`` features (else
    ``image``/``img`` and ``label``/``labels``)."""
    import datasets

    def pick(option: str, kind: type, names: tuple[str, ...]) -> str:
        if option in spec.options:
            name = spec.options[option]
            if name not in features:
                raise ValueError(f"--data: no column {name!r} ({option}=); the dataset has {', '.join(features)}")
            return name
        found = [n for n, f in features.items() if isinstance(f, kind)] + [n for n in names if n in features]
        if not found:
            raise ValueError(
                f"--data: which column holds the {option}s? None is an {kind.__name__} feature or named "
                f"{' or '.join(names)}; the dataset has {', '.join(features)}: name it with ?{option}=COLUMN"
            )
        return found[0]

    return pick("image", datasets.Image, ("image", "img")), pick("label", datasets.ClassLabel, ("label", "labels"))


def class_names(split: Any, label: str, streaming: bool) -> tuple[list[str], dict[Any, int] | None]:
    """The class names and, for labels that are not class numbers (strings, or ints not 0..n-1), their map to
    class numbers. ``ClassLabel`` gives both; else a dataset read whole is scanned for its labels."""
    import datasets

    feature = split.features[label]
    if isinstance(feature, datasets.ClassLabel):
        return list(feature.names), None
    if streaming:
        raise ValueError(
            f"--data: column {label!r} is {feature}, not a ClassLabel: a stream cannot list its classes "
            "(drop streaming=1, or cast the column to ClassLabel)"
        )
    values = sorted(split.unique(label))
    if values == list(range(len(values))):
        return [str(v) for v in values], None
    return [str(v) for v in values], {v: i for i, v in enumerate(values)}


def _payload(value: Any, name: str) -> tuple[bytes, str]:
    """The encoded bytes of one ``Image(decode=False)`` value (``{"bytes", "path"}``) and a name for messages."""
    if isinstance(value, dict):
        path = value.get("path")
        if value.get("bytes"):
            return bytes(value["bytes"]), str(path or name)
        if path:
            return read_bytes(path), str(path)
    raise ImageError(f"{name}: no image bytes or path")


class HFImages(Dataset):
    """A ``datasets.Dataset`` read by index: the image's bytes from Arrow, decoded in ``__getitem__`` (in the
    DataLoader workers); an image that cannot be decoded yields ``(None, reason)``, skipped and counted."""

    streamed, in_memory = False, False  # see mlp_mixer.data.splits

    def __init__(
        self,
        table: Any,
        image: str,
        label: str,
        in_channels: int,
        label_map: dict[Any, int] | None = None,
        transform: v2.Transform | None = None,
    ) -> None:
        import datasets

        self.table = table.select_columns([image, label]).cast_column(image, datasets.Image(decode=False))
        self.image, self.label, self.in_channels, self.label_map = image, label, in_channels, label_map
        self.transform, self.epoch_seed = transform, 0

    def __len__(self) -> int:
        return len(self.table)

    def encoded(self, index: int) -> tuple[bytes, str, int]:
        """Image ``index``'s encoded bytes, its name and its class number (what the shard writer stores)."""
        row = self.table[index]
        payload, name = _payload(row[self.image], f"{self.image}[{index}]")
        value = row[self.label]
        return payload, name, self.label_map[value] if self.label_map else int(value)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int] | tuple[None, str]:
        try:
            payload, name, label = self.encoded(index)
        except ImageError as err:
            return None, str(err)
        seed = sample_seed(self.epoch_seed, index)
        image = seeded_sample(partial(decode_image_bytes, payload, self.in_channels, name), self.transform, seed, name)
        return (None, image) if isinstance(image, str) else (image, label)

    @property
    def targets(self) -> list[int]:
        values = self.table[self.label]
        return [self.label_map[v] for v in values] if self.label_map else [int(v) for v in values]

    def split(self, rank: int, world: int) -> HFImages:
        """Process ``rank``'s contiguous share of ``world``."""
        start, stop = share(len(self), rank, world)
        part = copy.copy(self)
        part.table = self.table.select(range(start, stop))
        return part


class HFStream(IterableDataset):
    """A streamed ``datasets.IterableDataset``, decoded where it is read (the DataLoader workers), split over
    processes × workers at the sample level: reader (``rank``, worker) keeps the examples at positions ``i`` with
    ``i % world == rank`` and ``(i // world) % workers == worker``, so the process shares differ by at most one
    example and every example is one reader's. Yields ``(uint8 image, label, key)`` or ``(None, reason)``, as
    :class:`.shard_reader.ShardImages`, and has its interface (``seed``, ``epoch``, ``split``, ``share``).

    Training (``shuffle``) reorders the stream's shards (files) from (seed, epoch) (the same order in every reader)
    and passes each reader's examples through a shuffle buffer seeded by (seed, epoch, rank, worker).
    """

    streamed, in_memory = True, False  # see mlp_mixer.data.splits

    def __init__(
        self,
        stream: Any,
        length: int,
        image: str,
        label: str,
        in_channels: int,
        transform: v2.Transform | None = None,
        shuffle: bool = False,
        buffer: int = SHUFFLE_BUFFER,
    ) -> None:
        import datasets

        self.stream = stream.select_columns([image, label]).cast_column(image, datasets.Image(decode=False))
        self.length, self.image, self.label, self.in_channels = length, image, label, in_channels
        self.transform, self.shuffle, self.buffer = transform, shuffle, buffer
        self.seed = self.epoch = self.epoch_seed = self.rank = 0
        self.world = 1

    def __len__(self) -> int:
        """The examples of the whole stream (every process's share together)."""
        return self.length

    def split(self, rank: int, world: int) -> HFStream:
        """A copy that reads process ``rank``'s share of ``world``."""
        part = copy.copy(self)
        part.rank, part.world = rank, world
        return part

    def share(self) -> int:
        """The examples this process reads per epoch."""
        return len(range(self.rank, self.length, self.world))

    def records(self, worker: int, workers: int) -> Iterator[tuple[str, dict, int]]:
        """What reader (``self.rank``, ``worker``) keeps of the epoch's stream: ``(key, image value, label)``."""
        shards = list(range(self.stream.num_shards))
        if self.shuffle:  # the stream's shards (its files) in an order drawn from (seed, epoch), alike in every reader
            random.Random(f"hf-shards-{self.seed}-{self.epoch}").shuffle(shards)
        readers = self.world * workers
        # .iter(), not iter(): inside a DataLoader worker datasets would hand each worker some of the stream's
        # shards (none when there are fewer shards than workers); here every reader sees the whole stream. (Not
        # IterableDataset.shuffle either: it waits 5 s at the end of every pass, an Arrow workaround.)
        rows = (
            (image, label)
            for j in shards
            for batch in self.stream.shard(num_shards=len(shards), index=j).iter(batch_size=64)
            for image, label in zip(batch[self.image], batch[self.label], strict=True)
        )
        records = (
            (f"{self.image}[{i}]", image, int(label))
            for i, (image, label) in enumerate(rows)
            if i % self.world == self.rank and (i // self.world) % workers == worker
        )
        if self.shuffle and self.buffer > 1:
            seed = f"hf-buffer-{self.seed}-{self.epoch}-{self.rank}-{worker}"
            records = shuffle_buffer(records, max(1, self.buffer // readers), random.Random(seed))
        return records

    def __iter__(self) -> Iterator[tuple]:
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        for position, value, label in self.records(worker, workers):
            key = str(value.get("path") or position) if isinstance(value, dict) else position
            try:
                payload, name = _payload(value, position)
            except ImageError as err:
                yield None, str(err)
                continue
            seed = sample_seed(self.epoch_seed, zlib.crc32(key.encode()))
            image = seeded_sample(
                partial(decode_image_bytes, payload, self.in_channels, name), self.transform, seed, key
            )
            yield (None, image) if isinstance(image, str) else (image, label, key)


def _channels(split: Any, image: str, limit: int = 16) -> int:
    """1 when the first ``limit`` readable images are all grayscale (read from their headers), else 3."""
    import datasets
    from PIL import Image

    rows = split.select_columns([image]).cast_column(image, datasets.Image(decode=False))
    seen_gray = False
    for n, row in enumerate(rows):
        if n >= limit:
            break
        try:
            payload, _ = _payload(row[image], image)
            with Image.open(io.BytesIO(payload)) as img:
                mode = img.mode
        except (ImageError, OSError, ValueError, SyntaxError):
            continue
        if mode not in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"):
            return 3
        seen_gray = True
    return 1 if seen_gray else 3


def _reader(spec: Spec, split: Any, length: int | None, name: str, image: str, label: str, channels: int,
            label_map: dict[Any, int] | None, shuffle: bool) -> Dataset:  # fmt: skip
    if not spec.streaming:
        return HFImages(split, image, label, channels, label_map)
    if length is None:
        raise ValueError(f"--data {spec.source}: the stream does not say how many examples split {name!r} holds, "
                         "which every process needs to take the same steps; drop streaming=1")  # fmt: skip
    return HFStream(split, length, image, label, channels, shuffle=shuffle)


def load_splits(data: str | Path, val_fraction: float = 0.1, in_channels: int | None = None) -> DataSplits:
    """The training and held-out splits (see the module's docstring for what ``data`` names and its options);
    a dataset with one split holds out ``val_fraction`` of each class (fixed seed), as a folder does."""
    from .folder import split_by_class

    spec = parse(data)
    splits, lengths = open_splits(spec)
    train_name = spec.options.get("split", "train" if "train" in splits else next(iter(splits)))
    val_name = spec.options.get("val") or next((n for n in HELD_OUT if n in splits and n != train_name), None)
    for name in (train_name, val_name):
        if name is not None and name not in splits:
            raise ValueError(f"--data {data}: no split {name!r}; it has {', '.join(splits)}")
    train = splits[train_name]
    image, label = columns(spec, train.features)
    classes, label_map = class_names(train, label, spec.streaming)
    if len(classes) < 2:
        raise ValueError(f"--data {data}: {len(classes)} class(es) in column {label!r}; a classifier needs two")
    channels = in_channels or _channels(train, image)
    notes = [f"Hugging Face dataset: split {train_name!r}, columns {image!r} / {label!r}, {len(classes)} classes"]
    if val_name is None:
        if spec.streaming:
            raise ValueError(
                f"--data {data}: no held-out split ({', '.join(HELD_OUT)}) to stream; name one with ?val=SPLIT, "
                "or drop streaming=1 to hold out --val-fraction of the training split"
            )
        targets = HFImages(train, image, label, channels, label_map).targets
        kept, held = split_by_class(list(enumerate(targets)), val_fraction, seed=0)
        notes.append(f"no held-out split: holding out {val_fraction:.0%} of {train_name!r} per class")
        train_set = HFImages(train.select([i for i, _ in kept]), image, label, channels, label_map)
        val_set = HFImages(train.select([i for i, _ in held]), image, label, channels, label_map)
    else:
        train_set = _reader(spec, train, lengths.get(train_name), train_name, image, label, channels, label_map, True)
        val = splits[val_name]
        val_set = _reader(spec, val, lengths.get(val_name), val_name, image, label, channels, label_map, False)
        notes[0] += f", held out {val_name!r}"
    return DataSplits(train_set, val_set, classes, channels, "hf", None, notes)


def eval_split(data: str | Path, in_channels: int) -> EvalSplit:
    """The held-out split (``?val=``, else validation, val, valid or test; else ``?split=``)."""
    spec = parse(data)
    splits, lengths = open_splits(spec)
    name = spec.options.get("val") or next((n for n in HELD_OUT if n in splits), None) or spec.options.get("split")
    if name is None or name not in splits:
        raise ValueError(f"--data {data}: no held-out split to evaluate ({', '.join(splits)}); name it with ?val=")
    split = splits[name]
    image, label = columns(spec, split.features)
    classes, label_map = class_names(split, label, spec.streaming)
    dataset = _reader(spec, split, lengths.get(name), name, image, label, in_channels, label_map, False)
    return EvalSplit(dataset, classes, f"split {name!r} of {data}")


def data_kind(data: str | Path) -> str:
    """``"folder"``: images of any size, trained with the folder's defaults."""
    return "folder"
