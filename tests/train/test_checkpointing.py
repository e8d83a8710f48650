"""train/checkpointing.py: a checkpoint resumes exactly (after an epoch, after Ctrl-C mid-epoch), refuses what it
cannot resume, and a SIGKILL while one is written keeps the previous one."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from mlp_mixer.train import TrainConfig, train
from mlp_mixer.weights import load_checkpoint, load_model


def states_equal(a: dict, b: dict) -> bool:
    """torch.equal on every tensor of two nested checkpoints' model, optimizer and EMA states."""

    def walk(x, y, where=""):
        if isinstance(x, torch.Tensor):
            assert isinstance(y, torch.Tensor) and torch.equal(x, y), f"{where} differs"
        elif isinstance(x, dict):
            assert x.keys() == y.keys(), where
            for k in x:
                walk(x[k], y[k], f"{where}/{k}")
        elif isinstance(x, (list, tuple)):
            assert len(x) == len(y), where
            for i, (u, v) in enumerate(zip(x, y, strict=True)):
                walk(u, v, f"{where}/{i}")
        else:
            assert x == y, f"{where}: {x} != {y}"
        return True

    for key in ("model", "optimizer", "train_model", "step"):
        if key in a or key in b:
            walk(a[key], b[key], key)
    return True


def test_resume_after_an_epoch_is_bit_identical(tmp_path, folder, fast):
    """Stopped after epoch 1 then resumed == uninterrupted, with every source of randomness on."""
    base = TrainConfig(
        data=folder,
        epochs=3,
        **{**fast, "image_size": 16},
        dropout=0.1,
        drop_path=0.2,
        mixup=0.2,
        cutmix=1.0,
        randaugment=[2, 9],
        affine=[10, 0.1, 0.1],
        hflip=0.5,
        ema=0.9,
        sam=0.05,
        sam_every=2,  # LookSAM: its reused direction crosses the interruption (3 steps an epoch)
        grad_accum=2,
    )
    train(base.replace(output=str(tmp_path / "full")))
    stopped = train(base.replace(output=str(tmp_path / "part"), workers=2), on_epoch_end=lambda row: row["epoch"] == 1)
    assert stopped["status"] == "interrupted" and stopped["epochs"] == 1
    resumed = train(TrainConfig(resume=str(tmp_path / "part")))
    assert resumed["status"] == "completed" and resumed["epochs"] == 3
    full, part = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(tmp_path / "part" / "last.pt")
    assert states_equal(full, part)
    assert [r["val_top1"] for r in full["history"]] == [r["val_top1"] for r in part["history"]]


def test_resume_needs_more_epochs_and_a_full_checkpoint(tmp_path, cifar, fast):
    out = tmp_path / "run"
    train(TrainConfig(data=cifar, epochs=1, output=str(out), **fast))
    with pytest.raises(ValueError, match="already finished 1 epochs; pass --epochs"):
        train(TrainConfig(resume=str(out)))
    assert train(TrainConfig(resume=str(out / "last.pt"), epochs=2))["epochs"] == 2
    weights_only = tmp_path / "weights.pt"
    checkpoint = load_checkpoint(out / "last.pt")
    torch.save({k: checkpoint[k] for k in ("model", "model_config", "classes")}, weights_only)
    with pytest.raises(ValueError, match="weights only .* use --init-from"):
        train(TrainConfig(resume=str(weights_only)))


def _python(code: str, *args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kw,
    )


def _cli(*args: str) -> subprocess.Popen:
    return _python("import sys; from mlp_mixer.commands import main; sys.exit(main(sys.argv[1:]))", *args)


@pytest.mark.slow
def test_ctrl_c_saves_and_resume_continues_exactly(tmp_path):
    """SIGINT in the middle of a run: a checkpoint is saved, the process exits cleanly (130), and resuming it
    ends with the same weights as a run never interrupted (mid-epoch too: randomness is per step)."""
    flags = [
        "train",
        "--dim=16",
        "--depth=1",
        "--token-dim=8",
        "--channel-dim=16",
        "--epochs=4",
        "--dropout=0.1",
        "--batch-size=32",
        "--threads=1",  # the same in all three runs (and fast on a busy machine)
    ]
    reference = _cli(*flags, "--output", str(tmp_path / "full"))
    interrupted = _cli(*flags, "--output", str(tmp_path / "part"))
    for line in interrupted.stdout:
        if line.startswith("epoch 1/4"):
            time.sleep(0.3)
            interrupted.send_signal(signal.SIGINT)
            break
    out, err = interrupted.communicate(timeout=300)
    assert interrupted.returncode == 130, err
    assert "continue with: mlp-mixer train --resume" in out and "Traceback" not in err
    saved = load_checkpoint(tmp_path / "part" / "last.pt")
    assert 1 <= saved["epoch"] < 4 and saved["step"] < 4 * 125
    resumed = _cli("train", "--resume", str(tmp_path / "part"))
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()
    assert reference.wait(timeout=600) == 0, reference.stderr.read()
    full, part = load_checkpoint(tmp_path / "full" / "last.pt"), load_checkpoint(tmp_path / "part" / "last.pt")
    assert states_equal(full, part)


@pytest.mark.slow
def test_sigkill_while_writing_a_checkpoint_keeps_the_previous_one(tmp_path, cifar):
    out = tmp_path / "run"
    code = """
        import io, sys, time, torch
        from mlp_mixer.train import TrainConfig, train
        real, calls = torch.save, []
        def save(obj, f, *args, **kwargs):  # the 3rd checkpoint (epoch 2's last.pt): half written, then hang
            calls.append(1)
            if len(calls) == 3:
                buffer = io.BytesIO()
                real(obj, buffer)
                f.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
                f.flush()
                print("WRITING", flush=True)
                time.sleep(600)
            return real(obj, f, *args, **kwargs)
        torch.save = save
        train(TrainConfig(data=sys.argv[1], epochs=3, output=sys.argv[2], dim=16, depth=2, token_dim=8,
                          channel_dim=32, patch_size=4, image_size=16, batch_size=8, workers=0, threads=1))
    """
    process = _python(code, cifar, str(out))
    for line in process.stdout:
        if line.strip() == "WRITING":
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert list(out.glob(".last.pt.*.tmp")), "the kill did not land inside the write"
    previous = load_checkpoint(out / "last.pt")
    assert previous["epoch"] == 1 and load_model(out / "best.pt").num_classes == 10
    assert train(TrainConfig(resume=str(out)))["epochs"] == 3
