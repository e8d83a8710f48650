"""data.hf: Hugging Face datasets as a source, built here offline (``Dataset.from_dict(...).cast_column("image",
Image())``, ``save_to_disk``, ``to_parquet``); the Hub id path with ``datasets.load_dataset`` mocked at the
boundary (its arguments checked, a local dataset returned); streaming split over 2 processes × 2 workers (ranks
set by hand, real DataLoader workers), counted as the shards are.

The oracle: every image's pixels are its id, so what a reader returns is checked against what was stored.
"""

import json

import pytest
import torch
from torchvision.io import encode_png

from mlp_mixer.commands import main as cli
from mlp_mixer.data import hf as H
from mlp_mixer.data.loader import batches_of, iterate_stream
from mlp_mixer.data.sources import eval_split, load_splits, source_of

datasets = pytest.importorskip("datasets")
CLASSES = ["cat", "dog", "owl"]
CPU = torch.device("cpu")


def png(value: int, size: tuple[int, int] = (10, 12)) -> bytes:
    return encode_png(torch.full((3, *size), value, dtype=torch.uint8)).numpy().tobytes()


def build(n: int, first: int = 0, bad: tuple[int, ...] = ()) -> "datasets.Dataset":
    """Images ``first .. first + n - 1`` (pixels = id, label = id % 3 as a ClassLabel); ``bad`` ids are no image."""
    ids = range(first, first + n)
    images = [{"bytes": b"not an image" if i in bad else png(i), "path": f"img{i}.png"} for i in ids]
    table = datasets.Dataset.from_dict({"image": images, "label": [i % 3 for i in ids]})
    return table.cast_column("image", datasets.Image()).cast_column("label", datasets.ClassLabel(names=CLASSES))


def read_all(dataset) -> tuple[list[int], list[int], list[str]]:
    """(ids from the pixels, labels, skipped) of one pass."""
    ids, labels, skipped = [], [], []
    for b in batches_of(dataset, 7, 0, CPU):
        ids += b.images[:, 0, 0, 0].tolist()
        labels += b.labels.tolist()
        skipped += b.skipped
    return ids, labels, skipped


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """save_to_disk of a DatasetDict: train 30 (id 5 no image), test 9."""
    root = tmp_path_factory.mktemp("hf") / "saved"
    datasets.DatasetDict(train=build(30, bad=(5,)), test=build(9, first=100)).save_to_disk(str(root))
    return root


@pytest.fixture(scope="module")
def parquet(tmp_path_factory):
    """The Hub's Parquet layout: data/train-0000{0,1}-of-00002.parquet (40 images) and data/test-... (8)."""
    root = tmp_path_factory.mktemp("hf") / "parquet"
    (root / "data").mkdir(parents=True)
    build(20).to_parquet(str(root / "data" / "train-00000-of-00002.parquet"))
    build(20, first=20).to_parquet(str(root / "data" / "train-00001-of-00002.parquet"))
    build(8, first=100).to_parquet(str(root / "data" / "test-00000-of-00001.parquet"))
    return root


def test_a_save_to_disk_folder_is_a_source(saved):
    assert source_of(saved) is H and source_of(f"hf:{saved}") is H
    splits = load_splits(saved)
    assert (splits.kind, splits.classes, splits.in_channels, len(splits.train), len(splits.val)) == (
        "hf", CLASSES, 3, 30, 9)  # fmt: skip
    ids, labels, skipped = read_all(splits.train)
    assert ids == [i for i in range(30) if i != 5] and labels == [i % 3 for i in ids]
    assert len(skipped) == 1 and "img5.png" in skipped[0]  # unreadable: skipped and counted, named
    assert read_all(splits.val)[0] == list(range(100, 109))
    assert eval_split(saved, 3).classes == CLASSES and len(eval_split(saved, 3).dataset) == 9


def test_parquet_files_a_glob_and_one_file_with_no_held_out_split(parquet, tmp_path):
    splits = load_splits(parquet)
    assert (len(splits.train), len(splits.val)) == (40, 8)
    assert sorted(read_all(splits.train)[0]) == list(range(40))
    one = load_splits(parquet / "data" / "train-00000-of-00002.parquet", val_fraction=0.25)  # held out per class
    kept, held = read_all(one.train)[0], read_all(one.val)[0]
    assert sorted(kept + held) == list(range(20)) and len(held) == 6  # 7/7/6 per class, 2 held out of each
    glob = load_splits(str(parquet / "data" / "train-*.parquet") + "?val=train")  # a glob is the train split
    assert len(glob.train) == 40
    with pytest.raises(ValueError, match="unknown option\\(s\\) colour"):
        load_splits(f"{parquet}?colour=red")


def test_a_hub_id_goes_to_load_dataset_with_its_options(monkeypatch, saved):
    """No network: datasets.load_dataset is replaced at the boundary by one that records its call and returns a
    local dataset whose columns are named otherwise (img, fine), as the query says."""
    calls = []
    renamed = datasets.load_from_disk(str(saved)).rename_columns({"image": "img", "label": "fine"})

    def load_dataset(path, name=None, revision=None, streaming=False):
        calls.append((path, name, revision, streaming))
        return renamed

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    splits = load_splits("hf:owner/name?name=full&revision=v2&image=img&label=fine&val=test")
    assert calls == [("owner/name", "full", "v2", False)]
    assert splits.classes == CLASSES and (len(splits.train), len(splits.val)) == (30, 9)
    assert read_all(splits.val)[0] == list(range(100, 109))
    with pytest.raises(ValueError, match="no column 'picture' \\(image=\\)"):
        load_splits("hf:owner/name?image=picture")


def test_streaming_over_two_processes_and_two_workers_reads_every_image_once(parquet):
    """Ranks set by hand, 2 real DataLoader workers each: the checks of the shards' torchrun test."""
    splits = load_splits(f"{parquet}?streaming=1")
    train = splits.train
    assert isinstance(train, H.HFStream) and len(train) == 40 and train.streamed
    batch, world = 8, 2
    steps = len(train) // batch

    def epoch(e, skip=0, steps=steps):
        out = []
        for rank in range(world):
            part = train.split(rank, world)
            part.seed, part.epoch = 3, e
            out.append([b.keys for b in iterate_stream(part, batch // world, 2, CPU, steps=steps, skip=skip)])
        return out

    first = epoch(0)
    for ranks in (first, epoch(1)):
        assert all(len(r) == steps and all(len(b) == batch // world for b in r) for r in ranks)
        used = [k for r in ranks for b in r for k in b]
        assert len(used) == len(set(used)) == steps * batch  # every image at most once, none left out here
    assert epoch(0) == first and epoch(1) != first  # the order: a function of (seed, epoch)
    assert [r[2:] for r in epoch(1)] == epoch(1, skip=2)  # a resumed epoch continues where it stopped
    whole = [k for r in epoch(0, steps=None) for b in r for k in b]
    assert sorted(whole) == sorted(f"img{i}.png" for i in range(40))  # the whole stream: each exactly once
    assert read_all(splits.val.split(0, 1))[0] == list(range(100, 108))


def test_train_eval_and_shard_read_a_hugging_face_dataset(saved, tmp_path, capsys):
    tiny = ["--dim", "16", "--depth", "1", "--token-dim", "8", "--channel-dim", "16", "--patch-size", "4"]
    run = tmp_path / "run"
    argv = ["train", "--data", str(saved), *tiny, "--image-size", "8", "--batch-size", "8", "--epochs", "1"]
    assert cli([*argv, "--workers", "0", "--device", "cpu", "--output", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["val_images"] == 9 and metrics["skipped_images"] == 1
    assert cli(["eval", "--checkpoint", str(run), "--data", str(saved), "--workers", "0", "--device", "cpu"]) == 0
    out = tmp_path / "wds"
    assert cli(["shard", str(saved), str(out), "--workers", "0", "--no-progress"]) == 0
    shards = load_splits(out)
    assert shards.classes == CLASSES and (len(shards.train), len(shards.val)) == (29, 9)
    ids, labels, _ = read_all(shards.train)
    assert sorted(ids) == [i for i in range(30) if i != 5] and labels == [i % 3 for i in ids]
    capsys.readouterr()
