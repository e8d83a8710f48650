"""Fuzzing every kind of file a user can hand us, through the real command line (in process, for speed).

For each kind (image files, training checkpoints, save_pretrained folders, official .npz, timm state dicts, YAML
configs, CIFAR batches) valid examples are mutated with a seeded generator: truncated, bytes flipped, headers
swapped, shapes and dtypes changed, keys renamed or dropped. Every case either succeeds, and then what it loaded is
checked (predictions as a direct forward pass gives them, a converted folder that loads and runs, the settings or
images the file holds), or is refused with exit code 2 and one line that names the input (predict: exit 1 with the
file's own error line) - never an exception escaping, a hang (each case runs under a timer) or a file written
outside the case's own output folder. A CIFAR batch that would run code when unpickled is refused before it runs.
"""

import io
import json
import os
import pickle
import random
import re
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from helpers import CLASSES, PREPROCESSING, write_cifar

from mlp_mixer.commands import main
from mlp_mixer.data import eval_transform, read_image
from mlp_mixer.model.variants import TINY
from mlp_mixer.weights import load_model, save_checkpoint, save_official_npz, to_timm_state_dict

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


# --- code that a pickle would run -------------------------------------------------------------------------------


class RunsCode:
    """Pickles to the call ``call(*args)``: plain ``pickle.loads`` of it makes that call."""

    def __init__(self, call: Callable, *args) -> None:
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


# Calls a hostile pickle may name, each with an effect a test can see: ``target`` comes into existence.
PAYLOADS = {
    "os.system": lambda target: RunsCode(os.system, f"touch {target}"),
    "os.makedirs": lambda target: RunsCode(os.makedirs, str(target)),
    "builtins.open": lambda target: RunsCode(open, str(target), "w"),
}


def hostile_pickle(payload: str, target: Path, inside_a_batch: bool) -> bytes:
    """A CIFAR batch file that creates ``target`` when unpickled (the whole file, or its ``data`` entry)."""
    code = PAYLOADS[payload](target)
    return pickle.dumps({b"data": code, b"labels": [0]} if inside_a_batch else code, protocol=2)


# --- the kinds ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def world(checkpoint, tmp_path_factory):
    """Valid examples of every kind, all of the shared model (``checkpoint``), and a tiny image to predict."""
    from PIL import Image

    root = tmp_path_factory.mktemp("fuzz")
    model = load_model(checkpoint)
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    images = {}
    for fmt, suffix in (("PNG", ".png"), ("JPEG", ".jpg"), ("GIF", ".gif"), ("BMP", ".bmp"), ("WEBP", ".webp")):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format=fmt)
        images[suffix] = buffer.getvalue()
    (root / "ok.png").write_bytes(images[".png"])
    npz = save_official_npz(model, root / "ok.npz")
    torch.save(to_timm_state_dict(model), root / "timm.pth")
    cifar = root / "cifar"
    write_cifar(cifar, "cifar10", per_file=4)
    return dict(root=root, model=model, images=images, checkpoint=save_checkpoint(model, root / "ok.pt", epoch=1),
                pretrained=checkpoint, npz=npz, timm=root / "timm.pth", cifar=cifar)  # fmt: skip


@dataclass
class Case:
    """One mutated input: the command that reads it, and what its outcome must satisfy."""

    argv: list[str]
    verb: str
    names: tuple[str, ...]  # an error line names one of these (the input, or the option it gave)
    allowed: tuple[int, ...] = (0, 2)
    verify: Callable[[int, str], None] | None = None  # given (exit code, stdout): checks what a run loaded


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


def check_refusal(err: str, verb: str, names: tuple[str, ...]) -> None:
    """Exit code 2 is the documented refusal: one line ``mlp-mixer VERB: error: ...`` that names the input and says
    what is wrong in words, not as a bare exception (``KeyError: 'x'``, a traceback)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"mlp-mixer {verb}: error: "), err
    message = lines[0].removeprefix(f"mlp-mixer {verb}: error: ")
    assert any(name in message for name in names), f"the error names none of {names}: {message}"
    assert "Traceback" not in message and not re.match(r"\w+(Error|Exception)\b", message), message


def _fuzz(n: int, make: Callable[[random.Random, Path], Case], tmp, capsys) -> dict[int, int]:
    """Run ``n`` cases; ``make(rng, case_dir)`` writes the mutated input and returns its :class:`Case`.
    Returns how many cases ended with each exit code."""
    outcomes = {}
    for i in range(n):
        rng = random.Random(SEED + i)
        folder = tmp / f"case{i}"
        folder.mkdir()
        case = make(rng, folder)
        if os.environ.get("FUZZ_TRACE"):  # a native crash kills pytest: `FUZZ_TRACE=1 pytest -s` names the case
            print(f"case {i}: {case.argv}", file=sys.__stderr__, flush=True)
        try:
            code, out, err = run_case(folder, case.argv, capsys)
        except Hang:
            pytest.fail(f"case {i} {case.argv} took over {CASE_SECONDS} s")
        except Exception as err:  # noqa: BLE001 - an escaped exception is exactly the failure looked for
            pytest.fail(f"case {i} {case.argv}: {type(err).__name__}: {err}")
        assert code in case.allowed, (i, case.argv, code, err)
        if code == 2:
            check_refusal(err, case.verb, case.names)
        if case.verify is not None:
            case.verify(code, out)
        outcomes[code] = outcomes.get(code, 0) + 1
    return outcomes


def check_predictions(out: str, path: Path, names: list[str]) -> dict:
    """``predict --json`` for one image: well formed, probabilities in order, classes as the checkpoint names them
    (their indices when it names none). Returns the entry."""
    (entry,) = json.loads(out)
    assert entry["path"] == str(path)
    if entry["error"] is not None:
        assert entry["predictions"] == [] and str(path) in entry["error"] and "\n" not in entry["error"], entry
        return entry
    probabilities = [p["probability"] for p in entry["predictions"]]
    assert len(probabilities) == 5 and probabilities == sorted(probabilities, reverse=True), entry
    assert all(0 <= p <= 1 for p in probabilities) and sum(probabilities) <= 1 + 1e-5, entry
    assert all(p["class"] in (names[p["index"]], str(p["index"])) for p in entry["predictions"]), entry
    return entry


def test_fuzz_image_files(world, tmp_path, capsys):
    others = list(world["images"].values())
    model = world["model"]

    def make(rng, case):
        suffix = rng.choice(sorted(world["images"]))
        path = case / f"input{rng.choice([suffix, '.jpg', '.png'])}"  # sometimes the wrong extension
        path.write_bytes(mutate_bytes(world["images"][suffix], rng, others))

        def verify(code, out):
            entry = check_predictions(out, path, CLASSES)
            assert (entry["error"] is None) == (code == 0), entry
            if code == 0:  # a file that decodes gets the probabilities of a direct forward pass of its pixels
                with torch.no_grad():
                    probabilities = model(eval_transform(PREPROCESSING)(read_image(path))[None]).softmax(-1)[0]
                values, indices = probabilities.topk(5)
                assert [p["index"] for p in entry["predictions"]] == indices.tolist()
                got = torch.tensor([p["probability"] for p in entry["predictions"]])
                torch.testing.assert_close(got, values, atol=1e-5, rtol=1e-5)

        # on the CPU, as the direct forward pass runs (CUDA would predict in bfloat16)
        argv = ["predict", str(path), "--checkpoint", str(world["checkpoint"]), "--json", "--device", "cpu"]
        return Case(argv, "predict", (path.name,), (0, 1), verify)

    outcomes = _fuzz(80, make, tmp_path, capsys)
    assert outcomes.get(1) and outcomes.get(0)  # some mutations still decode, most do not


def predicts(image: Path) -> Callable[[int, str], None]:
    """The check of a checkpoint that loaded: its prediction of ``image`` is well formed."""

    def verify(code, out):
        if code == 0:
            assert check_predictions(out, image, CLASSES)["error"] is None

    return verify


def test_fuzz_training_checkpoints(world, tmp_path, capsys):
    valid = world["checkpoint"].read_bytes()
    original = torch.load(world["checkpoint"], weights_only=True)
    image = world["root"] / "ok.png"

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
        return Case(["predict", str(image), "--checkpoint", str(path), "--json"], "predict", (str(path),),
                    verify=predicts(image))  # fmt: skip

    outcomes = _fuzz(60, make, tmp_path, capsys)
    assert outcomes.get(0) and outcomes.get(2)  # some mutations are harmless (a stray key), most are refused


def test_fuzz_pretrained_folders(world, tmp_path, capsys):
    config = json.loads((world["pretrained"] / "config.json").read_text())
    weights = (world["pretrained"] / "model.safetensors").read_bytes()
    image = world["root"] / "ok.png"

    def make(rng, case):
        folder = case / "pretrained"
        folder.mkdir()
        mutated = json.loads(json.dumps(config))
        if rng.random() < 0.5:
            (folder / "model.safetensors").write_bytes(mutate_bytes(weights, rng, [weights[:64], b"{}"]))
            (folder / "config.json").write_text(json.dumps(mutated))
        else:
            section = rng.choice(["model_config", "preprocessing", "classes", None])
            if section == "model_config":  # the constructor's arguments, at config.json's top level (the mixin's)
                mutated[rng.choice(sorted(k for k in TINY if k in mutated))] = mutate_value(None, rng)
            elif section == "preprocessing":
                mutated[section][rng.choice(sorted(mutated[section]))] = mutate_value(None, rng)
            elif section == "classes":
                mutated["classes"] = mutate_value(None, rng)
            text = json.dumps(mutated)
            if section is None:
                text = text[: rng.randrange(len(text))]
            (folder / "config.json").write_text(text)
            (folder / "model.safetensors").write_bytes(weights)
        return Case(["predict", str(image), "--checkpoint", str(folder), "--json"], "predict", (str(folder),),
                    verify=predicts(image))  # fmt: skip

    outcomes = _fuzz(40, make, tmp_path, capsys)
    assert outcomes.get(0) and outcomes.get(2)


def converts(out: Path) -> Callable[[int, str], None]:
    """The check of weights that converted: ``out`` is a folder that loads as a Mixer of the fuzzed sizes and runs."""

    def verify(code, printed):
        if code != 0:
            assert not out.exists()  # a refused conversion leaves nothing behind
            return
        assert f"-> {out}" in printed
        model = load_model(out)
        assert {k: v for k, v in model.config().items() if k in TINY} == {**TINY, "image_size": [16, 16]}
        with torch.no_grad():
            logits = model(torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)))
        assert logits.shape == (2, TINY["num_classes"]) and logits.isfinite().all()

    return verify


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
        return Case(["convert", str(path), str(case / "out")], "convert", (str(path),), verify=converts(case / "out"))

    outcomes = _fuzz(40, make, tmp_path, capsys)
    assert outcomes.get(0) and outcomes.get(2)


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
        return Case(["convert", str(path), str(case / "out")], "convert", (str(path),), verify=converts(case / "out"))

    outcomes = _fuzz(40, make, tmp_path, capsys)
    assert outcomes.get(0) and outcomes.get(2)


def stub_training(monkeypatch) -> list:
    """``train`` stubbed to resolve the settings and open the data only; returns the list it appends
    ``(resolved config, splits)`` to."""
    from mlp_mixer.train import loop as train_module
    from mlp_mixer.train.config import resolve_config
    from mlp_mixer.train.inputs import open_data

    calls = []

    def checked_train(config):
        config = resolve_config(config)
        calls.append((config, open_data(config)))
        return {"status": "completed"}

    monkeypatch.setattr(train_module, "train", checked_train)
    return calls


def check_cifar(splits, train: int = 20, test: int = 4) -> None:
    """What a (possibly mutated) CIFAR-10 folder loaded as: its images and labels, of the right kinds."""
    assert splits.kind == "cifar10" and len(splits.classes) == 10 and all(isinstance(c, str) for c in splits.classes)
    for split, count in ((splits.train, train), (splits.val, test)):
        assert split.images.dtype == torch.uint8 and tuple(split.images.shape) == (count, 3, 32, 32)
        assert len(split.labels) == count and 0 <= split.labels.min() and split.labels.max() < 10


def test_fuzz_yaml_configs(world, tmp_path, capsys, monkeypatch):
    """The settings path of `train --config` (parse, merge, resolve, load the data) with training stubbed."""
    from mlp_mixer.train.config import FIELDS

    calls = stub_training(monkeypatch)
    base = {"epochs": 2, "lr": 0.01, "batch-size": 8, "data": str(world["cifar"]), "affine": "10,0.1,0.1"}

    def make(rng, case):
        path = case / "run.yaml"
        values = dict(base)
        for _ in range(rng.randrange(1, 4)):
            key = rng.choice([*FIELDS, "bogus-key", "resolved"]).replace("_", "-")
            values[key] = mutate_value(None, rng)
        text = yaml.safe_dump(values)
        garbled = rng.random() < 0.2
        if garbled:
            text = rng.choice(["[1, 2", "a: b: c", "- just\n- a list", "{{", "\t- x", "key: [unclosed"])
        path.write_text(text)

        def verify(code, out):
            assert len(calls) == (code == 0), calls  # training ran exactly when the file was accepted
            if code == 0:
                assert not garbled
                config, splits = calls.pop()
                check_cifar(splits)
                for key, value in values.items():  # every setting the file gives is the one the run uses
                    if value is not None and key not in ("affine", "resolved"):
                        assert getattr(config, key.replace("-", "_")) == value, (key, value)

        # the file, or the option whose (file-given) value is wrong, e.g. "--data abc does not exist"
        argv = ["train", "--config", str(path), "--output", str(case / "out")]
        return Case(argv, "train", ("run.yaml", "--"), verify=verify)

    outcomes = _fuzz(60, make, tmp_path, capsys)
    assert outcomes.get(0) and outcomes.get(2)


def test_fuzz_cifar_batches(world, tmp_path, capsys, monkeypatch):
    calls = stub_training(monkeypatch)
    files = sorted(p.name for p in world["cifar"].iterdir())

    def make(rng, case):
        folder = case / "cifar-10-batches-py"
        folder.mkdir()
        for name in files:
            (folder / name).write_bytes((world["cifar"] / name).read_bytes())
        victim = folder / rng.choice(files)
        kind = rng.random()
        ran = case / "ran"  # what a pickle that runs code would create
        if kind < 0.5:
            victim.write_bytes(mutate_bytes(victim.read_bytes(), rng, [b"\x80\x02}q\x00", b"PK"]))
        elif kind < 0.7:
            victim.write_bytes(hostile_pickle(rng.choice(sorted(PAYLOADS)), ran, rng.random() < 0.5))
        else:
            batch = pickle.loads(victim.read_bytes())
            key = rng.choice(sorted(batch))
            batch[key] = mutate_value(None, rng) if rng.random() < 0.5 else np.zeros((3, 7), np.uint8)
            victim.write_bytes(pickle.dumps(batch, protocol=2))

        def verify(code, out):
            assert not ran.exists()
            assert len(calls) == (code == 0), calls
            if code == 0:
                assert kind < 0.5 or kind >= 0.7  # never the code-running pickle
                check_cifar(calls.pop()[1])

        argv = ["train", "--data", str(folder), "--output", str(case / "out")]
        return Case(argv, "train", (victim.name,), verify=verify)

    outcomes = _fuzz(40, make, tmp_path, capsys)
    assert outcomes.get(0) and outcomes.get(2)


@pytest.mark.parametrize("inside_a_batch", [False, True], ids=["whole-file", "in-the-batch"])
@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_a_cifar_batch_that_would_run_code_is_refused(world, tmp_path, capsys, monkeypatch, payload, inside_a_batch):
    target = tmp_path / "ran"
    data = hostile_pickle(payload, target, inside_a_batch)
    result = pickle.loads(data)  # the payload is live: plain pickle runs its call ...
    if hasattr(result, "close"):
        result.close()
    assert target.exists()  # ... which leaves the target behind
    if target.is_dir():
        target.rmdir()
    else:
        target.unlink()

    calls = stub_training(monkeypatch)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for path in world["cifar"].iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    (folder / "data_batch_2").write_bytes(data)
    code = main(["train", "--data", str(folder), "--output", str(tmp_path / "out")])
    assert not target.exists(), "the pickle's code ran"
    err = capsys.readouterr().err
    assert code == 2 and calls == [], err
    check_refusal(err, "train", (str(folder / "data_batch_2"),))
    _, name = payload.rsplit(".", 1)
    assert re.search(rf"refusing to load \w+\.{name} \(only plain arrays are expected\)", err), err
