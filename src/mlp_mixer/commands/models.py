"""``mlp-mixer models``: the paper's variants (:func:`mlp_mixer.analysis.summary.variants_table`)."""

from __future__ import annotations

import argparse

HELP = "list the paper's variants with parameters and GMACs at 224"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image-size", type=int, default=224, help="input size for the GMACs column")


def run(args: argparse.Namespace) -> int:
    from ..analysis.summary import format_variants, variants_table

    print(format_variants(variants_table(args.image_size)))
    return 0
