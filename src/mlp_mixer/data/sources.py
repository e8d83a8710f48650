"""The one place a data source is chosen: what ``--data`` names, and the source module that reads it.

Training, evaluation, few-shot and the shard writer all read ``--data`` through the functions here, which ask
:func:`source_of` for the module and call the same-named function of it (the interface is in
:mod:`mlp_mixer.data.splits`). A new dataset format is a new source module and one line in :func:`source_of`.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from . import cifar, folder, hf, mnist, shard_reader, shards
from .splits import DataSplits, EvalSplit

__all__ = ["DataSplits", "EvalSplit", "data_kind", "eval_split", "load_splits", "source_of"]


def source_of(data: str | Path | None) -> ModuleType:
    """The source module that reads ``data``: the embedded MNIST digits (None), WebDataset shards (an index, its
    folder, a brace pattern or a ``.tar``), a CIFAR python-pickle folder, else an ImageFolder root. Looks at names
    and a few files only; whether the data is usable is found out by the module's ``load_splits``."""
    if data is None:
        return mnist
    if hf.is_hf(data):  # a Hugging Face dataset: hf:owner/name, a save_to_disk folder, Parquet files
        return hf
    if shards.is_shards(data):
        return shard_reader
    if cifar.cifar_kind(data):
        return cifar
    return folder


def load_splits(data: str | Path | None, val_fraction: float = 0.1, in_channels: int | None = None) -> DataSplits:
    """The training and held-out splits of a data source, without transforms; a source that cannot be used
    fails here, before any training, with one line saying why.

    Args:
        data: None for the embedded MNIST digits (4,000 / 1,000); a CIFAR-10/100 python-pickle folder (train
            batches / test batch); an ImageFolder root: ``ROOT/train/<class>/...`` and ``ROOT/val/<class>/...``,
            or ``ROOT/<class>/...`` split per class with ``val_fraction`` held out (fixed seed); or WebDataset
            shards: their ``index.json``, its folder, or a brace pattern of shards; or a Hugging Face dataset
            (``hf:owner/name``, a ``save_to_disk`` folder, Parquet files; options: :mod:`.hf`).
        val_fraction: the held-out share of a folder without ``val/``.
        in_channels: decode image files to this many channels; None infers 1 (all grayscale) or 3.
    """
    return source_of(data).load_splits(data, val_fraction, in_channels)


def eval_split(data: str | Path, in_channels: int) -> EvalSplit:
    """What ``mlp-mixer eval --data`` evaluates: a CIFAR folder's test batch; an ImageFolder's ``val/``, or
    every image under its class folders; the index's ``val`` shards, or the shards a brace pattern names.

    Args:
        data: the ``--data`` of ``eval``.
        in_channels: the model's input channels, which image files are decoded to.
    """
    return source_of(data).eval_split(data, in_channels)


def data_kind(data: str | Path | None) -> str:
    """``"mnist"`` (the embedded default), ``"cifar10"``, ``"cifar100"`` or ``"folder"``: the kind whose training
    defaults a run on ``data`` takes (shards: the kind they were written from)."""
    return source_of(data).data_kind(data)
