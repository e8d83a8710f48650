"""train/config.py: the defaults, the layers of settings (recipe, YAML file, flags) and the one-line refusals."""

from pathlib import Path

import pytest
import torch

from mlp_mixer.commands import main
from mlp_mixer.commands import train as train_command
from mlp_mixer.train import DATA_DEFAULTS, TrainConfig, default_output, load_config_file, resolve_config

ROOT = Path(__file__).resolve().parents[2]


def test_defaults_resolve_to_the_mnist_recipe():
    config = resolve_config(TrainConfig())
    for key, value in DATA_DEFAULTS["mnist"].items():
        assert getattr(config, key) == value, key
    assert config.opt == "adamw" and config.seed == 0 and config.recipe == "scratch"
    assert default_output(None) == "runs/mnist"


def test_configs_mnist_yaml_is_the_default():
    """configs/mnist.yaml spells out what `mlp-mixer train` does with no arguments."""
    values = load_config_file(ROOT / "configs" / "mnist.yaml")
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
        load_config_file(path)


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
        (["--image-size", "30"], "image_size 30 is not divisible by patch_size 7"),
    ],
)
def test_a_run_that_cannot_start_says_why_in_one_line(tmp_path, capsys, argv, message):
    if argv[:2] == ["--device", "cuda:7"] and torch.cuda.device_count() > 7:
        pytest.skip("this machine has 8 GPUs")
    assert main(["train", "--output", str(tmp_path / "run"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run" / "last.pt").exists()
