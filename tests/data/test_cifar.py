"""data.cifar: the CIFAR-10/100 python-pickle source, read without running pickle code."""

import pickle

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
