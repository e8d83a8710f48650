"""What several verbs' command lines share: the help format, the model-size options and value parsers."""

from __future__ import annotations

import argparse
from typing import Any

from ..model.variants import SEED, VARIANTS, check_model_size, variant_config
from ..utils.cores import fit_to_cores
from ..utils.sources import check_source

MODEL_SIZE_FIELDS = (
    "dim",
    "depth",
    "token_dim",
    "channel_dim",
    "patch_size",
    "image_size",
    "in_channels",
    "num_classes",
)


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default: ``(default: X)``, or ``off`` for a switch; help that already
    says its default (settings resolved later, e.g. from the data) is left as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if not action.option_strings or action.required or "default" in text or action.default is argparse.SUPPRESS:
            return text
        if action.nargs == 0 and action.default in (False, None):  # store_true and --x/--no-x switches
            return f"{text} (default: off)"
        if action.default is None:
            return text  # the help must say what leaving it out means (tests check every option)
        default = action.default
        shown = ",".join(map(str, default)) if isinstance(default, list | tuple) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"  # argparse %-formats the help


def add_checkpoint_argument(parser: argparse.ArgumentParser) -> None:
    """``--checkpoint``: whatever :func:`~mlp_mixer.weights.from_pretrained` reads, the same for every verb."""
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="a run folder (its best.pt), a .pt checkpoint, a pretrained folder, an official .npz, timm weights, "
        "a Hub id or a URL",
    )


def add_device_argument(parser: argparse.ArgumentParser) -> None:
    """``--device``, as :func:`mlp_mixer.utils.devices.resolve_device` reads it."""
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA, else MPS, else CPU), cpu, cuda, cuda:N or mps (default: auto)"
    )


def add_model_arguments(parser: argparse.ArgumentParser, variant: bool = True, defaults: str = "") -> None:
    """The seed's constructor options; with none given, the seed's configuration (or ``defaults``) is used."""
    if variant:
        parser.add_argument(
            "variant", nargs="?", help=f"a paper variant: {', '.join(VARIANTS)} (default: the seed's configuration)"
        )
    group = parser.add_argument_group("model size (override the variant or the seed's configuration)")
    base = SEED if not defaults else {}
    for field in MODEL_SIZE_FIELDS:
        shown = f"default: {base[field]}" if field in base else defaults or "default: from the variant"
        group.add_argument(f"--{field.replace('_', '-')}", type=int, default=None, help=f"{field} ({shown})")
    group.add_argument(
        "--gelu", choices=["tanh", "exact"], default=None, help="tanh (official) or exact (timm) (default: tanh)"
    )


def model_config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Constructor arguments from :func:`add_model_arguments` options, over a variant or the seed's."""
    config = variant_config(args.variant) if getattr(args, "variant", None) else dict(SEED)
    for key in (*MODEL_SIZE_FIELDS, "gelu"):
        if getattr(args, key, None) is not None:
            config[key] = getattr(args, key)
    sizes = [config[k] for k in MODEL_SIZE_FIELDS]
    if all(isinstance(v, int) and v > 0 for v in sizes) and all(v % config["patch_size"] == 0 for v in _pair(config)):
        check_model_size(config)  # before torch loads; other bad values are named by the constructor
    return config


def _pair(config: dict[str, Any]) -> tuple[int, int]:
    size = config["image_size"]
    return (size, size) if isinstance(size, int) else tuple(size)


def preflight(args: argparse.Namespace) -> None:
    """The checks that need no torch, run before a verb's work (and its imports) starts: a ``--checkpoint`` that
    names nothing, and ``--threads`` / ``--workers`` held to the machine's cores (with a note on stderr)."""
    import sys

    if isinstance(getattr(args, "checkpoint", None), str):
        check_source(args.checkpoint)
    for name in ("threads", "workers"):
        value, note = fit_to_cores(getattr(args, name, None), f"--{name}")
        if note:
            print(f"mlp-mixer {args.command}: note: {note}", file=sys.stderr)
            setattr(args, name, value)


def parse_size(text: str) -> int | tuple[int, int]:
    """``"224"`` -> 224; ``"224x160"`` -> (224, 160)."""
    parts = text.lower().replace(",", "x").split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--image-size must be N or HxW, got {text!r}") from None
    if len(sizes) not in (1, 2):
        raise argparse.ArgumentTypeError(f"--image-size must be N or HxW, got {text!r}")
    return sizes[0] if len(sizes) == 1 else (sizes[0], sizes[1])


def names(text: str) -> list[str]:
    """``"a, b,c"`` -> ``["a", "b", "c"]``."""
    return [name.strip() for name in text.split(",") if name.strip()]


def ints(option: str) -> Any:
    """An argparse type for comma-separated integers, whose error names ``option``."""

    def parse(text: str) -> list[int]:
        try:
            values = [int(v) for v in names(text)]
        except ValueError:
            message = f"{option} expects comma-separated integers like 1,5,10, got {text!r}"
            raise argparse.ArgumentTypeError(message) from None
        if not values:
            raise argparse.ArgumentTypeError(f"{option} is empty")
        return values

    return parse
