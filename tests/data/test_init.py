"""data/__init__: the names the package had before its modules still import, each from its module on first use,
and importing decoding loads no dataset source."""

import subprocess
import sys

import mlp_mixer.data as D
from mlp_mixer.data import decode, shard_reader, sources, tensors
from mlp_mixer.utils import limits


def test_old_names_are_the_modules_objects():
    from mlp_mixer.data import IMAGE_EXTENSIONS, ShardImages, TensorImages, load_splits, read_image, shard_splits

    assert read_image is decode.read_image and IMAGE_EXTENSIONS is decode.IMAGE_EXTENSIONS
    assert load_splits is sources.load_splits and TensorImages is tensors.TensorImages
    assert ShardImages is shard_reader.ShardImages and shard_splits is shard_reader.load_splits
    assert all(hasattr(D, name) for name in D.__all__) and "embedded_mnist" in dir(D)
    assert D.shards.__name__ == "mlp_mixer.data.shards"


def test_a_knob_is_read_from_its_module(monkeypatch):
    monkeypatch.setattr(limits, "MAX_FILE_BYTES", 1024)
    assert D.MAX_FILE_BYTES == 1024  # the package shows the module's value, never a copy of it


def test_decoding_loads_no_dataset_source():
    code = "import sys, mlp_mixer.data.decode; print(' '.join(m for m in sys.modules if 'mlp_mixer.data' in m))"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert sorted(loaded) == ["mlp_mixer.data", "mlp_mixer.data.decode"]
