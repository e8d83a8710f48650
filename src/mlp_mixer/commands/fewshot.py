"""``mlp-mixer fewshot``: the paper's few-shot linear evaluation (:func:`mlp_mixer.analysis.fewshot.fewshot`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from .common import add_checkpoint_argument, add_device_argument, ints

HELP = "few-shot linear evaluation on frozen features"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..analysis.options import L2_REG

    add_checkpoint_argument(parser)
    parser.add_argument(
        "--data",
        default=None,
        help="ImageFolder root (train/ and val/), CIFAR folder, shards, or a Hugging Face dataset (hf:owner/name, a "
        "save_to_disk folder, Parquet; ?split=&val=&image=&label=&streaming=1) (default: embedded MNIST)",
    )
    parser.add_argument("--shots", type=ints("--shots"), default=[1, 5, 10], help="images per class, comma-separated")
    parser.add_argument("--seeds", type=int, default=5, help="draws per shot count")
    parser.add_argument("--l2-reg", type=float, default=L2_REG, help="ridge penalty")
    parser.add_argument("--block", type=int, default=None, help="features after this block (default: pre-logits)")
    parser.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader processes (default: one per core, <= 4)")
    add_device_argument(parser)
    parser.add_argument("--amp", action="store_true", help="bf16 autocast where the hardware supports it natively")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the report as JSON ('-': stdout) "
                        "(default: none)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from ..analysis.fewshot import fewshot, format_report
    from ..utils.files import write_json

    report = fewshot(
        args.checkpoint,
        args.data,
        args.shots,
        args.seeds,
        l2_reg=args.l2_reg,
        block=args.block,
        batch_size=args.batch_size,
        device=args.device,
        workers=args.workers,
        amp=args.amp,
    )
    if args.json == "-":
        print(json.dumps(report, indent=2))
        return 0
    print(format_report(report))
    if args.json:
        write_json(Path(args.json), report)
        print(f"report written to {args.json}")
    return 0
