"""Images in, tensors out: decoding, the transforms stored with every set of weights, and the data sources.

Every source yields ``(uint8 image (C, H, W), label)``; the training loop turns whole batches into normalised
floats (and augments them) in one place, on the training device. One job per module:

- :mod:`.decode`: image files and bytes to uint8 tensors, within limits (what ``predict`` and ``serve`` import);
- :mod:`.transforms`: per-sample geometry (evaluation, training) and the per-batch input and augmentations;
- :mod:`.loader`: batches of any source through DataLoader workers;
- :mod:`.splits`: what a source gives (:class:`DataSplits`) and the interface its readers share;
- the sources, one module each: :mod:`.mnist` (the embedded default), :mod:`.cifar` (python-pickle folders),
  :mod:`.folder` (ImageFolder layout), :mod:`.shard_reader` (WebDataset shards), :mod:`.hf` (Hugging Face
  datasets: the Hub, ``save_to_disk`` folders, Parquet), with :mod:`.tensors`
  (in-memory images) and :mod:`.shards` (the shard format, read as bytes);
- :mod:`.sources`: the one function that picks the source of ``--data`` (:func:`load_splits`);
- :mod:`.shard_writer`: any source written as shards (``mlp-mixer shard``).

The names the package had before these modules (``from mlp_mixer.data import load_splits, read_image, ...``)
still import from here, each loaded from its module on first use: ``import mlp_mixer.data.decode`` loads no
dataset code. A limit such as ``MAX_FILE_BYTES`` lives, and is patched, in its module
(:mod:`mlp_mixer.utils.limits`), the one budget every reader checks.
"""

from typing import Any

from ..utils.lazy import lazy_exports

_HOMES = {
    "decode": (
        "IMAGE_EXTENSIONS FORMATS ImageError TooLargeError read_bytes image_header read_image decode_image_bytes"
    ),
    "..utils.limits": "MAX_PIXELS MAX_FILE_BYTES",
    "transforms": (
        "eval_geometry eval_transform train_geometry sample_seed random_affine random_hflip resize_batch "
        "match_channels to_input"
    ),
    "loader": "Batch collate iterate_batches iterate_stream batches_of",
    "splits": "DataSplits EvalSplit",
    "tensors": "TensorImages",
    "mnist": "MNIST_CLASSES embedded_mnist_path embedded_mnist",
    "cifar": "CIFAR_LAYOUTS cifar_kind load_cifar",
    "folder": (
        "VAL_DIR_NAMES FolderDataset FolderScan scan_image_folder split_by_class infer_in_channels unreadable_classes"
    ),
    "shard_reader": "ShardImages",
    "hf": "HFImages HFStream",
    "sources": "load_splits",
    "shard_writer": "write_shards",
}
_NAMES = {name: module for module, names in _HOMES.items() for name in names.split()}
_MODULES = (*(m for m in _HOMES if not m.startswith(".")), "shards")

__all__ = sorted([*_NAMES, "shard_splits"])

# Not cached here: the module's value is the one value (a test that patches limits.MAX_FILE_BYTES sees it here).
_getattr, _dir = lazy_exports(__name__, _NAMES, _MODULES)


def __getattr__(name: str) -> Any:
    if name == "shard_splits":  # the shards' load_splits, as this module called it before the split
        return _getattr("shard_reader").load_splits
    return _getattr(name)


def __dir__() -> list[str]:
    return sorted({*_dir(), "shard_splits"})
