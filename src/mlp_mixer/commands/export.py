"""``mlp-mixer export``: ONNX, TorchScript or ExportedProgram, verified (:func:`mlp_mixer.inference.export.export`)."""

from __future__ import annotations

import argparse

from ..inference.options import EXPORT_FORMATS as FORMATS
from .common import add_checkpoint_argument

HELP = "export a checkpoint to ONNX, TorchScript or an ExportedProgram"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", metavar="OUT", help="file to write, e.g. model.onnx, model.pt, model.pt2")
    add_checkpoint_argument(parser)
    parser.add_argument("--format", choices=FORMATS, default="onnx", help="what to write")
    parser.add_argument("--int8", action="store_true", help="ONNX only: dynamic int8 weights (onnxruntime)")
    parser.add_argument("--no-verify", action="store_true", help="skip running the export to compare with PyTorch")


def run(args: argparse.Namespace) -> int:
    from ..inference.export import FP32_TOLERANCE, VERIFY_BATCH_SIZES, export, metadata_path

    path, difference = export(args.checkpoint, args.output, args.format, int8=args.int8, verify=not args.no_verify)
    print(f"wrote {path} and {metadata_path(path)}")
    if difference is not None:
        batches = " and ".join(map(str, VERIFY_BATCH_SIZES))
        check = "measured (int8 is meant to differ)" if args.int8 else f"verified (<= {FP32_TOLERANCE})"
        print(f"{check}: max abs logit difference vs PyTorch {difference:.3g} at batch sizes {batches}")
    return 0
