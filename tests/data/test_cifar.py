"""data.cifar: the CIFAR-10/100 python-pickle source, read without running pickle code or building more than the
file holds."""

import codecs
import pickle
import time

import numpy as np
import pytest
import torch
from helpers import write_cifar

from mlp_mixer.data.sources import load_splits


@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
def test_cifar_folders(tmp_path, kind):
    images, labels = write_cifar(tmp_path, kind)
    splits = load_splits(tmp_path)
    assert splits.kind == kind and splits.native_size == (32, 32) and splits.in_channels == 3
    assert len(splits.classes) == (10 if kind == "cifar10" else 100) and splits.classes[3] == "class3"
    assert splits.train.labels.tolist() == labels
    assert torch.equal(splits.train.images, torch.from_numpy(images).reshape(-1, 3, 32, 32))
    assert len(splits.val) == 6


def test_cifar_pickles_cannot_run_code(tmp_path):
    write_cifar(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(ValueError, match="refusing to load builtins.print"):
        load_splits(tmp_path)


# --- issue 25: a CIFAR file can build no more than it holds --------------------------------------------------------


class Call:
    """Pickles to ``call(*args)``: how a hostile batch names a callable the restricted unpickler allows."""

    def __init__(self, call, *args) -> None:
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def nested_hex(depth: int) -> Call:
    """``_codecs.encode(... _codecs.encode(b"ab", "hex") ..., "hex")``: each level doubles the bytes."""
    value = b"ab"
    for _ in range(depth):
        value = Call(codecs.encode, value, "hex")
    return value


def test_a_pickle_that_expands_is_refused_before_it_builds(tmp_path):
    """An 806-byte batches.meta nesting hex encodes built 8 GiB: _codecs.encode is allowed only as Python 3's
    protocol 2 uses it for bytes (str to latin1, as many bytes as characters)."""
    write_cifar(tmp_path)
    meta = tmp_path / "batches.meta"
    for depth in (16, 33):  # 128 KiB (what the old reader built, then refused for its type), then 16 GiB
        meta.write_bytes(pickle.dumps({b"label_names": nested_hex(depth)}, protocol=2))
        start = time.perf_counter()
        with pytest.raises(ValueError, match=r"batches.meta is not a readable .*refusing _codecs.encode other than"):
            load_splits(tmp_path)
        assert time.perf_counter() - start < 1
    assert meta.stat().st_size < 1100


def shared_nesting(depth: int) -> list:
    """A list of 2**depth ints in ~depth pickle objects: each level holds the level below twice."""
    value = [1]
    for _ in range(depth):
        value = [value, value]
    return value


@pytest.mark.parametrize(
    "batch, message",
    [  # each bounded here, each unbounded with a larger number
        ({b"data": Call(np._core.multiarray._reconstruct, np.ndarray, (2**20,), b"O")}, "refusing numpy"),
        ({b"data": np.empty(3, dtype=object)}, "refusing numpy.dtype\\('O8'\\)"),
        ({b"data": np.zeros((4, 3072), "V16")}, "refusing numpy.dtype\\('V16'\\)"),
        ({b"data": np.zeros((4, 3072), np.uint8), b"labels": shared_nesting(18)}, "'labels' is not a list of class"),
        ({b"data": shared_nesting(18), b"labels": [0]}, "'data' is list, not uint8 \\(N, 3072\\)"),
        ([[]] * 2_100_000, "more than 2,000,000 pickle opcodes"),  # a 2 MB file of 2.1 M lists (~130 MB)
    ],
    ids=["reconstruct-shape", "object-dtype", "void-dtype", "shared-labels", "shared-data", "opcodes"],
)
def test_a_batch_holds_plain_arrays_and_lists_only(tmp_path, batch, message):
    write_cifar(tmp_path)
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=2))
    start = time.perf_counter()
    with pytest.raises(ValueError, match=rf"data_batch_1.*{message}"):
        load_splits(tmp_path)
    assert time.perf_counter() - start < 5
