"""train/loop.py: an epoch's steps (gradient accumulation, a NaN loss, unreadable images) and --compile on CUDA."""

import json

import pytest
import torch
from helpers import make_folder

from mlp_mixer.commands import main
from mlp_mixer.train import TrainConfig, train
from mlp_mixer.train import loop as T
from mlp_mixer.weights import load_checkpoint, load_model


def test_unreadable_images_are_skipped_counted_and_reported(tmp_path, capsys, fast):
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
    metrics = train(TrainConfig(data=str(root), epochs=2, output=str(tmp_path / "run"), **fast))
    out = capsys.readouterr().out
    assert metrics["status"] == "completed" and metrics["skipped_images"] == 2
    assert "skipped 2 unreadable image(s)" in out and "broken.jpg" in out and "truncated.png" in out
    assert "ignored 1 file(s) without an image extension" in out
    assert out.strip().splitlines()[-1].startswith("held-out top-1")
    assert len((tmp_path / "run" / "skipped.txt").read_text().splitlines()) == 2


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, cifar, monkeypatch, capsys, tiny_flags):
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
    code = main(["train", "--data", cifar, *tiny_flags, "--epochs", "3", "--batch-size", "8", "--output", str(out)])
    assert code == 1
    err = capsys.readouterr().err
    assert "the loss became nan at step 7" in err and "last good checkpoint is kept" in err
    checkpoint = load_checkpoint(out / "last.pt")
    assert checkpoint["epoch"] == 1 and all(torch.isfinite(v).all() for v in checkpoint["model"].values())
    assert json.loads((out / "metrics.json").read_text())["status"] == "nan"


def test_grad_accum_gives_the_same_training(tmp_path, cifar, fast):
    one = train(TrainConfig(data=cifar, epochs=2, output=str(tmp_path / "a"), **fast))
    two = train(TrainConfig(data=cifar, epochs=2, output=str(tmp_path / "b"), grad_accum=4, **fast))
    a, b = load_checkpoint(tmp_path / "a" / "last.pt"), load_checkpoint(tmp_path / "b" / "last.pt")
    # Adam divides by sqrt(v): where a gradient is ~0, the chunked sums' last bits move its step (1.2e-5 on one
    # bias on an Intel Xeon with AMX); 1e-4 is a tenth of one step at lr 1e-3.
    for key in a["model"]:
        torch.testing.assert_close(a["model"][key], b["model"][key], rtol=1e-4, atol=1e-4)
    assert one["val_top1"] == two["val_top1"]


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compile_on_cuda_trains_as_eager(tmp_path, cifar, fast):
    """On CUDA --compile stays on and trains the same model as eager (benchmarks/gpu_check.sh runs this)."""
    runs = {}
    for compiled in (False, True):
        out = tmp_path / f"run_{compiled}"
        config = TrainConfig(data=cifar, epochs=1, output=str(out), compile=compiled, device="cuda", **fast)
        assert train(config)["status"] == "completed"
        assert load_checkpoint(out / "last.pt")["config"]["compile"] is compiled
        runs[compiled] = load_model(out / "last.pt")  # plain keys, no _orig_mod.
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(runs[True](x), runs[False](x), atol=1e-3, rtol=1e-3)
