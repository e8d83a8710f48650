"""train: the run's files, settings in layers, exact resume, Ctrl-C and SIGKILL, bad input, fine-tuning."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from helpers import make_folder, write_cifar
from torchvision.transforms import v2

from mlp_mixer.commands import main
from mlp_mixer.commands import train as train_command
from mlp_mixer.train import loop as T
from mlp_mixer.train.loop import TrainConfig, resolve_config, train
from mlp_mixer.utils.devices import native_bf16
from mlp_mixer.weights.checkpoint import load_checkpoint, load_model

ROOT = Path(__file__).resolve().parents[1]
# A model small enough that a step takes milliseconds: 2 blocks on 4x4 = 16 patches of a 16x16 image.
TINY = dict(dim=16, depth=2, token_dim=8, channel_dim=32, patch_size=4, image_size=16)
TINY_FLAGS = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
# One thread: as fast for these sizes, and many times faster when other processes share the cores.
FAST = dict(**TINY, batch_size=8, warmup_epochs=1.0, workers=0, threads=1)


@pytest.fixture(scope="module")
def cifar(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("cifar-10-batches-py")
    write_cifar(root, "cifar10", per_file=8)  # 40 training images, 8 test images
    return str(root)


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


# --- settings -----------------------------------------------------------------------------------------------------


def test_defaults_resolve_to_the_mnist_recipe():
    config = resolve_config(TrainConfig())
    for key, value in T.DATA_DEFAULTS["mnist"].items():
        assert getattr(config, key) == value, key
    assert config.opt == "adamw" and config.seed == 0 and config.recipe == "scratch"
    assert T.default_output(None) == "runs/mnist"


def test_configs_mnist_yaml_is_the_default():
    """configs/mnist.yaml spells out what `mlp-mixer train` does with no arguments."""
    values = T.load_config_file(ROOT / "configs" / "mnist.yaml")
    assert resolve_config(TrainConfig(**values)) == resolve_config(TrainConfig())


def test_recipe_then_yaml_then_flags(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("recipe: finetune\nbatch-size: 4\nlr: 0.1\nrandaugment: 2,9\n")
    args = _parse(["--config", str(path), "--lr", "0.02"])
    config = resolve_config(train_command.config_from_args(args))
    assert (config.opt, config.weight_decay, config.clip_grad, config.sched) == ("sgd", 0.0, 1.0, "cosine")
    assert config.batch_size == 4 and config.lr == 0.02 and config.randaugment == [2, 9]


def test_unknown_setting_in_a_config_file(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("epochz: 3\n")
    with pytest.raises(ValueError, match="unknown setting.*epochz"):
        T.load_config_file(path)


def _parse(argv):
    import argparse

    parser = argparse.ArgumentParser()
    train_command.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--opt", "lamb"], "--opt must be one of adamw, sgd"),
        (["--epochs", "0"], "--epochs must be a positive integer"),
        (["--affine", "1,2"], "--affine must be 3 comma-separated numbers"),
        (["--device", "cuda:7"], "--device cuda:7"),
        (["--freeze-backbone"], "--freeze-backbone needs --init-from"),
        (["--data", "/nonexistent/folder"], "--data /nonexistent/folder does not exist"),
        (["--init-from", "/nonexistent.pt"], "/nonexistent.pt"),
        (["--num-classes", "7"], "--num-classes 7 does not match the data: 10 classes"),
        (["--image-size", "30"], "image_size 30 is not divisible by patch_size 4"),
    ],
)
def test_a_run_that_cannot_start_says_why_in_one_line(tmp_path, capsys, argv, message):
    if argv[:2] == ["--device", "cuda:7"] and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    assert main(["train", "--output", str(tmp_path / "run"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "last.pt").exists()


# --- a whole run --------------------------------------------------------------------------------------------------


def test_cli_run_writes_everything(tmp_path, cifar, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert (
        main(["train", "--data", cifar, *TINY_FLAGS, "--epochs", "2", "--batch-size", "8", "--output", str(out)]) == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    metrics = json.loads((out / "metrics.json").read_text())
    assert lines[-1].startswith(f"held-out top-1 {100 * metrics['val_top1']:.2f}%")
    for key in ("val_top1", "val_top5", "epochs", "train_seconds"):
        assert key in metrics
    assert metrics["epochs"] == 2 and metrics["status"] == "completed" and metrics["val_images"] == 8
    for name in ("config.yaml", "log.csv", "curves.png", "last.pt", "best.pt", "eval.json", "confusion_matrix.png"):
        assert (out / name).is_file(), name
    rows = T.read_log(out / "log.csv")
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
    assert [r["epoch"] for r in T.read_log(out / "log.csv")] == [1, 2]  # the old run's rows are gone
    assert len(list((out / "tb").iterdir())) == 1


# --- resume -------------------------------------------------------------------------------------------------------


def test_resume_after_an_epoch_is_bit_identical(tmp_path, folder):
    """Stopped after epoch 1 then resumed == uninterrupted, with every source of randomness on."""
    base = TrainConfig(
        data=folder,
        epochs=3,
        **{**FAST, "image_size": 16},
        dropout=0.1,
        drop_path=0.2,
        mixup=0.2,
        cutmix=1.0,
        randaugment=[2, 9],
        affine=[10, 0.1, 0.1],
        hflip=0.5,
        ema=0.9,
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


def test_resume_needs_more_epochs_and_a_full_checkpoint(tmp_path, cifar):
    out = tmp_path / "run"
    train(TrainConfig(data=cifar, epochs=1, output=str(out), **FAST))
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


# --- bad input ----------------------------------------------------------------------------------------------------


def test_unreadable_images_are_skipped_counted_and_reported(tmp_path, capsys):
    from PIL import Image

    root = tmp_path / "data"
    make_folder(root / "train", n=6, size=(20, 18))
    make_folder(root / "val", n=2, size=(20, 18))
    rgb = Image.new("RGB", (16, 16), (200, 10, 10))
    rgb.save(root / "train" / "cat" / "gif.jpg", format="GIF")
    rgb.save(root / "train" / "cat" / "png.jpg", format="PNG")
    rgb.convert("CMYK").save(root / "train" / "dog" / "cmyk.jpg")
    rgb.convert("P").save(root / "train" / "dog" / "palette.png")
    Image.new("I;16", (9, 9), 4000).save(root / "train" / "owl" / "sixteen.png")
    Image.new("RGBA", (3, 2)).save(root / "train" / "owl" / "tiny_rgba.png")
    (root / "train" / "owl" / "broken.jpg").write_bytes(b"\xff\xd8\xff" + b"\0" * 50)
    (root / "train" / "cat" / "truncated.png").write_bytes((root / "train" / "cat" / "0.png").read_bytes()[:60])
    (root / "train" / "dog" / "readme.txt").write_text("not an image")
    metrics = train(TrainConfig(data=str(root), epochs=2, output=str(tmp_path / "run"), **FAST))
    out = capsys.readouterr().out
    assert metrics["status"] == "completed" and metrics["skipped_images"] == 2
    assert "skipped 2 unreadable image(s)" in out and "broken.jpg" in out and "truncated.png" in out
    assert "ignored 1 file(s) without an image extension" in out
    assert out.strip().splitlines()[-1].startswith("held-out top-1")
    assert len((tmp_path / "run" / "skipped.txt").read_text().splitlines()) == 2


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, cifar, monkeypatch, capsys):
    real = torch.nn.functional.cross_entropy
    calls = []

    class Poisoned:  # the loss becomes NaN from the 8th training step on (epoch 2 of 5 steps)
        def __getattr__(self, name):
            return getattr(torch.nn.functional, name)

        def cross_entropy(self, *args, **kwargs):
            calls.append(1)
            loss = real(*args, **kwargs)
            return loss * float("nan") if len(calls) >= 8 else loss

    monkeypatch.setattr(T, "F", Poisoned())
    out = tmp_path / "run"
    code = main(["train", "--data", cifar, *TINY_FLAGS, "--epochs", "3", "--batch-size", "8", "--output", str(out)])
    assert code == 1
    err = capsys.readouterr().err
    assert "the loss became nan at step 7" in err and "last good checkpoint is kept" in err
    checkpoint = load_checkpoint(out / "last.pt")
    assert checkpoint["epoch"] == 1 and all(torch.isfinite(v).all() for v in checkpoint["model"].values())
    assert json.loads((out / "metrics.json").read_text())["status"] == "nan"


def test_checkpoint_mismatches_fail_before_training(tmp_path, cifar, folder):
    out = tmp_path / "cifar"
    train(TrainConfig(data=cifar, epochs=1, output=str(out), **FAST))
    with pytest.raises(ValueError, match=r"trained on 10 classes \(class0, .*the data has 3 \(cat, dog, owl\)"):
        train(TrainConfig(resume=str(out), data=folder, epochs=2))
    with pytest.raises(ValueError, match="holds a model with dim 16, but the options ask for dim 32"):
        train(TrainConfig(resume=str(out), dim=32, epochs=2))
    with pytest.raises(ValueError, match="holds a model with in_channels 3, but the options ask for in_channels 1"):
        train(TrainConfig(init_from=str(out / "last.pt"), data=folder, in_channels=1, workers=0))
    with pytest.raises(ValueError, match="holds a model with dim 16, not --model S/16's 512"):
        train(TrainConfig(init_from=str(out / "last.pt"), data=folder, model="S/16", workers=0))
    assert load_checkpoint(out / "last.pt")["epoch"] == 1  # untouched
    with pytest.raises(ValueError, match="classes the checkpoint does not know: cat, dog, owl"):
        from mlp_mixer.analysis.evaluate import evaluate

        evaluate(out / "last.pt", data=folder)


# --- fine-tuning --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def source_run(tmp_path_factory, cifar) -> Path:
    out = tmp_path_factory.mktemp("source")
    train(TrainConfig(data=cifar, epochs=1, output=str(out), **FAST))
    return out / "last.pt"


def test_init_from_replaces_the_head_with_zeros(source_run, folder):
    config = resolve_config(TrainConfig(init_from=str(source_run), data=folder, recipe="finetune", workers=0))
    splits = T.open_data(config)
    model, preprocessing, notes = T.build_model(config, splits)
    source = load_model(source_run)
    assert model.num_classes == 3 and not model.head.weight.any() and not model.head.bias.any()
    for name, value in source.state_dict().items():
        if not name.startswith("head."):
            assert torch.equal(model.state_dict()[name], value), name
    assert preprocessing.image_size == (16, 16) and any("zero head for 3 classes" in n for n in notes)


def test_freeze_backbone_trains_the_head_only(tmp_path, source_run, folder):
    out = tmp_path / "ft"
    metrics = train(
        TrainConfig(
            init_from=str(source_run),
            data=folder,
            freeze_backbone=True,
            recipe="finetune",
            epochs=2,
            batch_size=8,
            output=str(out),
            workers=0,
            lr=0.1,
        )
    )
    assert metrics["status"] == "completed"
    config = load_checkpoint(out / "last.pt")["config"]
    assert (config["opt"], config["weight_decay"], config["clip_grad"], config["lr"]) == ("sgd", 0.0, 1.0, 0.1)
    tuned, source = load_model(out / "last.pt").state_dict(), load_model(source_run).state_dict()
    assert tuned["head.weight"].shape == (3, 16) and tuned["head.weight"].any()
    assert all(torch.equal(tuned[k], v) for k, v in source.items() if not k.startswith("head."))


def test_init_from_at_a_new_resolution(tmp_path, source_run, folder):
    out = tmp_path / "ft32"
    train(
        TrainConfig(
            init_from=str(source_run),
            data=folder,
            image_size=32,
            epochs=1,
            batch_size=8,
            output=str(out),
            workers=0,
            threads=1,
        )
    )
    loaded = load_model(out / "last.pt")
    assert loaded.image_size == (32, 32) and loaded.preprocessing.image_size == (32, 32)
    assert loaded.token_dim == 8 * 4  # the paper's block-diagonal widening for 2x2 times more patches


# --- options ------------------------------------------------------------------------------------------------------


def test_grad_accum_gives_the_same_training(tmp_path, cifar):
    one = train(TrainConfig(data=cifar, epochs=2, output=str(tmp_path / "a"), **FAST))
    two = train(TrainConfig(data=cifar, epochs=2, output=str(tmp_path / "b"), grad_accum=4, **FAST))
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-4, atol=1e-5)
    assert one["val_top1"] == two["val_top1"]


def test_sgd_linear_schedule_and_every_augmentation(tmp_path, folder):
    config = TrainConfig(
        data=folder,
        epochs=2,
        output=str(tmp_path / "run"),
        opt="sgd",
        sched="linear",
        randaugment=[2, 9],
        mixup=0.8,
        cutmix=1.0,
        affine=[15, 0.1, 0.2],
        drop_path=0.1,
        dropout=0.1,
        smoothing=0.2,
        ema=0.5,
        **FAST,
    )
    metrics = train(config)
    rows = T.read_log(tmp_path / "run" / "log.csv")
    assert metrics["status"] == "completed" and rows[-1]["lr"] == pytest.approx(1e-5)  # linear decay to min_lr
    checkpoint = load_checkpoint(tmp_path / "run" / "last.pt")
    ema, raw = checkpoint["model"], checkpoint["train_model"]  # EMA weights are the model; the raw ones kept
    assert any(not torch.equal(ema[k], raw[k]) for k in ema)

    # What each augmentation does, built by the same functions from the same resolved settings.
    resolved = resolve_config(config)
    splits = T.open_data(resolved)
    model, preprocessing, _ = T.build_model(resolved, splits)
    T.attach_transforms(splits, resolved, preprocessing)
    (randaugment,) = [t for t in splits.train.transform.transforms if isinstance(t, v2.RandAugment)]
    assert (randaugment.num_ops, randaugment.magnitude) == (2, 9)
    first, _ = splits.train[0]
    splits.train.epoch_seed = 1
    assert not torch.equal(first, splits.train[0][0])  # another epoch, another draw ...
    splits.train.epoch_seed = 0
    assert torch.equal(first, splits.train[0][0])  # ... and the same draw again for the same epoch
    images = torch.rand(8, 3, 16, 16)
    labels = torch.arange(8) % 3
    augment = T.BatchAugment(resolved)
    moved = augment(images, torch.Generator().manual_seed(0))
    assert not torch.allclose(moved, images)
    assert torch.equal(moved, augment(images, torch.Generator().manual_seed(0)))
    torch.manual_seed(0)
    mixed, targets = T.mixing(resolved, 3)(images, labels)
    assert targets.shape == (8, 3) and torch.allclose(targets.sum(1), torch.ones(8))
    assert targets.max() < 1 and not torch.equal(mixed, images)  # soft labels, blended images
    assert model.blocks[-1].drop_path.p == pytest.approx(0.1)  # stochastic depth: 0 .. rate over the blocks
    assert model.blocks[0].drop_path.p == 0 and model.blocks[0].token_mixing.drop1.p == pytest.approx(0.1)
    model.train()
    x = torch.randn(2, 3, 16, 16)
    assert not torch.equal(model.forward_features(x), model.forward_features(x))  # dropout draws differ
    model.eval()
    assert torch.equal(model.forward_features(x), model.forward_features(x))


def test_no_aug_epochs_train_the_last_epochs_as_if_unaugmented(tmp_path, cifar, folder):
    """With every augmentation on and --no-aug-epochs equal to --epochs, training equals a run with none, bit for
    bit; with the last epoch clean, it differs from both; image files then get the held-out geometry."""
    augmented = dict(affine=[15, 0.1, 0.2], hflip=0.5, mixup=0.8, cutmix=1.0)
    plain = dict(affine=[0, 0, 0], hflip=0.0, mixup=0.0, cutmix=0.0)

    def weights(name: str, **settings) -> dict:
        train(TrainConfig(data=cifar, epochs=2, output=str(tmp_path / name), **FAST, **settings))
        return load_checkpoint(tmp_path / name / "last.pt")["model"]

    def same(a: dict, b: dict) -> bool:
        return all(torch.equal(a[k], b[k]) for k in a)

    none, clean = weights("none", **plain), weights("clean", **augmented, no_aug_epochs=2)
    assert same(none, clean)
    last = weights("last", **augmented, no_aug_epochs=1)
    assert not same(last, none) and not same(last, weights("all", **augmented))

    resolved = resolve_config(TrainConfig(data=folder, randaugment=[2, 9], no_aug_epochs=1, **FAST))
    splits = T.open_data(resolved)
    _, preprocessing, _ = T.build_model(resolved, splits)
    T.attach_transforms(splits, resolved, preprocessing, augment=False)
    assert splits.train.transform is splits.val.transform and splits.val.transform is not None
    assert [T.augments(resolved, epoch) for epoch in range(resolved.epochs)][-2:] == [True, False]
    with pytest.raises(ValueError, match="--no-aug-epochs"):
        resolve_config(TrainConfig(epochs=3, no_aug_epochs=-1))
    assert not T.augments(resolve_config(TrainConfig(epochs=2, no_aug_epochs=3)), 0)  # all clean, not an error


def test_lr_schedule_shape():
    factors = [T.lr_factor(s, total=100, warmup=10, sched="cosine", floor=0.01) for s in range(100)]
    assert factors[0] == pytest.approx(1 / 11) and factors[9] == pytest.approx(10 / 11) and factors[10] == 1.0
    assert factors[55] == pytest.approx(0.01 + 0.99 * 0.5, abs=0.02) and factors[-1] > 0.01
    assert all(a >= b for a, b in zip(factors[10:], factors[11:], strict=False))
    linear = [T.lr_factor(s, total=100, warmup=0, sched="linear", floor=0.0) for s in range(101)]
    assert linear[50] == pytest.approx(0.5) and linear[100] == 0.0


def test_amp_runs_or_is_refused_with_a_note(tmp_path, cifar, capsys):
    metrics = train(TrainConfig(data=cifar, epochs=1, output=str(tmp_path / "run"), amp=True, **FAST))
    assert metrics["status"] == "completed"
    saved = load_checkpoint(tmp_path / "run" / "last.pt")["config"]["amp"]
    assert saved == native_bf16(torch.device("cpu"))
    if not saved:
        assert "no native bf16; training in fp32" in capsys.readouterr().out


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compile_on_cuda_trains_as_eager(tmp_path, cifar):
    """On CUDA --compile stays on and trains the same model as eager (benchmarks/gpu_check.sh runs this)."""
    runs = {}
    for compiled in (False, True):
        out = tmp_path / f"run_{compiled}"
        config = TrainConfig(data=cifar, epochs=1, output=str(out), compile=compiled, device="cuda", **FAST)
        assert train(config)["status"] == "completed"
        assert load_checkpoint(out / "last.pt")["config"]["compile"] is compiled
        runs[compiled] = load_model(out / "last.pt")  # plain keys, no _orig_mod.
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(runs[True](x), runs[False](x), atol=1e-3, rtol=1e-3)


def test_compile_on_cpu_is_off_with_a_note_and_trains_as_eager(tmp_path, cifar, capsys):
    """A compiled CPU training step is slower than eager (docs/train.md): the run says so and trains eager,
    bit for bit the run without the flag."""
    metrics = train(TrainConfig(data=cifar, epochs=1, output=str(tmp_path / "run"), compile=True, **FAST))
    assert metrics["status"] == "completed"
    assert "--compile: on CPU a compiled training step is slower than eager" in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "run" / "last.pt")["config"]["compile"] is False
    train(TrainConfig(data=cifar, epochs=1, output=str(tmp_path / "eager"), **FAST))
    compiled, eager = load_checkpoint(tmp_path / "run" / "last.pt"), load_checkpoint(tmp_path / "eager" / "last.pt")
    assert all(torch.equal(compiled["model"][k], eager["model"][k]) for k in eager["model"])  # no _orig_mod. keys
