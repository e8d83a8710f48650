"""The command line itself, as a user runs it: one-line errors, the entry points, help and version (what each
verb does is tested beside its module)."""

import subprocess
import sys
from pathlib import Path

import pytest

from mlp_mixer.commands import VERBS, main


@pytest.mark.parametrize(
    "argv,message",
    [
        (["summary", "--image-size", "225"], "image_size 225 is not divisible by patch_size 16"),
        (["summary", "Q/7"], "unknown variant 'Q/7'; valid names"),
        (["summary", "--dim", "0"], "dim must be a positive integer"),
    ],
)
def test_errors_are_one_line(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_console_script_and_module_entry_points():
    script = str(Path(sys.executable).parent / "mlp-mixer")
    for cmd in ([script, "models"], [sys.executable, "-m", "mlp_mixer", "models"]):
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        assert "S/32" in result.stdout


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "summary" in capsys.readouterr().out


def test_version_is_the_installed_distributions(capsys):
    from importlib.metadata import version

    import torch

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.split() == ["mlp-mixer", version("mlp-mixer"), "(torch", f"{torch.__version__})"]


# What the command line's help and usage errors must not import: each costs seconds of CPU before a word is shown
HEAVY = ("torch", "torchvision", "numpy", "PIL", "fastapi", "onnx", "webdataset", "matplotlib")


def _exit_and_heavy_modules(argv: list[str]) -> tuple[int, list[str]]:
    """``main(argv)``'s exit code in a fresh interpreter, and the heavy packages loaded by then."""
    code = f"""
import sys
from mlp_mixer.commands import main
try:
    code = main({argv!r})
except SystemExit as exit:
    code = exit.code
print(code)
print(' '.join(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    exit_code, loaded = result.stdout.splitlines()[-2:]
    return int(exit_code), loaded.split()


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["--help"], 0),
        ([], 2),
        (["--no-such-flag"], 2),
        *[([verb, "--help"], 0) for verb in VERBS],
        *[([verb, "--no-such-flag"], 2) for verb in VERBS],
        (["models", "--image-size", "big"], 2),  # a bad int
        (["predict", "photo.jpg"], 2),  # a missing required argument (--checkpoint)
        (["resize", "a.pt", "out"], 2),  # --image-size is required
        (["export", "--checkpoint", "c.pt", "m.onnx", "--format", "tflite"], 2),  # a bad choice
    ],
    ids=lambda value: " ".join(value) or "(nothing)" if isinstance(value, list) else None,
)
def test_help_and_usage_errors_import_no_heavy_package(argv, expected):
    """``mlp-mixer --help``, a verb's ``--help`` and a mistyped command answer at once: no torch, no numpy."""
    exit_code, loaded = _exit_and_heavy_modules(argv)
    assert exit_code == expected
    assert loaded == []


# What a verb must not load unless it uses it: torchvision's package __init__ alone pulls torchvision.models ->
# ops -> all of torch._dynamo (about as much CPU as torch itself); the others belong to one verb each.
NOT_NEEDED = ("torchvision", "torch._dynamo", "sympy", "fastapi", "onnx", "onnxruntime", "webdataset", "matplotlib")


def _loaded_by(argv: list[str], cwd: Path) -> tuple[int, set[str]]:
    code = f"""
import sys
from mlp_mixer.commands import main
code = main({argv!r})
print(code)
print(' '.join(sorted({{h for h in {NOT_NEEDED!r} for m in sys.modules if m == h or m.startswith(h + '.')}})))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=cwd)
    assert result.returncode == 0, result.stderr
    exit_code, loaded = result.stdout.splitlines()[-2:]
    return int(exit_code), set(loaded.split())


@pytest.mark.parametrize(
    "argv,allowed",
    [
        (["predict", "d.png", "--checkpoint", "ck.pt"], set()),
        (["predict", "d.jpg", "--checkpoint", "ck.pt"], set()),  # JPEG too: Pillow's libjpeg-turbo
        (["predict", "d.png", "--checkpoint", "nowhere/best.pt"], set()),
        (["convert", "ck.pt", "out"], set()),
        (["resize", "ck.pt", "out.pt", "--image-size", "32"], set()),
    ],
    ids=lambda value: " ".join(value) if isinstance(value, list) else None,
)
def test_each_verb_loads_only_what_it_uses(tmp_path, model, argv, allowed):
    """Predicting one image costs about 1.3x ``import torch`` (docs/reliability.md, Start-up), not 2.2x."""
    from PIL import Image

    from mlp_mixer.weights.checkpoint import save_checkpoint

    save_checkpoint(model, tmp_path / "ck.pt")
    for name in ("d.png", "d.jpg"):
        Image.new("RGB", (28, 28), (200, 30, 60)).save(tmp_path / name)
    exit_code, loaded = _loaded_by(argv, tmp_path)
    assert exit_code == (2 if "nowhere/best.pt" in argv else 0)
    assert loaded <= allowed, f"{' '.join(argv)} loaded {sorted(loaded - allowed)}"


def test_a_checkpoint_that_names_nothing_is_answered_before_torch_loads():
    exit_code, loaded = _exit_and_heavy_modules(["predict", "d.png", "--checkpoint", "nowhere/best.pt"])
    assert exit_code == 2 and loaded == []
