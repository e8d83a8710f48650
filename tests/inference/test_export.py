"""export: each format is run by its own runtime at two batch sizes and compared with PyTorch."""

import json

import onnx
import onnxruntime as ort
import pytest
import torch
from helpers import CLASSES, PREPROCESSING

from mlp_mixer import MLPMixer
from mlp_mixer.commands import main
from mlp_mixer.inference.export import export, metadata_path


@pytest.fixture(scope="module")
def onnx_file(checkpoint, tmp_path_factory):
    path, difference = export(checkpoint, tmp_path_factory.mktemp("onnx") / "mixer.onnx", "onnx")
    assert difference is not None and difference <= 1e-4
    return path


def inputs(batch: int) -> torch.Tensor:
    return torch.randn(batch, 3, 16, 16, generator=torch.Generator().manual_seed(batch))


def reference(model: MLPMixer, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)


@pytest.mark.slow
def test_onnx_runs_in_onnxruntime_with_a_dynamic_batch(model, onnx_file):
    (graph_input,) = onnx.load(str(onnx_file)).graph.input
    batch_dim = graph_input.type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # symbolic, not fixed to the example's 2
    session = ort.InferenceSession(str(onnx_file), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        x = inputs(batch)
        (logits,) = session.run(None, {"images": x.numpy()})
        assert logits.shape == (batch, 10)
        assert (torch.from_numpy(logits) - reference(model, x)).abs().max() <= 1e-4


@pytest.mark.slow
def test_onnx_metadata_makes_the_file_usable_alone(onnx_file, checkpoint):
    meta = json.loads(metadata_path(onnx_file).read_text())
    assert meta["classes"] == CLASSES
    assert meta["preprocessing"] == PREPROCESSING.to_dict()
    assert meta["input"]["name"] == "images" and meta["output"]["name"] == "logits"
    assert meta["model_config"]["dim"] == 32 and meta["source"] == str(checkpoint)
    assert sorted(p.name for p in onnx_file.parent.iterdir()) == ["mixer.onnx", "mixer.onnx.json"]  # no scratch


def test_torchscript_round_trip(model, checkpoint, tmp_path):
    path, _ = export(checkpoint, tmp_path / "mixer.pt", "torchscript")
    loaded = torch.jit.load(str(path))
    for batch in (1, 5):
        x = inputs(batch)
        assert (loaded(x) - reference(model, x)).abs().max() <= 1e-4
    assert json.loads(metadata_path(path).read_text())["classes"] == CLASSES


def test_exported_program_round_trip(model, checkpoint, tmp_path):
    path, _ = export(checkpoint, tmp_path / "mixer.pt2", "exported-program")
    loaded = torch.export.load(str(path)).module()
    for batch in (1, 5):
        x = inputs(batch)
        assert (loaded(x) - reference(model, x)).abs().max() <= 1e-4
    assert json.loads(metadata_path(path).read_text())["format"] == "exported-program"


@pytest.mark.slow
def test_onnx_int8_is_close_and_keeps_token_mixing_float(model, checkpoint, tmp_path):
    path, difference = export(checkpoint, tmp_path / "int8.onnx", "onnx", int8=True)
    graph = onnx.load(str(path)).graph
    ops = [node.op_type for node in graph.node]
    # 2 blocks x 2 channel-mixing Linears + head are int8; the 2 x 2 token-mixing ones (W @ x) stay float.
    assert ops.count("MatMulInteger") == 5 and ops.count("MatMul") == 4
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = inputs(64)
    expected = reference(model, x)
    (logits,) = session.run(None, {"images": x.numpy()})
    error = (torch.from_numpy(logits) - expected).abs().max()
    assert 0 < error < 0.05 * expected.abs().max()  # int8 is close, and really is int8 (not equal)
    assert (torch.from_numpy(logits).argmax(1) == expected.argmax(1)).float().mean() >= 0.9
    assert difference is not None and difference > 0  # export measured the int8 error instead of rejecting it


def test_cli_export_prints_the_verified_difference(checkpoint, tmp_path, capsys):
    out = tmp_path / "cli" / "mixer.pt2"
    assert main(["export", "--checkpoint", str(checkpoint), "--format", "exported-program", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "verified (<= 0.0001): max abs logit difference vs PyTorch" in printed
    assert out.is_file() and metadata_path(out).is_file()


@pytest.mark.parametrize(
    "flags,message",
    [
        (["--format", "torchscript", "--int8"], "--int8 is available for --format onnx"),
        (["--format", "pickle"], "invalid choice: 'pickle'"),
    ],
)
def test_cli_export_errors(checkpoint, tmp_path, flags, message, capsys):
    argv = ["export", "--checkpoint", str(checkpoint), str(tmp_path / "m"), *flags]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_an_export_that_disagrees_is_not_written(checkpoint, tmp_path, monkeypatch):
    import mlp_mixer.inference.export as export_module

    real = export_module.load_exported

    def off_by_a_little(path, format):
        run = real(path, format)
        return lambda x: run(x) + 1e-3

    monkeypatch.setattr(export_module, "load_exported", off_by_a_little)
    with pytest.raises(ValueError, match="differs from PyTorch by 0.001"):
        export(checkpoint, tmp_path / "bad.pt", "torchscript")
    assert list(tmp_path.iterdir()) == []  # neither the file, its .json nor the scratch folder


def test_missing_checkpoint_is_one_line(tmp_path, capsys):
    assert main(["export", "--checkpoint", str(tmp_path / "none.pt"), str(tmp_path / "m.onnx")]) == 2
    assert "does not exist" in capsys.readouterr().err
