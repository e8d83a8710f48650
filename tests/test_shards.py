"""WebDataset shards: writing (original bytes, atomic, counted), reading split over processes × workers (every
image once, equal steps, order from (seed, epoch)), training / eval / few-shot on shards, resume, bad input, and the
ImageNet recipes under 2 gloo processes.

The oracle of the sharding tests is the list of keys each process actually got from its DataLoader: counted, not
inferred from the plan.
"""

import json
import os
import re
import socket
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import pytest
import torch
import yaml
from torchvision.io import encode_jpeg, encode_png

from mlp_mixer import data as D
from mlp_mixer.commands import main as cli
from mlp_mixer.data import shards as S
from mlp_mixer.train import TrainConfig, signals, train
from mlp_mixer.utils.files import write_json

ROOT = Path(__file__).resolve().parents[1]
TINY_FLAGS = ["--dim", "16", "--depth", "1", "--token-dim", "8", "--channel-dim", "16", "--patch-size", "4"]


def make_folder(root: Path, train: tuple[int, ...] = (17, 16, 17), val: tuple[int, ...] = (5, 4, 4)) -> Path:
    """``root/train/c{i}`` and ``root/val/c{i}`` of random 12x12..16x16 images (PNG and JPEG), and one file in train
    that is not an image at all (it must be skipped and counted)."""
    g = torch.Generator().manual_seed(0)
    for split, counts in (("train", train), ("val", val)):
        for c, n in enumerate(counts):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                side = 12 + (i % 5)
                image = torch.randint(0, 256, (3, side, side), generator=g, dtype=torch.uint8)
                if i % 3:
                    (folder / f"{i}.png").write_bytes(encode_png(image).numpy().tobytes())
                else:
                    (folder / f"{i}.jpg").write_bytes(encode_jpeg(image).numpy().tobytes())
    (root / "train" / "c0" / "broken.png").write_bytes(b"not an image")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("folder"))


@pytest.fixture(scope="module")
def shards(folder, tmp_path_factory) -> Path:
    """50 training images in 9 shards of <= 6 (the last holds 2), 13 held out in 3."""
    out = tmp_path_factory.mktemp("shards") / "wds"
    assert cli(["shard", str(folder), str(out), "--shard-size", "6", "--workers", "0", "--no-progress"]) == 0
    return out


def all_keys(found: S.ShardSet, split: str) -> list[str]:
    return [r[0] for s in found.splits[split] for r in S.read_shard(s, 0, s.images, len(found.classes))]


# ---------------------------------------------------------------------------------------------------------------
# Writing


def test_shard_size_is_bytes_or_images():
    assert S.parse_shard_size("1GB") == (None, 10**9)
    assert S.parse_shard_size("256MB") == (None, 256 * 10**6)
    assert S.parse_shard_size("500") == (500, None) == S.parse_shard_size(500)
    for bad in ("0", "1.5", "ten", "-3", "5 apples"):
        with pytest.raises(ValueError, match="--shard-size"):
            S.parse_shard_size(bad)


def test_shards_hold_the_original_bytes_and_the_index_counts_them(folder, shards):
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
    source = Counter(
        (p.read_bytes(), int(p.parent.name[1:])) for p in (folder / "train").rglob("*.*") if p.name != "broken.png"
    )
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
    _, (x, y), (vx, vy), classes = D.load_cifar(cifar)
    splits = D.load_splits(out)
    assert splits.kind == "shards" and splits.classes == classes and splits.native_size == (32, 32)
    assert (len(splits.train), len(splits.val)) == (20, 5)
    batches = list(D.batches_of(splits.train, 6, 0, torch.device("cpu")))
    got = Counter((b.images[i].numpy().tobytes(), int(b.labels[i])) for b in batches for i in range(len(b.labels)))
    assert got == Counter((x[i].numpy().tobytes(), int(y[i])) for i in range(len(y)))


def test_a_killed_writer_leaves_whole_shards_and_no_index(tmp_path):
    def records():
        for i in range(9):
            yield f"train-{i:08d}", "png", b"x" * 100, 0
        raise KeyboardInterrupt  # killed while writing the second shard

    with pytest.raises(KeyboardInterrupt):
        S.write_split(records(), tmp_path, "train", 6, None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train-000000.tar"]  # no half shard, no temporary
    with tarfile.open(tmp_path / "train-000000.tar") as tar:
        assert len(tar.getnames()) == 12  # 6 images and their labels
    with pytest.raises(FileNotFoundError, match="no shard index"):
        D.load_splits(tmp_path)


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
        ("readers", 10, "9 training shard\\(s\\) cannot feed 1 process\\(es\\) × 10 worker\\(s\\) = 10 readers: pass"),
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
# Training, evaluation and few-shot on shards; resume


def tiny(data: Path, output: Path, **changes) -> TrainConfig:
    """50 training images, global batch 8: 6 steps an epoch, 2 epochs, every augmentation that has a seed on."""
    config = TrainConfig(
        data=str(data), dim=16, depth=1, token_dim=8, channel_dim=16, patch_size=4, image_size=8, batch_size=8,
        epochs=2, device="cpu", workers=2, threads=1, output=str(output), randaugment=[1, 5], mixup=0.2,
        drop_path=0.1,
    )  # fmt: skip
    return config.replace(**changes)


@pytest.fixture(scope="module")
def shard_run(shards, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("run") / "whole"
    metrics = train(tiny(shards, out))
    assert metrics["status"] == "completed" and metrics["val_images"] == 13 and metrics["step"] == 12
    return out


def _weights(run: Path) -> dict:
    return torch.load(run / "last.pt", weights_only=True)["model"]


def _same(a: dict, b: dict) -> None:
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


def test_resume_on_shards_repeats_the_uninterrupted_run(shards, shard_run, tmp_path, monkeypatch):
    # stopped after epoch 1, resumed: the next epoch in the same order as the uninterrupted run
    stopped = train(tiny(shards, tmp_path / "a"), on_epoch_end=lambda row: row["epoch"] >= 1)
    assert stopped["status"] == "interrupted"
    train(TrainConfig(resume=str(tmp_path / "a"), output=str(tmp_path / "a")))
    _same(_weights(tmp_path / "a"), _weights(shard_run))

    # stopped mid-epoch (after 3 of 6 steps of epoch 2): the resumed epoch reads past the 3 batches already trained
    class StopAfter(signals.Interrupt):
        calls = 0

        @property
        def requested(self):
            StopAfter.calls += 1
            return StopAfter.calls == 9

        @requested.setter
        def requested(self, value):
            pass

    monkeypatch.setattr(signals, "Interrupt", StopAfter)
    assert train(tiny(shards, tmp_path / "b"))["status"] == "interrupted"
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=True)["batch"] == 3
    monkeypatch.undo()
    train(TrainConfig(resume=str(tmp_path / "b"), output=str(tmp_path / "b")))
    _same(_weights(tmp_path / "b"), _weights(shard_run))


def test_eval_and_fewshot_read_shards(shards, shard_run, tmp_path, capsys):
    from mlp_mixer.analysis.evaluate import evaluate
    from mlp_mixer.analysis.fewshot import fewshot

    held_out = json.loads((shard_run / "eval.json").read_text())
    report = evaluate(shard_run, shards, tmp_path / "e1", workers=2, device="cpu")  # the index's val split
    assert report["images"] == 13 and report["confusion_matrix"] == held_out["confusion_matrix"]
    report = evaluate(shard_run, str(shards / "val-{000000..000001}.tar"), tmp_path / "e2", workers=0, device="cpu")
    assert report["images"] == 12  # the two shards named
    report = evaluate(shard_run, None, tmp_path / "e3", workers=1, device="cpu")  # the run's own held-out split
    assert report["images"] == 13
    result = fewshot(shard_run, shards, shots=[1, 2], seeds=2, device="cpu", workers=2, progress=False)
    assert (result["train_images"], result["test_images"]) == (50, 13)
    assert cli(["eval", "--checkpoint", str(shard_run), "--data", str(shards), "--device", "cpu"]) == 0
    assert "on 13 images" in capsys.readouterr().out


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


def test_two_processes_read_every_image_once_with_equal_steps(shards, tmp_path):
    out = tmp_path / "probe.json"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command += [str(ROOT / "tests" / "shard_probe.py"), str(shards), str(out), "2", "8"]
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
        command += ["--rdzv-id", "shards-test", str(ROOT / "tests" / "shard_probe.py"), str(shards), str(out), "2", "8"]
        launchers.append(
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
        )
    for launcher in launchers:
        _, err = launcher.communicate(timeout=240)
        assert launcher.returncode == 0, err[-3000:]
    check_probe(out, shards, world=2, batch=8)


@pytest.fixture(scope="module")
def recipe_shards(tmp_path_factory) -> Path:
    """16 training images in 4 shards (2 processes × 2 workers read one each), 6 held out."""
    root = tmp_path_factory.mktemp("recipe")
    make_folder(root / "folder", train=(6, 5, 5), val=(2, 2, 2))
    (root / "folder" / "train" / "c0" / "broken.png").unlink()
    out = root / "wds"
    assert cli(["shard", str(root / "folder"), str(out), "--shard-size", "4", "--workers", "0", "--no-progress"]) == 0
    return out


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
