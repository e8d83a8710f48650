"""What every data source gives, and the interface its readers share.

A **source module** (:mod:`.mnist`, :mod:`.cifar`, :mod:`.folder`, :mod:`.shard_reader`) reads one kind of
``--data`` and exposes the same three functions; :mod:`.sources` picks the module and calls them:

- ``load_splits(data, val_fraction=0.1, in_channels=None) -> DataSplits``: the training and held-out splits
  (what ``train`` and ``fewshot`` read); a source that cannot be used fails here, with one line saying why;
- ``eval_split(data, in_channels) -> EvalSplit``: what ``mlp-mixer eval --data`` evaluates;
- ``data_kind(data) -> str``: the kind whose training defaults a run on ``data`` takes, found without reading
  the images.

A **split** (``DataSplits.train``, ``.val``, ``EvalSplit.dataset``) is a torch ``Dataset`` yielding
``(uint8 image (C, H, W), label)`` (a stream also the image's key), and has:

- ``transform``: a per-sample uint8 -> uint8 transform (or None), set by the caller, seeded per sample from
  ``epoch_seed`` (:func:`.transforms.sample_seed`);
- ``streamed``: True for a stream read in its readers' order (:class:`.shard_reader.ShardImages`, read with
  :func:`.loader.iterate_stream`), False for a dataset indexed by lists of indices (:func:`.loader.iterate_batches`);
- ``in_memory``: True when ``images`` (uint8 (N, C, H, W)) and ``labels`` hold it all (no decoding, no workers);
  False for images decoded from files or bytes, each at its own size until a per-sample geometry resizes it;
- ``split(rank, world)``: process ``rank``'s contiguous share of ``world``, for evaluation over processes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch.utils.data import Dataset


@dataclass
class DataSplits:
    """A dataset ready for training: train and held-out splits, class names, and how it was found."""

    train: Dataset
    val: Dataset
    classes: list[str]
    in_channels: int
    kind: str  # "mnist", "cifar10", "cifar100", "folder" or "shards"
    native_size: tuple[int, int] | None = None  # the size of in-memory images; None for files of any size
    notes: list[str] = field(default_factory=list)  # things a user should hear about (ignored files, ...)


@dataclass
class EvalSplit:
    """The images ``mlp-mixer eval --data`` evaluates: the dataset, its class names (matched by name to the
    checkpoint's), and what they are (``"test batch"``, the folder, the shards)."""

    dataset: Dataset
    classes: list[str]
    description: str


def share(total: int, rank: int, world: int) -> tuple[int, int]:
    """Positions ``[start, stop)`` of process ``rank``'s contiguous share of ``total`` items over ``world``; the
    shares cover every item once and differ in size by at most one."""
    return total * rank // world, total * (rank + 1) // world
