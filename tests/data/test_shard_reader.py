"""data.shard_reader: training, evaluation and few-shot read shards as any other source, and a run resumed on
shards (after an epoch, or inside one) repeats the uninterrupted run bit for bit."""

import json
from pathlib import Path

import pytest
import torch

from mlp_mixer.commands import main as cli
from mlp_mixer.train import TrainConfig, signals, train

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
