"""``mlp-mixer summary``: the layer table of a model (:func:`mlp_mixer.analysis.summary.summary`)."""

from __future__ import annotations

import argparse

from .common import add_model_arguments, model_config_from_args

HELP = "layer-by-layer table: output shapes, parameters, MACs"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser)
    parser.add_argument("--batch-size", type=int, default=1, help="batch size of the input the table assumes")


def run(args: argparse.Namespace) -> int:
    from ..analysis.summary import summary
    from ..model.mixer import MLPMixer

    model = MLPMixer(**model_config_from_args(args))
    print(summary(model, (args.batch_size, model.in_channels, *model.image_size)))
    return 0
