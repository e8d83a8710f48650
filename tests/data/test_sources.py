"""data.sources: the one picker sends every kind of ``--data`` to its source module, which answers for it."""

import pytest
from helpers import make_folder, write_cifar

from mlp_mixer.data import cifar, folder, mnist, shard_reader
from mlp_mixer.data.sources import data_kind, eval_split, load_splits, source_of


def test_each_kind_of_data_goes_to_its_source(tmp_path, shards):
    write_cifar(tmp_path / "cifar", "cifar100")
    make_folder(tmp_path / "photos", n=2)
    assert source_of(None) is mnist and data_kind(None) == "mnist"
    assert source_of(tmp_path / "cifar") is cifar and data_kind(str(tmp_path / "cifar")) == "cifar100"
    assert source_of(tmp_path / "photos") is folder and data_kind(str(tmp_path / "photos")) == "folder"
    for named in (shards, shards / "index.json", shards / "train-{000000..000002}.tar", shards / "val-000000.tar"):
        assert source_of(named) is shard_reader
    assert data_kind(str(shards)) == "folder"  # shards train with the defaults of the source they were written from
    assert source_of(tmp_path / "missing") is folder and data_kind(str(tmp_path / "missing")) == "folder"
    with pytest.raises(FileNotFoundError, match="missing does not exist"):  # found out when it is read
        load_splits(tmp_path / "missing")


def test_eval_split_of_each_source(tmp_path, shards):
    write_cifar(tmp_path / "cifar")
    make_folder(tmp_path / "photos" / "train", n=3)
    make_folder(tmp_path / "photos" / "val", classes=("cat", "owl"), n=2)
    test = eval_split(tmp_path / "cifar", 3)
    assert test.description == "test batch" and len(test.dataset) == 6 and test.dataset.in_memory
    held_out = eval_split(tmp_path / "photos", 3)
    assert held_out.classes == ["cat", "owl"] and len(held_out.dataset) == 4 and not held_out.dataset.in_memory
    assert held_out.description == str(tmp_path / "photos" / "val")
    named = eval_split(str(shards / "val-{000000..000001}.tar"), 3)
    assert len(named.dataset) == 12 and named.dataset.streamed and named.description.startswith("2 shard(s) of ")
    with pytest.raises(NotADirectoryError, match="is not a folder"):
        eval_split(tmp_path / "cifar" / "test_batch", 3)


def test_a_folder_never_changes_kind_because_of_one_stray_file(tmp_path, shards, capsys):
    """One backup.tar at the top of an image folder made it a shard folder (issue 25): a folder is shards when it
    holds index.json, or nothing but tar files; an index beside class folders is ambiguous and named."""
    from mlp_mixer.commands import main
    from mlp_mixer.data.shards import ShardError

    photos = make_folder(tmp_path / "photos", n=2)
    (photos / "backup.tar").write_bytes(b"\0" * 1024)
    write_cifar(tmp_path / "cifar")
    (tmp_path / "cifar" / "cifar-10-python.tar").write_bytes(b"\0" * 1024)
    assert source_of(photos) is folder and len(load_splits(photos).train) + len(load_splits(photos).val) == 6
    assert source_of(tmp_path / "cifar") is cifar
    tars = tmp_path / "tars"
    tars.mkdir()
    for name in ("train-000000.tar", "train-000001.tar"):
        (tars / name).write_bytes((shards / name).read_bytes())
    assert source_of(tars) is shard_reader  # shards whose index is missing: the reader says so
    with pytest.raises(FileNotFoundError, match=r"no shard index .*tars/index.json"):
        load_splits(tars)
    (photos / "index.json").write_bytes((shards / "index.json").read_bytes())
    with pytest.raises(ShardError, match=r"photos is ambiguous: it holds index.json \(shards\) and the folders cat, d"):
        source_of(photos)
    assert main(["train", "--data", str(photos), "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "photos is ambiguous" in err[0] and "pass " in err[0], err
