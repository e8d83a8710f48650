"""``mlp-mixer convert``: weights between layouts (:func:`mlp_mixer.weights.load.convert`)."""

from __future__ import annotations

import argparse
import json

from ..weights.options import CONVERT_FORMATS as FORMATS
from .common import parse_size

HELP = "convert official .npz or timm weights to a save_pretrained directory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", help="official .npz, timm weights or Hub snapshot, a Hub id, a URL, or our weights")
    parser.add_argument("output", help="output directory (or .npz file with --to npz)")
    parser.add_argument("--to", choices=FORMATS, default="mlp-mixer", help="output layout")
    parser.add_argument(
        "--image-size", type=parse_size, default=None, help="N or HxW, if the grid is not square (default: inferred)"
    )


def run(args: argparse.Namespace) -> int:
    from ..weights.load import convert

    model = convert(args.source, args.output, args.to, args.image_size)
    print(f"converted {args.source} -> {args.output} ({args.to} layout): {json.dumps(model.config())}")
    return 0
