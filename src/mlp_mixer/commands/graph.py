"""``mlp-mixer graph``: the model graph for TensorBoard (:func:`mlp_mixer.analysis.summary.write_graph`)."""

from __future__ import annotations

import argparse

from .common import add_model_arguments, model_config_from_args

HELP = "write the model graph for TensorBoard"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--logdir", default="logs", help="TensorBoard log directory")


def run(args: argparse.Namespace) -> int:
    from ..analysis.summary import write_graph
    from ..model.mixer import MLPMixer

    logdir = write_graph(MLPMixer(**model_config_from_args(args)), args.logdir)
    print(f"graph written to {logdir}; view it with: tensorboard --logdir {logdir}")
    return 0
