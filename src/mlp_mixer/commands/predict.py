"""``mlp-mixer predict``: classify image files (:class:`mlp_mixer.predict.Predictor`)."""

from __future__ import annotations

import argparse
import json

HELP = "classify image files, folders or globs with a checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (recursive) or glob patterns")
    parser.add_argument(
        "--checkpoint", required=True, help="a run folder, a .pt checkpoint or a pretrained source (gives classes)"
    )
    parser.add_argument("--topk", type=int, default=5, help="classes per image")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of one line per file")
    parser.add_argument("--device", default="auto", help="auto (CUDA, else MPS, else CPU), cpu, cuda:0, ...")


def run(args: argparse.Namespace) -> int:
    """Print the predictions; exit code 1 when any input failed, so scripts notice."""
    from ..predict import Predictor, format_predictions

    predictor = Predictor(args.checkpoint, device=args.device)
    predictions = predictor.predict(args.paths, topk=args.topk, batch_size=args.batch_size)
    if args.json:
        print(json.dumps([p.to_dict() for p in predictions], indent=2))
    else:
        print(format_predictions(predictions))
    return 1 if any(p.error is not None for p in predictions) else 0
