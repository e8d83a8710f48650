"""train/build.py: the model of a run (from scratch, --init-from, --resume) and its checks, and the options it
switches off with a note."""

import pytest
import torch

from mlp_mixer.train import TrainConfig, open_data, resolve_config, train
from mlp_mixer.train.build import build_model
from mlp_mixer.utils.devices import native_bf16
from mlp_mixer.weights import load_checkpoint, load_model


def test_checkpoint_mismatches_fail_before_training(tmp_path, cifar, folder, fast):
    out = tmp_path / "cifar"
    train(TrainConfig(data=cifar, epochs=1, output=str(out), **fast))
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


def test_init_from_replaces_the_head_with_zeros(source_run, folder):
    config = resolve_config(TrainConfig(init_from=str(source_run), data=folder, recipe="finetune", workers=0))
    splits = open_data(config)
    model, preprocessing, notes = build_model(config, splits)
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


def test_amp_runs_or_is_refused_with_a_note(tmp_path, cifar, capsys, fast):
    metrics = train(TrainConfig(data=cifar, epochs=1, output=str(tmp_path / "run"), amp=True, **fast))
    assert metrics["status"] == "completed"
    saved = load_checkpoint(tmp_path / "run" / "last.pt")["config"]["amp"]
    assert saved == native_bf16(torch.device("cpu"))
    if not saved:
        assert "no native bf16; training in fp32" in capsys.readouterr().out


def test_compile_on_cpu_is_off_with_a_note_and_trains_as_eager(tmp_path, cifar, capsys, fast):
    """A compiled CPU training step is slower than eager (docs/train.md): the run says so and trains eager,
    bit for bit the run without the flag."""
    metrics = train(TrainConfig(data=cifar, epochs=1, output=str(tmp_path / "run"), compile=True, **fast))
    assert metrics["status"] == "completed"
    assert "--compile: on CPU a compiled training step is slower than eager" in capsys.readouterr().out
    assert load_checkpoint(tmp_path / "run" / "last.pt")["config"]["compile"] is False
    train(TrainConfig(data=cifar, epochs=1, output=str(tmp_path / "eager"), **fast))
    compiled, eager = load_checkpoint(tmp_path / "run" / "last.pt"), load_checkpoint(tmp_path / "eager" / "last.pt")
    assert all(torch.equal(compiled["model"][k], eager["model"][k]) for k in eager["model"])  # no _orig_mod. keys
