"""``mlp-mixer predict``: classify image files (:class:`mlp_mixer.inference.predict.Predictor`)."""

from __future__ import annotations

import argparse
import json

from .common import add_checkpoint_argument, add_device_argument

HELP = "classify image files, folders or globs with a checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (recursive) or glob patterns")
    add_checkpoint_argument(parser)
    parser.add_argument("--topk", type=int, default=5, help="classes per image")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of one line per file")
    add_device_argument(parser)


def run(args: argparse.Namespace) -> int:
    """Print the predictions; exit code 1 when any input failed, so scripts notice."""
    from ..inference.predict import Predictor, format_predictions

    predictor = Predictor(args.checkpoint, device=args.device)
    predictions = predictor.predict(args.paths, topk=args.topk, batch_size=args.batch_size)
    if args.json:
        print(json.dumps([p.to_dict() for p in predictions], indent=2))
    else:
        print(format_predictions(predictions))
    return 1 if any(p.error is not None for p in predictions) else 0
