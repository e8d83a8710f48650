"""``mlp-mixer viz``: pictures of what a checkpoint learned (:func:`mlp_mixer.analysis.viz.viz`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import add_checkpoint_argument, ints

HELP = "plot token-mixing weights and training curves of a checkpoint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_argument(parser)
    parser.add_argument("out_dir", metavar="OUT_DIR", help="folder for the PNGs and index.md")
    parser.add_argument(
        "--blocks",
        type=ints("--blocks"),
        default=None,
        help="token-mixing blocks to draw, e.g. 0,1,-1 (default: first, middle, last)",
    )
    parser.add_argument("--max-units", type=int, default=64, help="units and stem filters per figure; 0 for all")


def run(args: argparse.Namespace) -> int:
    from ..analysis.viz import viz

    for path in viz(args.checkpoint, args.out_dir, args.blocks, args.max_units):
        print(path)
    print(f"index: {Path(args.out_dir) / 'index.md'}")
    return 0
