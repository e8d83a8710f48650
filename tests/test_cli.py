"""The foundation commands run end to end, as a user runs them."""

import subprocess
import sys
from pathlib import Path

import pytest

from mlp_mixer.commands import main

TINY_FLAGS = [
    "--dim",
    "32",
    "--depth",
    "2",
    "--token-dim",
    "16",
    "--channel-dim",
    "64",
    "--patch-size",
    "4",
    "--image-size",
    "16",
    "--num-classes",
    "10",
]


def test_models_lists_variants(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "B/16" in out and "59,880,472" in out and "12.60" in out and "H/14" in out


def test_summary_defaults_to_the_seed(capsys):
    assert main(["summary"]) == 0
    out = capsys.readouterr().out
    for count in ["393,728", "50,432", "50,372", "1,050,624", "1,049,088", "513,000", "Total params: 3,110,316"]:
        assert count in out
    assert "[1, 512, 14, 14]" in out and "[1, 196, 2048]" in out  # output shapes
    assert "act (GELU)" in out and "[1, 256, 512]" in out  # every layer of the seed's table is shown


def test_summary_with_variant_and_options(capsys):
    assert main(["summary", "S/32", "--image-size", "64", "--num-classes", "10"]) == 0
    out = capsys.readouterr().out
    assert "[1, 10]" in out and "[1, 4, 512]" in out


def test_summary_b16_macs(capsys):
    assert main(["summary", "B/16"]) == 0
    assert "Total MACs: 12,601,767,936" in capsys.readouterr().out


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


def test_graph_is_readable_by_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    assert main(["graph", "--logdir", str(tmp_path), *TINY_FLAGS]) == 0
    accumulator = EventAccumulator(str(tmp_path))
    accumulator.Reload()
    graph = accumulator.Graph()
    ops = {node.op for node in graph.node}
    assert any("conv" in op.lower() for op in ops) and any("linear" in op.lower() for op in ops)
    assert len(graph.node) > 20


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
