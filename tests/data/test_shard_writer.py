"""data.shard_writer: shards hold the original bytes (in-memory images as lossless PNG), are counted in their
index, and a killed writer leaves whole shards and no index."""

import json
import tarfile
from collections import Counter

import pytest
import torch

from mlp_mixer.commands import main as cli
from mlp_mixer.data import shard_writer as W
from mlp_mixer.data import shards as S
from mlp_mixer.data.cifar import load_cifar
from mlp_mixer.data.loader import batches_of
from mlp_mixer.data.sources import load_splits


def test_shard_size_is_bytes_or_images():
    assert W.parse_shard_size("1GB") == (None, 10**9)
    assert W.parse_shard_size("256MB") == (None, 256 * 10**6)
    assert W.parse_shard_size("500") == (500, None) == W.parse_shard_size(500)
    for bad in ("0", "1.5", "ten", "-3", "5 apples"):
        with pytest.raises(ValueError, match="--shard-size"):
            W.parse_shard_size(bad)


def test_auto_shard_size_suits_the_dataset(one_shard, capsys):
    # (images, mean bytes) -> shards: one for little data, 64 where each holds 64+, at most 256 MB each
    assert W.auto_shard_size(60, 20e3)[0] == 60
    assert W.auto_shard_size(6000, 100e3)[0] == 94  # 64 shards (~9 MB): up to 64 readers on shards of their own
    per, why = W.auto_shard_size(1_281_167, 110e3)  # ImageNet: ~550 shards of 256 MB
    assert per == 2326 and "at most 256 MB a shard" in why and why.startswith("551 shard(s)")
    assert W.parse_shard_size("auto") == (None, None)
    index = json.loads((one_shard / "index.json").read_text())
    assert [s["images"] for s in index["splits"]["train"]["shards"]] == [50]
    assert index["splits"]["train"]["shard_size"].startswith("1 shard(s) of 51 images (~36")  # the broken file too
    assert cli(["shard", str(one_shard.parent / "x"), str(one_shard.parent / "y")]) == 2  # (SRC missing)
    capsys.readouterr()


def test_shards_hold_the_original_bytes_and_the_index_counts_them(shard_source, shards):
    index = json.loads((shards / "index.json").read_text())
    assert index["classes"] == ["c0", "c1", "c2"] and index["kind"] == "folder"
    train, val = index["splits"]["train"], index["splits"]["val"]
    assert (train["images"], train["skipped"], val["images"], val["skipped"]) == (50, 1, 13, 0)
    assert "broken.png" in train["skipped_files"][0]
    assert [s["images"] for s in train["shards"]] == [6] * 8 + [2]
    assert [s["name"] for s in val["shards"]] == ["val-000000.tar", "val-000001.tar", "val-000002.tar"]
    for entry in train["shards"] + val["shards"]:
        assert (shards / entry["name"]).stat().st_size == entry["bytes"]
    # every readable file's bytes, unchanged (no re-encoding), with its class as .cls
    files = [p for p in (shard_source / "train").rglob("*.*") if p.name != "broken.png"]
    source = Counter((p.read_bytes(), int(p.parent.name[1:])) for p in files)
    stored = Counter()
    for entry in train["shards"]:
        with tarfile.open(shards / entry["name"]) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        for name, payload in members.items():
            key, ext = name.split(".", 1)
            if ext != "cls":
                stored[(payload, int(members[f"{key}.cls"]))] += 1
    assert stored == source
    # written in a shuffled order: a shard is not one class
    assert len({r[3] for r in S.read_shard(S.open_shards(shards).splits["train"][0], 0, 6, 3)}) > 1


def test_in_memory_images_are_stored_losslessly(tmp_path):
    from helpers import make_cifar

    cifar = make_cifar(tmp_path / "cifar", per_batch=4, test=5)
    out = tmp_path / "wds"
    assert cli(["shard", str(cifar), str(out), "--shard-size", "7", "--workers", "0", "--no-progress"]) == 0
    _, (x, y), (vx, vy), classes = load_cifar(cifar)
    splits = load_splits(out)
    assert splits.kind == "shards" and splits.classes == classes and splits.native_size == (32, 32)
    assert (len(splits.train), len(splits.val)) == (20, 5)
    batches = list(batches_of(splits.train, 6, 0, torch.device("cpu")))
    got = Counter((b.images[i].numpy().tobytes(), int(b.labels[i])) for b in batches for i in range(len(b.labels)))
    assert got == Counter((x[i].numpy().tobytes(), int(y[i])) for i in range(len(y)))


def test_a_killed_writer_leaves_whole_shards_and_no_index(tmp_path):
    def records():
        for i in range(9):
            yield f"train-{i:08d}", "png", b"x" * 100, 0
        raise KeyboardInterrupt  # killed while writing the second shard

    with pytest.raises(KeyboardInterrupt):
        W.write_split(records(), tmp_path, "train", 6, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train-000000.tar"]  # no half shard, no temporary
    with tarfile.open(tmp_path / "train-000000.tar") as tar:
        assert len(tar.getnames()) == 12  # 6 images and their labels
    with pytest.raises(FileNotFoundError, match="no shard index"):
        load_splits(tmp_path)
