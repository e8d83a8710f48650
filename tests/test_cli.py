"""The command line itself, as a user runs it: one-line errors, the entry points, help and version (what each
verb does is tested beside its module)."""

import subprocess
import sys
from pathlib import Path

import pytest

from mlp_mixer.commands import main


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

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.split()[:2] == ["mlp-mixer", version("mlp-mixer")]
