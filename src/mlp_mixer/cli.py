"""The ``mlp-mixer`` command: maps each verb to a module whose typed functions do the work.

For each verb, its module defines ``add_<verb>_arguments(parser)`` and ``run_<verb>(args) -> int``, thin
wrappers over typed functions a user can call from Python. Only the chosen verb's module is imported, so
``mlp-mixer models`` does not pay for importing the training stack.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

import torch

from . import __version__
from .variants import SEED, VARIANTS, variant_config

# verb: (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "models": ("mlp_mixer.commands", "list the paper's variants with parameters and GMACs at 224"),
    "summary": ("mlp_mixer.commands", "layer-by-layer table: output shapes, parameters, MACs"),
    "graph": ("mlp_mixer.commands", "write the model graph for TensorBoard"),
    "train": ("mlp_mixer.train", "train (and evaluate) a Mixer; no arguments: the embedded MNIST default"),
    "eval": ("mlp_mixer.evaluate", "evaluate a checkpoint: top-1/top-5, per-class accuracy, confusion matrix"),
    "predict": ("mlp_mixer.predict", "classify image files, folders or globs with a checkpoint"),
    "export": ("mlp_mixer.export", "export a checkpoint to ONNX, TorchScript or an ExportedProgram"),
    "convert": ("mlp_mixer.weights", "convert official .npz or timm weights to a save_pretrained directory"),
    "resize": ("mlp_mixer.resize", "change a trained Mixer's input resolution"),
    "bench": ("mlp_mixer.bench", "benchmark speed and memory against timm and other peers"),
    "viz": ("mlp_mixer.viz", "plot token-mixing weights and training curves of a checkpoint"),
    "fewshot": ("mlp_mixer.fewshot", "few-shot linear evaluation on frozen features"),
}

# Shown and caught as one line: these are the errors a user can act on (bad option, missing file).
USER_ERRORS = (ValueError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError)


def add_model_arguments(parser: argparse.ArgumentParser, variant: bool = True) -> None:
    """The seed's constructor options; with none given, the seed's configuration is used."""
    if variant:
        parser.add_argument("variant", nargs="?", help=f"a paper variant: {', '.join(VARIANTS)}")
    group = parser.add_argument_group("model size (override the variant or the seed's configuration)")
    for flag in ("dim", "depth", "token-dim", "channel-dim", "patch-size", "image-size", "in-channels", "num-classes"):
        group.add_argument(f"--{flag}", type=int, default=None)
    group.add_argument(
        "--gelu", choices=["tanh", "exact"], default=None, help="tanh (official, default) or exact (timm)"
    )


def model_config_from_args(args: argparse.Namespace, base: dict[str, Any] | None = None) -> dict[str, Any]:
    """Constructor arguments from ``add_model_arguments`` options, over a variant, ``base`` or the seed."""
    if getattr(args, "variant", None):
        config = variant_config(args.variant)
    else:
        config = dict(base if base is not None else SEED)
    for key in (
        "dim",
        "depth",
        "token_dim",
        "channel_dim",
        "patch_size",
        "image_size",
        "in_channels",
        "num_classes",
        "gelu",
    ):
        if getattr(args, key, None) is not None:
            config[key] = getattr(args, key)
    return config


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="mlp-mixer", description="MLP-Mixer for PyTorch.")
    parser.add_argument("--version", action="version", version=f"mlp-mixer {__version__} (torch {torch.__version__})")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    chosen = next((a for a in argv if not a.startswith("-")), None)
    module = None
    for verb, (module_name, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(verb, help=help_text, description=help_text)
        if verb == chosen:
            module = importlib.import_module(module_name)
            getattr(module, f"add_{verb}_arguments")(sub_parser)
    args = parser.parse_args(argv)
    if module is None:
        parser.print_help()
        return 2
    try:
        return int(getattr(module, f"run_{args.command}")(args) or 0)
    except USER_ERRORS as err:
        # One line, also when the message quotes a multi-line one (torch's load_state_dict lists every key).
        print(f"mlp-mixer {args.command}: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mlp-mixer {args.command}: interrupted", file=sys.stderr)
        return 130
