"""``mlp-mixer resize``: a trained Mixer at a new resolution (:func:`mlp_mixer.weights.resize.resize_checkpoint`)."""

from __future__ import annotations

import argparse

from ..weights.options import RESIZE_METHODS as METHODS
from .common import parse_size

HELP = "change a trained Mixer's input resolution"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a run folder, a .pt checkpoint or any pretrained source")
    parser.add_argument("output", help="a save_pretrained directory, or a checkpoint file when it ends in .pt")
    parser.add_argument("--image-size", type=parse_size, required=True, help="new input size: N or HxW")
    parser.add_argument(
        "--method", choices=METHODS, default="auto", help="auto: blockdiag-strided for integer ratios, else interpolate"
    )


def run(args: argparse.Namespace) -> int:
    from ..weights.resize import resize_checkpoint

    old, new = resize_checkpoint(args.checkpoint, args.image_size, args.output, args.method)
    print(
        f"resized {args.checkpoint}: image {old.image_size} -> {new.image_size}, patches {old.num_patches} -> "
        f"{new.num_patches}, token_dim {old.token_dim} -> {new.token_dim} (--method {args.method}); written to "
        f"{args.output}"
    )
    return 0
