"""Export a checkpoint to ONNX, TorchScript or a ``torch.export`` ExportedProgram, with verified parity.

Every format takes images (batch, in_channels, H, W) with a dynamic batch axis and returns logits. Next to
the file, ``OUT + ".json"`` stores the class names, the preprocessing and the architecture, so the exported
file is usable without this package's checkpoint. Each export is run once more after writing (onnxruntime,
``torch.jit.load``, ``torch.export.load``) on random images at two batch sizes and compared with PyTorch.

ONNX uses ``torch.onnx.export(dynamo=True)``, the default exporter since torch 2.9: it goes through
``torch.export`` (the same graph as the ``.pt2`` format), takes a symbolic batch dimension, and the legacy
TorchScript exporter warns that it will be removed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..model.mixer import MLPMixer
from ..weights.load import load_model
from .options import EXPORT_FORMATS as FORMATS

INPUT_NAME, OUTPUT_NAME = "images", "logits"
ONNX_PROTOBUF_LIMIT = 2**31  # larger models keep their weights in an external ``.data`` file
FP32_TOLERANCE = 1e-4  # max abs logit difference allowed between an fp32 export and PyTorch
VERIFY_BATCH_SIZES = (1, 3)  # 1 and not-the-example-size: shows the batch axis is really dynamic


def metadata_path(output: str | Path) -> Path:
    """Where the class names and preprocessing of an export are stored: ``OUT + ".json"``."""
    return Path(f"{output}.json")


def _export_to(model: MLPMixer, path: Path, format: str) -> None:
    example = torch.zeros(2, model.in_channels, *model.image_size)  # batch 2: export must not specialise on 1
    batch = torch.export.Dim("batch", min=1)
    if format == "onnx":
        program = torch.onnx.export(
            model,
            (example,),
            None,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes={"x": {0: batch}},
            dynamo=True,
            verbose=False,
        )
        size = sum(p.numel() * p.element_size() for p in model.parameters())
        program.save(str(path), external_data=size >= ONNX_PROTOBUF_LIMIT)
    elif format == "torchscript":
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated")  # asked for by name
            torch.jit.save(torch.jit.trace(model, example), str(path))
    elif format == "exported-program":
        program = torch.export.export(model, (example,), dynamic_shapes={"x": {0: batch}})
        torch.export.save(program, str(path))
    else:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")


def load_exported(path: str | Path, format: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """A function images -> logits that runs an exported file (onnxruntime for ONNX), for checks and use."""
    path = str(path)
    if format == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        return lambda x: torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.cpu().numpy()})[0])
    if format == "torchscript":
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated")
            module = torch.jit.load(path, map_location="cpu")
        return lambda x: module(x).detach()
    if format == "exported-program":
        module = torch.export.load(path).module()
        return lambda x: module(x).detach()
    raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {format!r}")


@torch.inference_mode()
def max_abs_difference(
    model: MLPMixer, run: Callable[[torch.Tensor], torch.Tensor], batch_sizes: tuple[int, ...] = VERIFY_BATCH_SIZES
) -> float:
    """Largest absolute logit difference between ``run`` and ``model`` on seeded random images."""
    generator = torch.Generator().manual_seed(0)
    worst = 0.0
    for b in batch_sizes:
        x = torch.randn(b, model.in_channels, *model.image_size, generator=generator)
        worst = max(worst, float((run(x).float() - model(x).float()).abs().max()))
    return worst


def quantize_onnx_int8(source: Path, target: Path) -> None:
    """onnxruntime's dynamic int8: int8 weights, activations quantized per batch, no calibration data.

    The quantizer converts MatMuls whose weight is the second operand (channel mixing, head) and the stem conv;
    the token-mixing MatMuls compute ``W @ x`` with the weight first, and it leaves those float, as
    ``quantize.quantize_dynamic_int8`` does.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # It logs a root-logger hint to run onnxruntime's pre-processing; that pass changes nothing for this graph.
    logging.disable(logging.WARNING)
    try:
        quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    finally:
        logging.disable(logging.NOTSET)


def _refuse_own_input(checkpoint: Path, output: Path) -> None:
    """``export --checkpoint ck.pt ck.pt`` would replace the training checkpoint with its export: refused."""
    from ..weights.checkpoint import resolve_checkpoint

    inputs = {checkpoint.resolve()}
    if checkpoint.exists():
        inputs |= {resolve_checkpoint(checkpoint).resolve()}
        if checkpoint.is_dir():
            inputs |= {p.resolve() for p in checkpoint.iterdir()}
    for target in (output, metadata_path(output)):
        if target.resolve() in inputs:
            raise ValueError(f"output {output} would overwrite the checkpoint it exports ({target}); name another file")


def export(
    checkpoint: str | Path | MLPMixer,
    output: str | Path,
    format: str = "onnx",
    int8: bool = False,
    verify: bool = True,
) -> tuple[Path, float | None]:
    """Export a checkpoint and write ``OUT + ".json"`` beside it; files appear only once complete.

    Args:
        checkpoint: anything :func:`mlp_mixer.from_pretrained` reads, or a model (its ``classes`` and
            ``preprocessing`` are written beside the export).
        output: the file to write (``.onnx``, ``.pt`` for TorchScript, ``.pt2`` for an ExportedProgram by custom).
        format: one of ``FORMATS``.
        int8: ONNX only: quantize the weights of the matrix multiplies to int8 with onnxruntime.
        verify: run the written file and compare its logits with PyTorch; an fp32 export further than
            ``FP32_TOLERANCE`` away is an error (int8 exports are only measured: they are meant to differ).

    Returns:
        ``(path, max_abs_difference)``; the difference is None when ``verify`` is False.
    """
    if format not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    if int8 and format != "onnx":
        raise ValueError(f"--int8 is available for --format onnx, got --format {format}")
    output = Path(output)
    if not isinstance(checkpoint, MLPMixer):
        _refuse_own_input(Path(checkpoint), output)
    model = (checkpoint if isinstance(checkpoint, MLPMixer) else load_model(checkpoint)).cpu().eval()
    if output.is_dir():
        raise ValueError(f"output {output} is a directory; give a file name such as {output / 'model.onnx'}")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}."))
    except OSError as err:  # name the file asked for, not the hidden scratch folder beside it
        raise PermissionError(f"cannot write {output}: {err.strerror or err} in {output.parent}") from err
    metadata: dict[str, Any] = {
        "format": format,
        "int8": int8,
        "input": {"name": INPUT_NAME, "shape": ["batch", model.in_channels, *model.image_size], "dtype": "float32"},
        "output": {"name": OUTPUT_NAME, "shape": ["batch", model.num_classes]},
        "classes": model.classes,
        "preprocessing": model.preprocessing.to_dict(),
        "model_config": model.config(),
        "source": model.source,
        "torch": torch.__version__,
    }
    # Everything is written in the scratch folder beside the output, then renamed: a crash leaves no half file.
    try:
        staged = scratch / output.name
        if int8:
            _export_to(model, scratch / "fp32.onnx", format)
            quantize_onnx_int8(scratch / "fp32.onnx", staged)
            (scratch / "fp32.onnx").unlink()
        else:
            _export_to(model, staged, format)
        difference = None
        if verify:
            difference = max_abs_difference(model, load_exported(staged, format))
            if not np.isfinite(difference) or (not int8 and difference > FP32_TOLERANCE):
                raise ValueError(
                    f"exported {format} differs from PyTorch by {difference:.3g} (max abs logit), "
                    f"more than {FP32_TOLERANCE}; not writing {output}"
                )
            metadata["verified_max_abs_difference"] = difference
        metadata["sha256"] = hashlib.sha256(staged.read_bytes()).hexdigest()  # which model file this .json describes
        metadata_path(staged).write_text(json.dumps(metadata, indent=2) + "\n")
        # The pair as a whole: the old .json goes first and the new one comes last, so a crash in between leaves a
        # model without a .json (visibly incomplete), never a model beside another model's classes.
        metadata_path(output).unlink(missing_ok=True)
        for file in sorted(scratch.iterdir(), key=lambda f: f.name == metadata_path(staged).name):
            os.replace(file, output.parent / file.name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return output, difference
