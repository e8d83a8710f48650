"""data.shards: reading split over processes × workers (every image once, equal steps, order from (seed,
epoch)), bad shards and indexes, and the ImageNet recipes under 2 gloo processes. (Writing: test_shard_writer.py;
training, evaluation and resume on shards: test_shard_reader.py.)

The oracle of the sharding tests is the list of keys each process actually got from its DataLoader: counted, not
inferred from the plan.
"""

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from torchvision.io import encode_png

from mlp_mixer.commands import main as cli
from mlp_mixer.data import shards as S
from mlp_mixer.utils.files import write_json

ROOT = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).resolve().parent / "shard_probe.py"
TINY_FLAGS = ["--dim", "16", "--depth", "1", "--token-dim", "8", "--channel-dim", "16", "--patch-size", "4"]


def all_keys(found: S.ShardSet, split: str) -> list[str]:
    return [r[0] for s in found.splits[split] for r in S.read_shard(s, 0, s.images, len(found.classes))]


# ---------------------------------------------------------------------------------------------------------------
# Who reads what (the plan, without processes)


@pytest.mark.parametrize("total", [0, 1, 7, 50, 53])
def test_reader_ranges_cover_every_position_once(total):
    sizes = [6] * (total // 6) + ([total % 6] if total % 6 else [])
    shards = [S.Shard(Path(f"s{i}"), n, 0) for i, n in enumerate(sizes)]
    for world in (1, 2, 3):
        for workers in (1, 2, 3):
            seen = []
            for rank in range(world):
                share = S.reader_range(total, rank, world, 0, 1)
                parts = [S.reader_range(total, rank, world, w, workers) for w in range(workers)]
                assert parts[0][0] == share[0] and parts[-1][1] == share[1]  # a process's share ignores workers
                for start, stop in parts:
                    pieces = S.reader_pieces(shards, start, stop)
                    assert sum(b - a for _, a, b in pieces) == stop - start
                    seen += range(start, stop)
            assert sorted(seen) == list(range(total))


def test_order_and_shuffle_come_from_seed_and_epoch(shards):
    found = S.open_shards(shards)
    train = found.splits["train"]

    def read(seed, epoch):
        return [
            [
                r[0]
                for r in S.reader_samples(
                    train, 3, seed=seed, epoch=epoch, shuffle=True, rank=r, world=2, worker=w, workers=2, buffer=8
                )
            ]  # fmt: skip
            for r in range(2)
            for w in range(2)
        ]

    first = read(0, 0)
    assert sorted(k for part in first for k in part) == sorted(all_keys(found, "train"))  # each once
    assert read(0, 0) == first
    assert read(0, 1) != first and read(1, 0) != first
    assert sorted(k for part in read(0, 1) for k in part) == sorted(all_keys(found, "train"))


def test_a_reader_starts_inside_a_shard_from_its_tar_headers(shards):
    """Reading from image ``a`` seeks to it (sample_offset, headers only) and gives what a full read gives there."""
    found = S.open_shards(shards)
    shard = found.splits["train"][0]
    full = list(S.read_shard(shard, 0, shard.images, 3))
    for a in range(shard.images):
        assert list(S.read_shard(shard, a, shard.images, 3)) == full[a:]
        assert list(S.read_shard(shard, a, a + 1, 3)) == full[a : a + 1]
    assert S.sample_offset(shard, 1) > 1024  # past the first image's two members


@pytest.mark.parametrize("world, workers", [(1, 4), (2, 2), (3, 3)])
def test_one_shard_feeds_any_number_of_readers(one_shard, world, workers):
    """Fewer shards than readers: they split the one shard at the sample level, every image once an epoch, and
    the epoch's rotation moves which images a reader gets."""
    found = S.open_shards(one_shard)
    train = found.splits["train"]
    assert len(train) == 1

    def read(epoch):
        return [
            [
                r[0]
                for r in S.reader_samples(
                    train,
                    3,
                    seed=0,
                    epoch=epoch,
                    shuffle=True,
                    rank=r,
                    world=world,
                    worker=w,
                    workers=workers,
                    buffer=4,
                )
            ]  # fmt: skip
            for r in range(world)
            for w in range(workers)
        ]

    first, second = read(0), read(1)
    for parts in (first, second):
        assert sorted(k for part in parts for k in part) == sorted(all_keys(found, "train"))
        assert max(map(len, parts)) - min(map(len, parts)) <= 2  # balanced: shares differ by one per level
    assert [set(p) for p in first] != [set(p) for p in second]


# ---------------------------------------------------------------------------------------------------------------
# Bad input: one line that names the file, nothing trained


def _copy(shards: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(shards, dest)
    return dest


def _rewrite_shard(folder: Path, name: str, samples: list[dict]) -> None:
    """Replace one shard by ``samples`` and make the index agree on its images and bytes."""
    import webdataset

    with webdataset.TarWriter(str(folder / name), encoder=False) as writer:
        for sample in samples:
            writer.write(sample)
    index = json.loads((folder / "index.json").read_text())
    for split in index["splits"].values():
        for entry in split["shards"]:
            if entry["name"] == name:
                split["images"] += len(samples) - entry["images"]
                entry["images"], entry["bytes"] = len(samples), (folder / name).stat().st_size
    write_json(folder / "index.json", index)


def _break(kind: str, data: Path) -> Path:
    png = encode_png(torch.zeros(3, 8, 8, dtype=torch.uint8)).numpy().tobytes()
    if kind == "missing":
        (data / "train-000003.tar").unlink()
    elif kind == "truncated":
        path = data / "train-000002.tar"
        path.write_bytes(path.read_bytes()[:1500])
    elif kind == "index":
        index = json.loads((data / "index.json").read_text())
        index["splits"]["train"]["images"] += 1
        write_json(data / "index.json", index)
    elif kind == "count":
        index = json.loads((data / "index.json").read_text())
        index["splits"]["train"]["images"] += 1
        index["splits"]["train"]["shards"][0]["images"] += 1
        write_json(data / "index.json", index)
    elif kind == "no-label":
        _rewrite_shard(data, "train-000000.tar", [{"__key__": f"k{i}", "png": png} for i in range(6)])
    elif kind == "label":
        samples = [{"__key__": f"k{i}", "png": png, "cls": b"7" if i == 4 else b"1"} for i in range(6)]
        _rewrite_shard(data, "train-000000.tar", samples)
    return data


@pytest.mark.parametrize(
    "kind, workers, message",
    [
        ("missing", 0, "train-000003.tar listed in .*index.json is missing"),
        ("truncated", 0, "train-000002.tar is 1500 bytes, .*index.json says \\d+: truncated"),
        ("index", 0, "split 'train' says 51 images but its shards add up to 50"),
        ("count", 1, "train-000000.tar holds 6 images, its index says 7"),
        ("no-label", 1, "train-000000.tar: sample k\\d has no label \\(.cls\\)"),
        ("label", 0, "train-000000.tar: sample k4 has label 7, outside the 3 classes"),
    ],
)
def test_bad_shards_fail_with_one_line(tmp_path, shards, capsys, kind, workers, message):
    data = _break(kind, _copy(shards, tmp_path / "wds"))
    out = tmp_path / "run"
    argv = ["train", "--data", str(data), *TINY_FLAGS, "--image-size", "8", "--batch-size", "8", "--epochs", "1"]
    code = cli([*argv, "--workers", str(workers), "--device", "cpu", "--output", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("mlp-mixer train: error: "), err
    assert re.search(message, err[0]), err[0]
    assert not (out / "last.pt").exists()


def test_bad_index_files(tmp_path, shards, capsys):
    assert cli(["train", "--data", str(tmp_path / "none-{000..002}.tar"), "--device", "cpu"]) == 2
    assert "no shard index" in capsys.readouterr().err
    (tmp_path / "index.json").write_text("{not json")
    assert cli(["train", "--data", str(tmp_path / "index.json"), "--device", "cpu"]) == 2
    assert "is not a readable JSON index" in capsys.readouterr().err
    pattern = str(shards / "train-{000000..000010}.tar")  # 9 shards exist
    assert cli(["train", "--data", pattern, "--device", "cpu"]) == 2
    assert "train-000009.tar is not listed in" in capsys.readouterr().err
    assert cli(["shard", str(shards), str(tmp_path / "again")]) == 2
    assert "is already shards" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# Processes: 2 gloo processes with torchrun, and two torchrun "nodes" with a c10d rendezvous


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    src = str(ROOT / "src")
    return {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONFAULTHANDLER": "1",  # a native abort in a rank prints its threads' stacks into the failure message
        "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
    }


def check_probe(result_file: Path, shards: Path, world: int, batch: int) -> None:
    """What the processes read, counted: the assertions of the sharding guarantees."""
    ranks = sorted(json.loads(result_file.read_text()), key=lambda r: r["rank"])
    assert [r["rank"] for r in ranks] == list(range(world)) and all(r["world"] == world for r in ranks)
    assert all(Path(r["module"]).is_relative_to(ROOT / "src") for r in ranks)  # this tree's code
    found = S.open_shards(shards)
    train_keys, val_keys = all_keys(found, "train"), all_keys(found, "val")
    steps = len(train_keys) // batch
    for epoch in ("epoch0", "epoch1"):
        # every process takes the same number of steps, each of its batch / world images
        assert all(len(r[epoch]) == steps and all(len(b) == batch // world for b in r[epoch]) for r in ranks)
        used = [k for r in ranks for b in r[epoch] for k in b]
        assert len(used) == len(set(used)) == steps * batch  # no image twice in an epoch
        assert set(used) <= set(train_keys) and len(train_keys) - len(used) < batch  # fewer than a batch left out
    whole = [k for r in ranks for k in r["whole_epoch0"]]
    assert sorted(whole) == sorted(train_keys)  # the whole stream: every training image exactly once
    for r in ranks:
        assert r["epoch0_again"] == r["epoch0"]  # the order is a function of (seed, epoch) ...
        assert r["epoch1"] != r["epoch0"]  # ... and changes with the epoch
        assert r["epoch1_resumed_at_2"] == r["epoch1"][2:]  # a resumed epoch continues where it stopped
    assert sorted(k for r in ranks for k in r["val"]) == sorted(val_keys)  # held-out: every image exactly once


@pytest.mark.parametrize("which", ["shards", "one_shard"])
def test_two_processes_read_every_image_once_with_equal_steps(which, request, tmp_path):
    """9 shards, and 1 shard for the 4 readers (2 processes × 2 workers): the same guarantees."""
    shards = request.getfixturevalue(which)
    out = tmp_path / "probe.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command += [str(PROBE), str(shards), str(out), "2", "8"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=240, env=_env())
    assert done.returncode == 0, done.stderr[-3000:]
    check_probe(out, shards, world=2, batch=8)


@pytest.mark.slow
def test_two_nodes_with_a_c10d_rendezvous(shards, tmp_path):
    """The multi-node path for real on one machine: two torchrun launchers, --nnodes 2, one process each with 2
    DataLoader workers, meeting at a c10d rendezvous on a loopback port."""
    out, port = tmp_path / "probe.json", _free_port()
    launchers = []
    for node in range(2):
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node)]
        command += ["--nproc-per-node", "1", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}"]
        command += ["--rdzv-id", "shards-test", str(PROBE), str(shards), str(out), "2", "8"]
        launchers.append(
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
        )
    for launcher in launchers:
        _, err = launcher.communicate(timeout=240)
        assert launcher.returncode == 0, err[-3000:]
    check_probe(out, shards, world=2, batch=8)


def _torchrun_train(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command += ["-m", "mlp_mixer", "train", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=_env())


@pytest.mark.slow
def test_imagenet_recipes_run_two_steps_on_two_processes(recipe_shards, tmp_path):
    """Each recipe file, sizes overridden, trains 2 steps (16 images, global batch 8) under 2 gloo processes with
    2 workers each: the scratch recipe from its B/16 (shrunk), then the fine-tuning recipe from that checkpoint at
    twice the resolution (the block-diagonal resize)."""
    small = [*TINY_FLAGS, "--batch-size", "8", "--epochs", "1", "--workers", "2", "--device", "cpu"]
    scratch = tmp_path / "scratch"
    recipe = str(ROOT / "configs" / "imagenet_b16_scratch.yaml")
    done = _torchrun_train("--config", recipe, "--data", str(recipe_shards), *small, "--image-size", "8",
                           "--output", str(scratch))  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "run: 1 epochs of 2 steps, batch 8, adamw lr 0.001" in done.stdout, done.stdout
    saved = yaml.safe_load((scratch / "config.yaml").read_text())
    assert (saved["model"], saved["randaugment"], saved["mixup"], saved["drop_path"]) == ("B/16", [2, 15], 0.5, 0.1)
    assert (saved["weight_decay"], saved["sched"], saved["min_lr"], saved["crop_scale"]) == (0.1, "linear", 1e-5, 0.08)
    metrics = json.loads((scratch / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["step"] == 2 and metrics["val_images"] == 6

    finetune = tmp_path / "finetune"
    done = _torchrun_train("--config", str(ROOT / "configs" / "imagenet_finetune.yaml"), "--data", str(recipe_shards),
                           "--init-from", str(scratch), "--batch-size", "8", "--epochs", "1", "--workers", "2",
                           "--device", "cpu", "--image-size", "16", "--output", str(finetune))  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "run: 1 epochs of 2 steps, batch 8, sgd lr 0.03" in done.stdout, done.stdout
    assert "resized the model from [8, 8] to [16, 16]" in done.stdout
    metrics = json.loads((finetune / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["step"] == 2 and metrics["val_images"] == 6


# ---------------------------------------------------------------------------------------------------------------
# What a shard's members may expand into (issue 25): the per-image byte cap applies to every member, from its header


def _gnu_sparse_header(name: str, realsize: int) -> bytes:
    """A GNU sparse tar header ('S') for a ``realsize``-byte file of which one 512-byte block is stored: tarfile
    reads it as a member of ``realsize`` bytes, the rest holes that read as zeros."""

    def octal(value: int, width: int) -> bytes:
        return f"{value:0{width - 1}o}".encode() + b"\0"

    header = bytearray(512)
    header[0 : len(name)] = name.encode()
    header[100:108], header[108:116], header[116:124] = octal(0o644, 8), octal(0, 8), octal(0, 8)
    header[124:136], header[136:148] = octal(512, 12), octal(0, 12)  # the stored size; the real one is below
    header[156:157], header[257:265] = b"S", b"ustar  \0"
    header[386:398], header[398:410] = octal(realsize - 512, 12), octal(512, 12)  # one stored block, at the end
    header[483:495] = octal(realsize, 12)
    header[148:156] = b" " * 8
    header[148:156] = f"{sum(header):06o}".encode() + b"\0 "
    return bytes(header) + b"\0" * 512


def _shard_with(path: Path, members: bytes, gzipped: bool = False) -> S.Shard:
    """A one-sample shard: ``k0.cls`` (label 1) then ``members`` (raw tar blocks), optionally gzip-compressed."""
    import gzip
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        info = tarfile.TarInfo("k0.cls")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"1"))
    data = buffer.getvalue().rstrip(b"\0")  # drop the end-of-archive blocks, keep whole 512-byte records
    data = data + b"\0" * (-len(data) % 512) + members + b"\0" * 1024
    path.write_bytes(gzip.compress(data, 1) if gzipped else data)
    return S.Shard(path, 1, path.stat().st_size)


def test_a_sparse_or_compressed_member_over_the_image_cap_is_refused_from_its_header(tmp_path, monkeypatch):
    """A 1 KB GNU-sparse member or a gzip-compressed shard expanded to ~1.9 GB: the 256 MB per-image cap was not
    applied to shard members. Now each member's declared size is checked before a byte of it is read."""
    import tarfile

    sparse = _shard_with(tmp_path / "sparse.tar", _gnu_sparse_header("k0.png", 300 * 2**20))  # 2 KB on disk
    assert tarfile.open(sparse.path).getmember("k0.png").size == 300 * 2**20
    start = time.perf_counter()
    with pytest.raises(S.ShardError, match=r"sparse.tar: member k0.png declares 314,572,800 bytes, over the limit"):
        list(S.read_shard(sparse, 0, 1, 3))
    assert time.perf_counter() - start < 1

    monkeypatch.setattr("mlp_mixer.utils.limits.MAX_FILE_BYTES", 2**20)  # the same cap, smaller
    tar_member = tarfile.TarInfo("k0.png")
    tar_member.size = 2 * 2**20
    zeros = tar_member.tobuf(tarfile.GNU_FORMAT) + bytes(tar_member.size)
    packed = _shard_with(tmp_path / "packed.tar", zeros, gzipped=True)  # ~2 KB of gzip for 2 MiB
    assert packed.bytes < 20_000
    with pytest.raises(
        S.ShardError, match=r"packed.tar: member k0.png declares 2,097,152 bytes, over the limit of 1 MiB"
    ):
        list(S.read_shard(packed, 0, 1, 3))
    small = tarfile.TarInfo("k0.png")
    small.size = 1000
    ok = _shard_with(tmp_path / "ok.tar", small.tobuf(tarfile.GNU_FORMAT) + b"x" * 1000 + b"\0" * 24, gzipped=True)
    assert [(k, e, len(p), label) for k, e, p, label in S.read_shard(ok, 0, 1, 3)] == [("k0", "png", 1000, 1)]


@pytest.mark.parametrize("name", ["../outside.tar", "/ABS/outside.tar", "sub/outside.tar"])
def test_an_index_names_only_shards_in_its_own_folder(tmp_path, shards, name):
    data = _copy(shards, tmp_path / "wds")
    (tmp_path / "sub").mkdir()
    for where in (tmp_path / "outside.tar", tmp_path / "sub" / "outside.tar", data / "sub" / "outside.tar"):
        where.parent.mkdir(exist_ok=True)
        where.write_bytes((data / "train-000000.tar").read_bytes())  # a shard that exists, of the right size
    name = name.replace("/ABS", str(tmp_path))
    index = json.loads((data / "index.json").read_text())
    index["splits"]["train"]["shards"][0]["name"] = name
    write_json(data / "index.json", index)
    with pytest.raises(
        S.ShardError, match=rf"index.json: split 'train' names shard {re.escape(repr(name))}, which is "
    ):
        S.open_shards(data)
