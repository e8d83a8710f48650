"""Batching: the datasets of every source as :class:`Batch` es of uint8 images, through DataLoader workers.

Indexed datasets are read by lists of indices (:func:`iterate_batches`: the training loop draws them), streams of
shards in the order their readers stream them (:func:`iterate_stream`); :func:`batches_of` reads any dataset once,
as evaluation does. Which way a dataset is read is asked of the dataset (``streamed``, ``in_memory``: see
:mod:`mlp_mixer.data.splits`), so this module imports no source.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset


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
    return Batch(stack([g[0] for g in good]), torch.tensor([g[1] for g in good]), skipped, keys)


def stack(images: list[torch.Tensor]) -> torch.Tensor:
    """``torch.stack(images)``, with two savings. Images that are (C, H, W) views of (H, W, C) memory (what
    decoding and the training crop give) are stacked as they lie, into a (B, C, H, W) view of (B, H, W, C) memory
    (channels_last), not transposed (0.09 ms an image against 0.34 at 224); :func:`.transforms.to_input` makes the
    float batch contiguous. In a DataLoader worker the batch is written into shared memory directly, as
    ``default_collate`` does, so it crosses to the main process without another copy."""
    hwc = [image.permute(1, 2, 0) for image in images]
    # (H, W, C) memory, rows possibly apart (a center crop's view): copied row by row, no transposing
    channels_last = all(x.stride(2) == 1 and x.stride(1) == x.shape[2] for x in hwc)
    parts = hwc if channels_last else images
    out = None
    if torch.utils.data.get_worker_info() is not None:
        first = parts[0]
        storage = first._typed_storage()._new_shared(sum(x.numel() for x in parts), device=first.device)
        out = first.new(storage).resize_(len(parts), *first.shape)
    batch = torch.stack(parts, out=out)
    return batch.permute(0, 3, 1, 2) if channels_last else batch


def iterate_batches(
    dataset: Dataset,
    batches: Sequence[Sequence[int]],
    workers: int,
    device: torch.device,
    spares: Sequence[Sequence[int]] | None = None,
) -> Iterator[Batch]:
    """Yield a :class:`Batch` of uint8 images for each list of indices in ``batches``.

    In-memory images without per-sample transforms are indexed directly (no worker processes, no copies);
    everything else goes through a DataLoader whose workers ignore Ctrl-C (the main process handles it).

    With ``spares`` (training: for each batch, the global batch it is this process's part of), every batch holds
    as many images as it has indices however many are unreadable (:func:`fill`), so every process trains on the
    same number of images at every step, and none skips a step (and its all-reduce) that the others take.
    """
    if dataset.in_memory and dataset.transform is None:
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
        worker_init_fn=worker_init,
    )
    if spares is None:
        yield from loader
        return
    for batch, indices, spare in zip(loader, batches, spares, strict=True):
        yield fill(batch, len(indices), dataset, spare)


def fill(batch: Batch, size: int, dataset: Dataset, spare: Sequence[int]) -> Batch:
    """``batch`` with ``size`` images: the images unreadable files left out are replaced by its own readable ones
    again, in order; a batch without any takes the first readable image of ``spare`` (decoded here). A function of
    the batch's indices alone (no earlier batch), so a resumed epoch fills as the uninterrupted one did. Only a
    ``spare`` without any readable image leaves it empty (then every process's part is empty, and all skip)."""
    n = len(batch.labels)
    if n >= size:
        return batch
    if n == 0:
        found = next((item for i in spare if (item := dataset[i])[0] is not None), None)
        if found is None:
            return batch
        images, labels = found[0][None], torch.tensor([found[1]])
    else:
        images, labels = batch.images, batch.labels
    repeat = [i % len(labels) for i in range(size - n)]
    return Batch(
        torch.cat([batch.images, images[repeat]]) if n else images[repeat],
        torch.cat([batch.labels, labels[repeat]]) if n else labels[repeat],
        batch.skipped,
        batch.keys,
    )


def iterate_stream(
    dataset: IterableDataset,
    batch_size: int,
    workers: int,
    device: torch.device,
    steps: int | None = None,
    skip: int = 0,
) -> Iterator[Batch]:
    """Batches of ``batch_size`` images from a stream of shards (:class:`.shard_reader.ShardImages`), decoded in
    ``workers`` DataLoader processes (each reads its own shards), pinned on CUDA.

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
        dataset, batch_size=batch_size, num_workers=workers, collate_fn=collate, worker_init_fn=worker_init
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
    if dataset.streamed:
        yield from iterate_stream(dataset, batch_size, workers, device)
        return
    batches = [list(range(i, min(i + batch_size, len(dataset)))) for i in range(0, len(dataset), batch_size)]
    yield from iterate_batches(dataset, batches, workers, device)


def worker_init(_: int) -> None:
    """A DataLoader worker: single-threaded, and deaf to Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's: it saves and stops the workers
    torch.set_num_threads(1)
