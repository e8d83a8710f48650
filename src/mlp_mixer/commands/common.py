"""What several verbs' command lines share: the help format, the model-size options and value parsers."""

from __future__ import annotations

import argparse
from typing import Any

from ..model.variants import SEED, VARIANTS, variant_config

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
    return config


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
