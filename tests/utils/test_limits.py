"""utils.limits: what a weights file may expand into, checked before torch.load or load_file builds it (issue 25).

Each case is a file an attacker could hand over as ``--checkpoint``, built small; each was loaded, silently or at
a cost of gigabytes, before these checks. The image, shard and CIFAR readers' uses of the same budget are tested
with their readers (tests/data/test_decode.py, test_shards.py, test_cifar.py; the .npz reader in
tests/weights/test_official.py).
"""

import codecs
import time
import zipfile

import pytest
import torch
from safetensors.torch import save_file

from mlp_mixer.model.pretrained import read_safetensors, read_weights
from mlp_mixer.utils import limits
from mlp_mixer.utils.files import atomic_save
from mlp_mixer.weights.checkpoint import read_torch_file
from mlp_mixer.weights.load import load_model


class Call:
    """Pickles to ``call(*args)``."""

    def __init__(self, call, *args) -> None:
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def nested_hex(depth: int):
    value = b"ab"
    for _ in range(depth):
        value = Call(codecs.encode, value, "hex")  # each level doubles: 33 levels build 16 GiB
    return value


@pytest.mark.parametrize(
    "small, huge, called",
    [
        (nested_hex(12), nested_hex(33), "_codecs.encode"),
        (Call(bytearray, 2**20), Call(bytearray, 2**36), "__builtin__.bytearray"),
    ],
    ids=["hex-nesting", "bytearray"],
)
def test_a_checkpoint_whose_pickle_expands_is_refused_before_torch_load(tmp_path, small, huge, called):
    """torch's weights-only unpickler allows _codecs.encode and bytearray: a few hundred bytes of pickle built
    any amount of memory. Neither is in any checkpoint torch.save writes from tensors, dicts and numbers."""
    for name, payload in (("small.pt", small), ("huge.pt", huge)):  # the small one loaded before
        path = tmp_path / name
        torch.save({"model": {}, "extra": payload}, path)
        assert path.stat().st_size < 4096
        start = time.perf_counter()
        with pytest.raises(limits.BudgetError, match=rf"checkpoint .*{name} calls {called}, which can build unb"):
            read_torch_file(path)
        assert time.perf_counter() - start < 1


def test_compressed_records_and_views_claiming_terabytes_are_refused(tiny_model, tmp_path):
    """A 6 MB .pt with deflated zip members carried a hidden 1 GiB tensor and loaded silently (torch.save never
    compresses: such a record can only be made to expand); a stride-0 view of one float claims 10¹² elements and
    costs 4 TB at the first .contiguous()."""
    checkpoint = {"model": tiny_model.state_dict(), "model_config": tiny_model.config(), "classes": []}
    plain = atomic_save({**checkpoint, "hidden": torch.zeros(2**24)}, tmp_path / "plain.pt")  # 64 MiB
    packed = tmp_path / "packed.pt"
    with zipfile.ZipFile(plain) as src, zipfile.ZipFile(packed, "w", zipfile.ZIP_DEFLATED) as dst:
        for member in src.infolist():
            dst.writestr(member.filename, src.read(member))
    assert packed.stat().st_size < 2**20 and torch.load(packed, weights_only=True)["hidden"].numel() == 2**24
    with pytest.raises(
        limits.BudgetError, match=r"packed.pt: \d+ compressed records \(67,\d{3},\d{3} bytes from \d+,\d{3}\)"
    ):
        load_model(packed)
    view = atomic_save({**checkpoint, "model": {"x": torch.zeros(1).expand(10**6, 10**6)}}, tmp_path / "view.pt")
    with pytest.raises(limits.BudgetError, match=r"view.pt expands to 3,814,697.3 MiB of tensors, over the limit"):
        load_model(view)
    assert load_model(atomic_save(checkpoint, tmp_path / "ok.pt")).num_classes == tiny_model.num_classes


def test_the_budget_counts_tensors_and_bytes_of_every_weights_format(tiny_model, tmp_path, monkeypatch):
    state = tiny_model.state_dict()
    save_file(state, tmp_path / "model.safetensors")
    torch.save(state, tmp_path / "pytorch_model.bin")
    assert len(read_safetensors(tmp_path / "model.safetensors")) == len(state)
    monkeypatch.setattr(limits, "MAX_TENSORS", len(state) - 1)
    with pytest.raises(limits.BudgetError, match=rf"model.safetensors holds {len(state)} tensors, over the limit"):
        read_safetensors(tmp_path / "model.safetensors")  # from the header: no tensor was read
    with pytest.raises(limits.BudgetError, match=r"pytorch_model.bin holds \d+ tensors, over the limit"):
        read_weights(tmp_path / "pytorch_model.bin")
    monkeypatch.undo()
    monkeypatch.setattr(limits, "MAX_WEIGHT_BYTES", 1000)
    with pytest.raises(limits.BudgetError, match=r"model.safetensors expands to [\d.]+ MiB of tensors, over the limi"):
        read_safetensors(tmp_path / "model.safetensors")


def test_shared_references_are_walked_once():
    """A pickle can nest a list holding the same list twice, 60 deep: 2**60 paths, 61 objects."""
    nested = [torch.zeros(2)]
    for _ in range(60):
        nested = [nested, nested]
    start = time.perf_counter()
    assert limits.check_tensors({"a": nested}, "nested") is not None
    assert time.perf_counter() - start < 1
