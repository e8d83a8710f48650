"""WebDataset tar shards: the format and its index, found and checked, and read as one stream split over
processes × workers.

A multi-node job on a shared file system stalls on a folder of loose files read at random long before its GPUs
are busy; the ecosystem's answer (timm's ``wds`` reader, the Hugging Face Hub's ``*-wds`` datasets) is tar shards
read sequentially. A shard holds ``{key}.jpg|png|...`` (the image's original bytes) and ``{key}.cls`` (the label as
decimal text), written and read with the ``webdataset`` package. ``index.json`` beside the shards lists, per split,
every shard with its images and bytes, and the class names: the reader needs the counts to give every process the
same number of steps, and checks each shard against them before training starts.

This module works on bytes: it never decodes an image (:class:`.shard_reader.ShardImages` does, in DataLoader
workers, as the shard source), nor writes one (:mod:`.shard_writer` does).

What a reader (one DataLoader worker of one process) reads in epoch ``e``, see :func:`reader_samples`:

1. the split's shards in an order drawn from (seed, e) (training; held-out data keeps the index's order);
2. their images as one sequence, cut into ``world`` contiguous ranges, one per process, each cut into ``workers``
   contiguous ranges, one per worker (training: the sequence first rotated to start at an offset drawn from
   (seed, e)): every image is in exactly one reader's range, whatever the counts, so readers split at the sample
   level and any number of readers can read any number of shards, one included;
3. its range, read sequentially (the first shard from the range's start, found from the tar headers: the images
   before it are not read), through a shuffle buffer seeded by (seed, e, rank, worker) (training).
"""

from __future__ import annotations

import json
import random
import re
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..utils import limits

INDEX_NAME = "index.json"
FORMAT = "mlp-mixer webdataset shards"
IMAGE_EXTS = ("jpg", "jpeg", "png", "gif", "webp", "bmp", "tif", "tiff")
SPLITS = ("train", "val")
DEFAULT_SHARD_SIZE = "auto"  # at most 256 MB, and 64 shards where the data allow (shard_writer.auto_shard_size)
SHUFFLE_BUFFER = 1000  # images (encoded bytes) each reader holds to shuffle within and across its shards

Record = tuple[str, str, bytes, int]  # (key, image extension, the image's bytes, label)


class ShardError(ValueError):
    """Shards or an index that cannot be used as they are; the message names the file and says what to do."""


@dataclass(frozen=True)
class Shard:
    path: Path
    images: int
    bytes: int


@dataclass
class ShardSet:
    """What ``--data`` points at: the index, its classes and the selected shards of each split."""

    index: Path
    classes: list[str]
    in_channels: int
    kind: str  # the source the shards were written from: "mnist", "cifar10", "cifar100", "folder"
    native_size: tuple[int, int] | None  # the size of every image when the source's images share one, else None
    splits: dict[str, list[Shard]]
    selected: list[Shard] | None = None  # the shards a brace pattern (or a .tar) named; None for a whole index

    def images(self, split: str) -> int:
        return sum(s.images for s in self.splits.get(split, []))


# ---------------------------------------------------------------------------------------------------------------
# Finding and checking shards


def read_index(path: Path) -> dict[str, Any]:
    """The JSON object of an index file; ShardError, naming it, when it is not one."""
    try:
        loaded = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ShardError(f"{path} is not a readable JSON index: {err}") from err
    if not isinstance(loaded, dict):
        raise ShardError(f"{path} is not a shard index (expected a JSON object)")
    return loaded


def _brace_expand(pattern: str) -> list[str]:
    from braceexpand import braceexpand  # webdataset's dependency, as its own shard lists use it

    return list(braceexpand(pattern))


def is_shards(data: str | Path | None) -> bool:
    """Whether ``--data`` names shards: an index JSON, a folder of shards (:func:`is_shard_folder`), a brace
    pattern of tar files (``train-{000000..000146}.tar``) or one tar file."""
    if data is None:
        return False
    text = str(data)
    if text.endswith(".tar") or ("{" in text and ".tar" in text):
        return True
    path = Path(text)
    if path.is_dir():
        return is_shard_folder(path)
    return path.is_file() and path.suffix == ".json"


def is_shard_folder(folder: Path) -> bool:
    """The rule for a folder: shards when it holds ``index.json`` (what ``mlp-mixer shard`` writes), or nothing
    but ``.tar`` files (shards whose index is missing, which :func:`open_shards` then says). So one stray tar
    beside class folders, or in a CIFAR folder, changes nothing. An index beside class folders could mean either:
    a ShardError names both, and the user says which."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    subfolders = sorted(p.name for p in entries if p.is_dir())
    if (folder / INDEX_NAME).is_file():
        if subfolders:
            raise ShardError(
                f"--data {folder} is ambiguous: it holds {INDEX_NAME} (shards) and the folders "
                f"{', '.join(subfolders[:5])}{', ...' if len(subfolders) > 5 else ''} (an image folder's classes); "
                f"pass {folder / INDEX_NAME} for the shards, or move it out for the image folder"
            )
        return True
    return bool(entries) and all(p.is_file() and p.suffix == ".tar" for p in entries)


def open_shards(data: str | Path) -> ShardSet:
    """Read the index of ``--data`` (see :func:`is_shards`) and check every selected shard against it: it exists
    and has the size the index records (a truncated or rewritten shard is caught here, before any training).

    A brace pattern or a tar file selects those shards of the index beside them (each must be listed there).
    """
    text = str(data)
    pattern = text.endswith(".tar") or ("{" in text and ".tar" in text)
    if pattern:
        names = _brace_expand(text)
        folder = Path(names[0]).parent
        if len({Path(n).parent for n in names}) > 1:
            raise ShardError(f"--data {text}: the shards of a pattern must be in one folder, beside its {INDEX_NAME}")
        index_path = folder / INDEX_NAME
    else:
        path = Path(text)
        index_path = path if path.suffix == ".json" else path / INDEX_NAME
        folder = index_path.parent
    if not index_path.is_file():
        raise FileNotFoundError(
            f"--data {text}: no shard index {index_path} (mlp-mixer shard writes the shards and their {INDEX_NAME})"
        )
    index = read_index(index_path)
    if index.get("format") != FORMAT or not isinstance(index.get("splits"), dict):
        raise ShardError(f"{index_path} is not an index of mlp-mixer shards (no format {FORMAT!r} with splits)")
    classes = [str(c) for c in index.get("classes") or []]
    if len(classes) < 2:
        raise ShardError(f"{index_path} lists {len(classes)} classes; a classifier needs at least two")
    listed: dict[str, tuple[str, Shard]] = {}
    splits: dict[str, list[Shard]] = {}
    for split, entry in index["splits"].items():
        shards = []
        try:
            for item in entry["shards"]:
                name = str(item["name"])
                if name in ("", ".", "..") or Path(name).name != name:  # "../x.tar", "/data/x.tar", "a/x.tar"
                    raise ShardError(
                        f"{index_path}: split {split!r} names shard {name!r}, which is not a file beside the index "
                        "(an index names its shards by file name, in its own folder)"
                    )
                shard = Shard(folder / name, int(item["images"]), int(item["bytes"]))
                shards.append(shard)
                listed[str(shard.path)] = (split, shard)
            total = int(entry["images"])
        except (KeyError, TypeError, ValueError) as err:
            raise ShardError(f"{index_path}: split {split!r} is malformed ({type(err).__name__}: {err})") from err
        if sum(s.images for s in shards) != total:
            raise ShardError(
                f"{index_path}: split {split!r} says {total} images but its shards add up to "
                f"{sum(s.images for s in shards)}; write the shards again (mlp-mixer shard)"
            )
        splits[split] = shards
    selected = None
    if pattern:
        chosen: dict[str, list[Shard]] = {}
        selected = []
        for name in _brace_expand(text):
            if name not in listed:
                raise ShardError(f"--data {text}: {name} is not listed in {index_path}")
            split, shard = listed[name]
            chosen.setdefault(split, []).append(shard)
            selected.append(shard)
        if "val" not in chosen and "val" in splits:  # training on some shards: held out, the index's val split
            chosen["val"] = splits["val"]
        splits = chosen
    for shards in splits.values():
        for shard in shards:
            if not shard.path.is_file():
                raise FileNotFoundError(f"shard {shard.path} listed in {index_path} is missing")
            size = shard.path.stat().st_size
            if size != shard.bytes:
                raise ShardError(
                    f"shard {shard.path} is {size} bytes, {index_path} says {shard.bytes}: truncated or rewritten "
                    "after the index; write the shards again (mlp-mixer shard)"
                )
    native = index.get("native_size")
    return ShardSet(
        index=index_path,
        classes=classes,
        in_channels=int(index.get("in_channels", 3)),
        kind=str(index.get("kind", "folder")),
        native_size=tuple(native) if native else None,
        splits=splits,
        selected=selected,
    )


# ---------------------------------------------------------------------------------------------------------------
# Reading: who reads what


def epoch_order(shards: list[Shard], seed: int, epoch: int, shuffle: bool) -> list[Shard]:
    """The shards of one epoch in reading order: drawn from (seed, epoch) when shuffling, else as listed."""
    if not shuffle:
        return list(shards)
    order = list(shards)
    random.Random(f"shard-order-{seed}-{epoch}").shuffle(order)
    return order


def epoch_offset(total: int, seed: int, epoch: int, shuffle: bool) -> int:
    """Where the epoch's image sequence starts in its shard order (training: drawn from (seed, epoch); else 0).

    The readers' ranges are cut from the sequence rotated by this offset, so that with fewer shards than readers
    (one shard read by four readers) a reader's images still change from epoch to epoch."""
    return random.Random(f"shard-offset-{seed}-{epoch}").randrange(total) if shuffle and total else 0


def reader_range(total: int, rank: int, world: int, worker: int, workers: int) -> tuple[int, int]:
    """Positions ``[start, stop)`` of the epoch's image sequence that one reader reads: the process's contiguous
    ``1 / world`` of the sequence, then the worker's contiguous ``1 / workers`` of that. Ranges of all readers
    cover the sequence exactly once; a process's share does not depend on the number of workers."""
    first, last = total * rank // world, total * (rank + 1) // world
    n = last - first
    return first + n * worker // workers, first + n * (worker + 1) // workers


def reader_pieces(order: list[Shard], start: int, stop: int, rotate: int = 0) -> list[tuple[Shard, int, int]]:
    """The parts of shards that positions ``[start, stop)`` of the concatenated ``order``, rotated to start at
    position ``rotate``, fall in: ``(shard, first image, end image)`` within each shard (a range that wraps round
    the end takes the last shard's tail and then the first shard's head)."""
    pieces, offset = [], -rotate
    for shard in order + order:
        lo, hi = max(start, offset), min(stop, offset + shard.images)
        if lo < hi:
            pieces.append((shard, lo - offset, hi - offset))
        offset += shard.images
    return pieces


def sample_offset(shard: Shard, first: int) -> int:
    """The byte offset in ``shard`` where sample ``first`` (counted from 0) starts, found from the tar headers
    alone: each member's data is seeked over, not read, so a reader whose range starts deep inside a shard reads
    ~1 KB per image before it instead of the images. Samples are grouped by key as ``webdataset`` groups them."""
    from webdataset.tariterators import base_plus_ext

    count, key = 0, None
    with tarfile.open(shard.path, "r:") as tar:
        while (member := tar.next()) is not None:
            prefix = base_plus_ext(member.name)[0] if member.isreg() else None
            if prefix is None or (member.name.startswith("__") and member.name.endswith("__")):
                continue  # what webdataset skips: not a regular file, no extension, tar metadata
            if prefix != key:
                if count == first:
                    return member.offset
                key, count = prefix, count + 1
            tar.members.clear()  # headers only: keep none of them
    raise ShardError(
        f"shard {shard.path} holds {count} images, its index says {shard.images}: truncated or rewritten; "
        "write the shards again (mlp-mixer shard)"
    )


def read_shard(shard: Shard, first: int, end: int, num_classes: int) -> Iterator[Record]:
    """Images ``first .. end - 1`` of ``shard``, read in order with ``webdataset`` from where image ``first``
    starts (:func:`sample_offset`: the images before it are not read), each checked: one image file, a decimal
    ``.cls`` label among the classes. Also checks that the shard holds the number of images the index says when
    read to its end.

    Raises:
        ShardError: a truncated or unreadable tar, a sample without an image or a label, a label outside the
            classes, more or fewer images than the index says.
    """
    from webdataset import tariterators

    position = first
    try:
        with shard.path.open("rb") as stream:
            if first:
                stream.seek(sample_offset(shard, first))
            samples = tariterators.group_by_keys(_members(stream, shard.path))
            for sample in samples:
                if position >= shard.images:
                    raise ShardError(
                        f"shard {shard.path} holds more than the {shard.images} images its index says; write the "
                        "shards again (mlp-mixer shard)"
                    )
                yield _record(shard, sample, num_classes)
                position += 1
                if position >= end and end < shard.images:
                    return
    except (tarfile.TarError, EOFError, OSError) as err:
        raise ShardError(f"shard {shard.path} is truncated or not a tar file ({_first_line(err)})") from err
    except ValueError as err:
        if isinstance(err, ShardError):
            raise
        raise ShardError(f"shard {shard.path} is not a WebDataset shard ({_first_line(err)})") from err
    if position != shard.images:
        raise ShardError(
            f"shard {shard.path} holds {position} images, its index says {shard.images}: truncated or rewritten; "
            "write the shards again (mlp-mixer shard)"
        )


def _members(stream: IO[bytes], path: Path) -> Iterator[dict[str, Any]]:
    """The files of a tar stream, as ``webdataset``'s ``tar_file_expander`` yields them, each member's size read
    from its header and checked before its data is: a GNU-sparse member, or one in a gzip-compressed shard, can
    declare gigabytes in a few bytes, and a shard's member is an image file under the same cap as one on disk
    (``limits.MAX_FILE_BYTES``). Skipping a member never expands it: only its stored blocks are passed."""
    with tarfile.open(fileobj=stream, mode="r|*") as tar:
        for member in tar:
            if not member.isreg() or re.match(r"__[^/]*__($|/)", member.name):  # what webdataset skips
                continue
            if member.size > limits.MAX_FILE_BYTES:
                raise ShardError(
                    f"shard {path}: member {member.name} declares {member.size:,} bytes, over the limit of "
                    f"{limits.MAX_FILE_BYTES / 2**20:g} MiB per image (MLP_MIXER_MAX_FILE_MB)"
                )
            yield {"fname": member.name, "data": tar.extractfile(member).read(), "__url__": str(path)}
            tar.members = []  # keep no headers of what was read


def _first_line(err: BaseException) -> str:
    text = str(err.args[0]) if err.args else type(err).__name__
    return text.split("\n")[0].split(" @ ")[0][:200]


def _record(shard: Shard, sample: dict[str, Any], num_classes: int) -> Record:
    key = sample["__key__"]
    ext = next((e for e in IMAGE_EXTS if e in sample), None)
    if ext is None:
        raise ShardError(f"shard {shard.path}: sample {key} has no image ({', '.join('.' + e for e in IMAGE_EXTS)})")
    if "cls" not in sample:
        raise ShardError(f"shard {shard.path}: sample {key} has no label (.cls)")
    text = bytes(sample["cls"]).decode("utf-8", "replace").strip()
    if not re.fullmatch(r"-?\d+", text):
        raise ShardError(f"shard {shard.path}: sample {key} has label {text[:20]!r}, not a class number")
    label = int(text)
    if not 0 <= label < num_classes:
        raise ShardError(
            f"shard {shard.path}: sample {key} has label {label}, outside the {num_classes} classes of the index"
        )
    return key, ext, bytes(sample[ext]), label


def shuffle_buffer(records: Iterable[Record], size: int, rng: random.Random) -> Iterator[Record]:
    """Records in a random order: each one read replaces a random one of ``size`` held, which is yielded (the
    usual streaming shuffle: an image moves at most ``size`` places earlier, any number later)."""
    held: list[Record] = []
    for record in records:
        if len(held) < size:
            held.append(record)
            continue
        i = rng.randrange(size)
        held[i], record = record, held[i]
        yield record
    rng.shuffle(held)
    yield from held


def reader_samples(
    shards: list[Shard],
    num_classes: int,
    *,
    seed: int = 0,
    epoch: int = 0,
    shuffle: bool = False,
    rank: int = 0,
    world: int = 1,
    worker: int = 0,
    workers: int = 1,
    buffer: int = SHUFFLE_BUFFER,
) -> Iterator[Record]:
    """What one reader (``worker`` of ``workers`` in process ``rank`` of ``world``) reads in ``epoch`` (see the
    module's docstring): a function of these arguments only."""
    order, total = epoch_order(shards, seed, epoch, shuffle), sum(s.images for s in shards)
    start, stop = reader_range(total, rank, world, worker, workers)
    pieces = reader_pieces(order, start, stop, epoch_offset(total, seed, epoch, shuffle))
    records = (r for shard, a, b in pieces for r in read_shard(shard, a, b, num_classes))
    if shuffle and buffer > 1:
        records = shuffle_buffer(records, buffer, random.Random(f"shard-buffer-{seed}-{epoch}-{rank}-{worker}"))
    yield from records
