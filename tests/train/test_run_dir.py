"""train/run_dir.py: what a run writes into its folder, and a rerun into the same folder."""

import json

from mlp_mixer.analysis.plots import read_log
from mlp_mixer.commands import main
from mlp_mixer.train import TrainConfig, train
from mlp_mixer.weights import load_checkpoint, load_model


def test_cli_run_writes_everything(tmp_path, cifar, capsys, tiny_flags):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert (
        main(["train", "--data", cifar, *tiny_flags, "--epochs", "2", "--batch-size", "8", "--output", str(out)]) == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    metrics = json.loads((out / "metrics.json").read_text())
    assert lines[-1].startswith(f"held-out top-1 {100 * metrics['val_top1']:.2f}%")
    for key in ("val_top1", "val_top5", "epochs", "train_seconds"):
        assert key in metrics
    assert metrics["epochs"] == 2 and metrics["status"] == "completed" and metrics["val_images"] == 8
    for name in ("config.yaml", "log.csv", "curves.png", "last.pt", "best.pt", "eval.json", "confusion_matrix.png"):
        assert (out / name).is_file(), name
    rows = read_log(out / "log.csv")
    assert [r["epoch"] for r in rows] == [1, 2] and rows[-1]["val_top1"] == metrics["val_top1"]
    events = EventAccumulator(str(out / "tb"))
    events.Reload()
    assert {"train/loss", "val/top1", "lr"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("val/top1")] == [5, 10]

    checkpoint = load_checkpoint(out / "last.pt")
    for key in (
        "model",
        "model_config",
        "classes",
        "preprocessing",
        "optimizer",
        "scheduler",
        "epoch",
        "step",
        "rng",
        "config",
    ):
        assert key in checkpoint, key
    assert checkpoint["classes"][:2] == ["class0", "class1"] and checkpoint["epoch"] == 2
    loaded = load_model(out / "best.pt")
    assert loaded.num_classes == 10 and loaded.preprocessing.image_size == (16, 16)

    # eval without --data: the held-out split of the run, the same numbers as the run's last epoch
    assert main(["eval", "--checkpoint", str(out / "last.pt"), "--output", str(tmp_path / "ev")]) == 0
    report = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert report["top1"] == metrics["val_top1"] and report["images"] == 8


def test_embedded_default_and_rerun_overwrites(tmp_path):
    out = tmp_path / "mnist"
    config = TrainConfig(
        epochs=1, dim=16, depth=1, token_dim=8, channel_dim=16, output=str(out), warmup_epochs=0.1, lr=0.01
    )
    first = train(config)
    assert first["val_images"] == 1000 and first["classes"] == [str(i) for i in range(10)]
    assert first["val_top1"] > 0.15  # above chance after one epoch of a 2k-parameter Mixer
    train(config.replace(epochs=2))
    assert [r["epoch"] for r in read_log(out / "log.csv")] == [1, 2]  # the old run's rows are gone
    assert len(list((out / "tb").iterdir())) == 1
