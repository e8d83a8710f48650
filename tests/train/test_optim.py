"""train/optim.py: the learning-rate schedule, SGD with linear decay, and the EMA of the weights."""

import pytest
import torch

from mlp_mixer.analysis.plots import read_log
from mlp_mixer.train import TrainConfig, lr_factor, train
from mlp_mixer.weights.checkpoint import load_checkpoint


def test_lr_schedule_shape():
    factors = [lr_factor(s, total=100, warmup=10, sched="cosine", floor=0.01) for s in range(100)]
    assert factors[0] == pytest.approx(1 / 11) and factors[9] == pytest.approx(10 / 11) and factors[10] == 1.0
    assert factors[55] == pytest.approx(0.01 + 0.99 * 0.5, abs=0.02) and factors[-1] > 0.01
    assert all(a >= b for a, b in zip(factors[10:], factors[11:], strict=False))
    linear = [lr_factor(s, total=100, warmup=0, sched="linear", floor=0.0) for s in range(101)]
    assert linear[50] == pytest.approx(0.5) and linear[100] == 0.0


def test_sgd_linear_schedule_and_every_augmentation(tmp_path, folder, fast, every_augmentation):
    config = TrainConfig(
        data=folder,
        epochs=2,
        output=str(tmp_path / "run"),
        **every_augmentation,
        **fast,
    )
    metrics = train(config)
    rows = read_log(tmp_path / "run" / "log.csv")
    assert metrics["status"] == "completed" and rows[-1]["lr"] == pytest.approx(1e-5)  # linear decay to min_lr
    checkpoint = load_checkpoint(tmp_path / "run" / "last.pt")
    ema, raw = checkpoint["model"], checkpoint["train_model"]  # EMA weights are the model; the raw ones kept
    assert any(not torch.equal(ema[k], raw[k]) for k in ema)
