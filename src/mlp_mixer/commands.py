"""CLI wrappers for ``models``, ``summary`` and ``graph`` (the work is in :mod:`mlp_mixer.summary`)."""

from __future__ import annotations

import argparse

from .cli import add_model_arguments, model_config_from_args
from .model import MLPMixer
from .summary import format_variants, summary, variants_table, write_graph


def add_models_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image-size", type=int, default=224)


def run_models(args: argparse.Namespace) -> int:
    print(format_variants(variants_table(args.image_size)))
    return 0


def add_summary_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=1)


def run_summary(args: argparse.Namespace) -> int:
    config = model_config_from_args(args)
    model = MLPMixer(**config)
    image_size = model.image_size
    print(summary(model, (args.batch_size, model.in_channels, *image_size)))
    return 0


def add_graph_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--logdir", default="logs", help="TensorBoard log directory (default: logs)")


def run_graph(args: argparse.Namespace) -> int:
    logdir = write_graph(MLPMixer(**model_config_from_args(args)), args.logdir)
    print(f"graph written to {logdir}; view it with: tensorboard --logdir {logdir}")
    return 0
