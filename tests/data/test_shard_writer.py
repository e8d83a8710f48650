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


def test_max_size_stores_images_resized_and_the_index_says_so(tmp_path):
    from PIL import Image
    from torchvision.io import encode_jpeg, encode_png

    g = torch.Generator().manual_seed(0)
    sizes = {"c0": [(40, 30), (30, 90)], "c1": [(12, 20), (64, 64)]}  # (H, W); 12x20 is under the cap: kept as is
    for c, shapes in sizes.items():
        for split in ("train", "val"):
            (tmp_path / "src" / split / c).mkdir(parents=True)
            for i, (h, w) in enumerate(shapes):
                image = torch.randint(0, 256, (3, h, w), generator=g, dtype=torch.uint8)
                data = encode_jpeg(image) if i == 0 else encode_png(image)
                (tmp_path / "src" / split / c / f"{i}.{'jpg' if i == 0 else 'png'}").write_bytes(data.numpy().tobytes())
    small = (tmp_path / "src" / "train" / "c1" / "0.jpg").read_bytes()
    out = tmp_path / "wds"
    assert cli(["shard", str(tmp_path / "src"), str(out), "--max-size", "16", "--workers", "0", "--no-progress"]) == 0
    index = json.loads((out / "index.json").read_text())
    assert index["max_size"] == {"shorter_side": 16, "resample": "lanczos", "jpeg_quality": W.MAX_SIZE_QUALITY}
    assert index["classes"] == ["c0", "c1"] and index["splits"]["train"]["images"] == 4
    splits = load_splits(out)
    assert (len(splits.train), len(splits.val)) == (4, 4)
    got = Counter()
    for dataset in (splits.train, splits.val):
        for batch in batches_of(dataset, 1, 0, torch.device("cpu")):
            got[(tuple(batch.images.shape[-2:]), int(batch.labels[0]))] += 1
    # the shorter side 16 (aspect kept, rounded), never upscaled: 40x30 -> 21x16, 30x90 -> 16x48, 64x64 -> 16x16
    assert got == Counter({((21, 16), 0): 2, ((16, 48), 0): 2, ((12, 20), 1): 2, ((16, 16), 1): 2})
    with tarfile.open(out / index["splits"]["train"]["shards"][0]["name"]) as tar:
        payloads = [tar.extractfile(m).read() for m in tar.getmembers() if not m.name.endswith(".cls")]
    assert small in payloads  # an image under the cap keeps its original bytes
    import io

    assert sorted(Image.open(io.BytesIO(p)).format for p in payloads) == ["JPEG"] * 4  # resized ones re-encoded
    assert W.shrink(small, 16, 3) is None and W.bounded_size(30, 90, 16) == (16, 48)
    with pytest.raises(ValueError, match="--max-size"):
        W.write_shards(tmp_path / "src", tmp_path / "x", max_size=0, progress=False)


def test_max_size_on_in_memory_images_bounds_their_native_size(tmp_path):
    from helpers import make_cifar

    cifar = make_cifar(tmp_path / "cifar", per_batch=2, test=2)
    assert cli(["shard", str(cifar), str(tmp_path / "wds"), "--max-size", "20", "--workers", "0", "--no-progress"]) == 0
    splits = load_splits(tmp_path / "wds")
    assert splits.native_size == (20, 20) and len(splits.train) == 10
    assert {tuple(b.images.shape[-2:]) for b in batches_of(splits.train, 4, 0, torch.device("cpu"))} == {(20, 20)}
