"""Fuzzing every kind of file a user can hand us, through the real command line (in process, for speed).

For each kind (image files, training checkpoints, save_pretrained folders, official .npz, timm state dicts, YAML
configs, CIFAR batches) valid examples are mutated with a seeded generator: truncated, bytes flipped, headers
swapped, shapes and dtypes changed, keys renamed or dropped. Every case must end in success or in exit code 2 with
one line that names the input (predict: exit 1 with the file's own error line) - never an exception escaping,
a hang (each case runs under a timer) or a file written outside the case's own output folder.
"""

import contextlib
import io
import json
import os
import pickle
import random
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import save_pretrained, write_cifar

from mlp_mixer import MLPMixer
from mlp_mixer.commands import main
from mlp_mixer.model.variants import TINY
from mlp_mixer.weights import save_checkpoint, save_official_npz, to_timm_state_dict

SEED = int(os.environ.get("FUZZ_SEED", 1234))  # another seed explores other cases: FUZZ_SEED=7 pytest ...
CASE_SECONDS = 20  # a case taking longer counts as a hang


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang


# --- mutations ---------------------------------------------------------------------------------------------------


def mutate_bytes(data: bytes, rng: random.Random, others: list[bytes]) -> bytes:
    """One of: truncate, flip bytes, zero a run, swap in another file's header, append garbage, empty."""
    kind = rng.choice(["truncate", "flip", "zero", "header", "append", "empty"])
    if kind == "truncate":
        return data[: rng.randrange(len(data))]
    if kind == "empty":
        return b""
    if kind == "append":
        return data + rng.randbytes(rng.randrange(1, 64))
    if kind == "header":
        other = rng.choice(others)
        cut = rng.randrange(1, min(len(other), len(data), 64) + 1)
        return other[:cut] + data[cut:]
    buffer = bytearray(data)
    for _ in range(rng.randrange(1, 9)):
        at = rng.randrange(len(buffer))
        if kind == "flip":
            buffer[at] ^= 1 << rng.randrange(8)
        else:  # zero a run of bytes
            end = min(len(buffer), at + rng.randrange(1, 32))
            buffer[at:end] = bytes(end - at)
    return bytes(buffer)


def mutate_tensors(state: dict, rng: random.Random) -> dict:
    """Structural changes to a dict of tensors/arrays: drop, rename, reshape, retype, add a stray key."""
    state = dict(state)
    key = rng.choice(sorted(state))
    kind = rng.choice(["drop", "rename", "reshape", "dtype", "extra", "scalar"])
    value = state[key]
    is_numpy = isinstance(value, np.ndarray)
    if kind == "drop":
        del state[key]
    elif kind == "rename":
        state[key + ".x" if rng.random() < 0.5 else key.replace(".", "_", 1)] = state.pop(key)
    elif kind == "reshape":
        flat = value.reshape(-1)
        state[key] = flat[: max(1, len(flat) - rng.randrange(1, 4))] if len(flat) > 1 else flat.reshape(1, 1)
    elif kind == "dtype":
        state[key] = value.astype(np.int32) if is_numpy else value.to(rng.choice([torch.int64, torch.float16]))
    elif kind == "extra":
        state["stray.weight"] = np.zeros(3, np.float32) if is_numpy else torch.zeros(3)
    else:
        state[key] = np.float32(1.0) if is_numpy else torch.tensor(1.0)
    return state


def mutate_value(value, rng: random.Random):
    """A wrong value for a setting: another type, out of range, nested, or None."""
    return rng.choice([-1, 0, 10**12, 1e308, float("nan"), "abc", "", [1, 2], {"a": 1}, None, True, 3.5, "1,2,3"])


# --- the kinds ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Valid examples of every kind, and a tiny image to predict."""
    root = tmp_path_factory.mktemp("fuzz")
    torch.manual_seed(0)
    model = MLPMixer(**TINY)
    model.classes = [f"c{i}" for i in range(10)]
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    images = {}
    for fmt, suffix in (("PNG", ".png"), ("JPEG", ".jpg"), ("GIF", ".gif"), ("BMP", ".bmp"), ("WEBP", ".webp")):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format=fmt)
        images[suffix] = buffer.getvalue()
    (root / "ok.png").write_bytes(images[".png"])
    checkpoint = save_checkpoint(model, root / "ok.pt", epoch=1)
    pretrained = save_pretrained(model, root / "pretrained")
    npz = save_official_npz(model, root / "ok.npz")
    torch.save(to_timm_state_dict(model), root / "timm.pth")
    cifar = root / "cifar"
    write_cifar(cifar, "cifar10", per_file=4)
    return dict(root=root, model=model, images=images, checkpoint=checkpoint, pretrained=pretrained, npz=npz,
                timm=root / "timm.pth", cifar=cifar)  # fmt: skip


def run_case(tmp: Path, argv: list[str], capsys) -> tuple[int, str, str]:
    """main(argv) under a timer, in ``tmp``; returns (exit code, stdout, stderr). Exceptions propagate."""
    before = {p for p in tmp.rglob("*")}
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(CASE_SECONDS)
    try:
        code = main(argv)
    finally:
        signal.alarm(0)
    out, err = capsys.readouterr()
    written = {p for p in tmp.rglob("*")} - before
    outside = [p for p in written if "out" not in p.relative_to(tmp).parts]
    assert not outside, f"{argv}: wrote outside its output folder: {outside}"
    return code, out, err


def check(code: int, err: str, verb: str, names: tuple[str, ...], allowed: tuple[int, ...] = (0, 2)) -> None:
    assert code in allowed, (code, err)
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"mlp-mixer {verb}: error:"), err
        assert any(name in lines[0] for name in names), f"the error names none of {names}: {lines[0]}"


def _fuzz(n: int, make: Callable[[random.Random, Path], tuple[list[str], str, str, tuple[int, ...]]], tmp, capsys):
    """Run ``n`` cases; ``make(rng, case_dir)`` writes the mutated input and returns (argv, verb, name, codes)."""
    outcomes = {}
    for i in range(n):
        rng = random.Random(SEED + i)
        case = tmp / f"case{i}"
        case.mkdir()
        argv, verb, name, allowed = make(rng, case)
        if os.environ.get("FUZZ_TRACE"):  # a native crash kills pytest: `FUZZ_TRACE=1 pytest -s` names the case
            print(f"case {i}: {argv}", file=sys.__stderr__, flush=True)
        try:
            code, _, err = run_case(case, argv, capsys)
        except Hang:
            pytest.fail(f"case {i} {argv} took over {CASE_SECONDS} s")
        except Exception as err:  # noqa: BLE001 - an escaped exception is exactly the failure looked for
            pytest.fail(f"case {i} {argv}: {type(err).__name__}: {err}")
        check(code, err, verb, (name,) if isinstance(name, str) else name, allowed)
        outcomes[code] = outcomes.get(code, 0) + 1
    return outcomes


def test_fuzz_image_files(world, tmp_path, capsys):
    others = list(world["images"].values())

    def make(rng, case):
        suffix = rng.choice(sorted(world["images"]))
        path = case / f"input{rng.choice([suffix, '.jpg', '.png'])}"  # sometimes the wrong extension
        path.write_bytes(mutate_bytes(world["images"][suffix], rng, others))
        return ["predict", str(path), "--checkpoint", str(world["checkpoint"]), "--json"], "predict", path.name, (0, 1)

    outcomes = _fuzz(80, make, tmp_path, capsys)
    assert outcomes.get(1) and outcomes.get(0)  # some mutations still decode, most do not


def test_fuzz_training_checkpoints(world, tmp_path, capsys):
    valid = world["checkpoint"].read_bytes()
    original = torch.load(world["checkpoint"], weights_only=True)

    def make(rng, case):
        path = case / "ck.pt"
        if rng.random() < 0.5:
            path.write_bytes(mutate_bytes(valid, rng, [valid[:64], b"PK\x03\x04", b"\x80\x02"]))
        else:
            checkpoint = dict(original)
            target = rng.choice(["model", "model_config", "classes", "preprocessing"])
            if target == "model":
                checkpoint["model"] = mutate_tensors(checkpoint["model"], rng)
            elif target == "model_config":
                config = dict(checkpoint["model_config"])
                config[rng.choice(sorted(config) + ["bogus"])] = mutate_value(None, rng)
                checkpoint["model_config"] = config
            elif target == "classes":
                checkpoint["classes"] = mutate_value(None, rng)
            else:
                checkpoint["preprocessing"] = {**checkpoint["preprocessing"], "mean": mutate_value(None, rng)}
            torch.save(checkpoint, path)
        image = world["root"] / "ok.png"
        return ["predict", str(image), "--checkpoint", str(path)], "predict", str(path), (0, 2)

    _fuzz(60, make, tmp_path, capsys)


def test_fuzz_pretrained_folders(world, tmp_path, capsys):
    config = json.loads((world["pretrained"] / "config.json").read_text())
    weights = (world["pretrained"] / "model.safetensors").read_bytes()

    def make(rng, case):
        folder = case / "pretrained"
        folder.mkdir()
        mutated = json.loads(json.dumps(config))
        if rng.random() < 0.5:
            (folder / "model.safetensors").write_bytes(mutate_bytes(weights, rng, [weights[:64], b"{}"]))
            (folder / "config.json").write_text(json.dumps(mutated))
        else:
            section = rng.choice(["model_config", "preprocessing", "classes", None])
            if section in ("model_config", "preprocessing"):
                mutated[section][rng.choice(sorted(mutated[section]))] = mutate_value(None, rng)
            elif section == "classes":
                mutated["classes"] = mutate_value(None, rng)
            text = json.dumps(mutated)
            if section is None:
                text = text[: rng.randrange(len(text))]
            (folder / "config.json").write_text(text)
            (folder / "model.safetensors").write_bytes(weights)
        image = world["root"] / "ok.png"
        return ["predict", str(image), "--checkpoint", str(folder)], "predict", str(folder), (0, 2)

    _fuzz(40, make, tmp_path, capsys)


def test_fuzz_official_npz(world, tmp_path, capsys):
    valid = world["npz"].read_bytes()
    with np.load(world["npz"]) as data:
        arrays = {k: data[k] for k in data.files}

    def make(rng, case):
        path = case / "weights.npz"
        if rng.random() < 0.5:
            path.write_bytes(mutate_bytes(valid, rng, [b"PK\x03\x04", b"\x93NUMPY", valid[:64]]))
        else:
            np.savez(path, **mutate_tensors(arrays, rng))
        return ["convert", str(path), str(case / "out")], "convert", str(path), (0, 2)

    _fuzz(40, make, tmp_path, capsys)


def test_fuzz_timm_state_dicts(world, tmp_path, capsys):
    state = torch.load(world["timm"], weights_only=True)
    from safetensors.torch import save_file

    def make(rng, case):
        mutated = mutate_tensors(state, rng)
        if rng.random() < 0.5:
            path = case / "timm.pth"
            torch.save(mutated, path)
        else:
            path = case / "timm.safetensors"
            save_file({k: v.contiguous() for k, v in mutated.items()}, str(path))
            if rng.random() < 0.3:
                path.write_bytes(mutate_bytes(path.read_bytes(), rng, [b"{}"]))
        return ["convert", str(path), str(case / "out")], "convert", str(path), (0, 2)

    _fuzz(40, make, tmp_path, capsys)


def test_fuzz_yaml_configs(world, tmp_path, capsys, monkeypatch):
    """The settings path of `train --config` (parse, merge, resolve, load the data) with training stubbed."""
    from mlp_mixer.train import loop as train_module
    from mlp_mixer.train.config import FIELDS, resolve_config
    from mlp_mixer.train.inputs import open_data

    def checked_train(config):
        config = resolve_config(config)
        open_data(config)
        return {"status": "completed"}

    monkeypatch.setattr(train_module, "train", checked_train)
    base = {"epochs": 2, "lr": 0.01, "batch-size": 8, "data": str(world["cifar"]), "affine": "10,0.1,0.1"}

    def make(rng, case):
        path = case / "run.yaml"
        values = dict(base)
        for _ in range(rng.randrange(1, 4)):
            key = rng.choice([*FIELDS, "bogus-key", "resolved"]).replace("_", "-")
            values[key] = mutate_value(None, rng)
        text = yaml.safe_dump(values)
        if rng.random() < 0.2:
            text = rng.choice(["[1, 2", "a: b: c", "- just\n- a list", "{{", "\t- x", "key: [unclosed"])
        path.write_text(text)
        # the file, or the option whose (file-given) value is wrong, e.g. "--data abc does not exist"
        return ["train", "--config", str(path), "--output", str(case / "out")], "train", ("run.yaml", "--"), (0, 2)

    outcomes = _fuzz(60, make, tmp_path, capsys)
    assert outcomes.get(2)


def test_fuzz_cifar_batches(world, tmp_path, capsys, monkeypatch):
    from mlp_mixer.train import loop as train_module
    from mlp_mixer.train.config import resolve_config
    from mlp_mixer.train.inputs import open_data

    def checked_train(config):
        open_data(resolve_config(config))
        return {"status": "completed"}

    monkeypatch.setattr(train_module, "train", checked_train)
    files = sorted(p.name for p in world["cifar"].iterdir())

    def make(rng, case):
        folder = case / "cifar-10-batches-py"
        folder.mkdir()
        for name in files:
            (folder / name).write_bytes((world["cifar"] / name).read_bytes())
        victim = folder / rng.choice(files)
        kind = rng.random()
        if kind < 0.5:
            victim.write_bytes(mutate_bytes(victim.read_bytes(), rng, [b"\x80\x02}q\x00", b"PK"]))
        elif kind < 0.7:  # a pickle that would run code when loaded
            victim.write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
        else:
            batch = pickle.loads(victim.read_bytes())
            key = rng.choice(sorted(batch))
            batch[key] = mutate_value(None, rng) if rng.random() < 0.5 else np.zeros((3, 7), np.uint8)
            victim.write_bytes(pickle.dumps(batch, protocol=2))
        argv = ["train", "--data", str(folder), "--output", str(case / "out")]
        return argv, "train", "cifar-10-batches-py", (0, 2)

    outcomes = _fuzz(40, make, tmp_path, capsys)
    assert outcomes.get(2)
    with contextlib.suppress(FileNotFoundError):
        assert not Path("pwned").exists()
