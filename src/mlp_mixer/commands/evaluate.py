"""``mlp-mixer eval``: evaluate a checkpoint (:func:`mlp_mixer.analysis.evaluate.evaluate`)."""

from __future__ import annotations

import argparse

from .common import add_checkpoint_argument, add_device_argument

HELP = "evaluate a checkpoint: top-1/top-5, per-class accuracy, confusion matrix"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_argument(parser)
    parser.add_argument(
        "--data",
        help="ImageFolder root, folder of class folders, CIFAR folder, shards (their val split, or a brace pattern), "
        "or a Hugging Face dataset (hf:owner/name, save_to_disk folder, Parquet: its held-out split, ?val=SPLIT) "
        "(default: the checkpoint's held-out split)",
    )
    parser.add_argument("--output", help="report folder (default: <checkpoint folder>/eval)")
    parser.add_argument("--batch-size", type=int, default=256, help="images per forward pass")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader processes (default: one per core, <= 4)")
    add_device_argument(parser)


def run(args: argparse.Namespace) -> int:
    from ..analysis.evaluate import evaluate

    report = evaluate(args.checkpoint, args.data, args.output, args.batch_size, args.workers, args.device)
    width = max(len(name) for name in report["per_class"]) if report["per_class"] else 5
    print(f"{'class':<{width}}  accuracy  images")
    for name, row in report["per_class"].items():
        print(f"{name:<{width}}  {100 * row['accuracy']:7.2f}%  {row['images']:6d}")
    if report["skipped_images"]:
        print(f"skipped {len(report['skipped_images'])} unreadable image(s), e.g. {report['skipped_images'][0]}")
    figure = f", {report['output']}/confusion_matrix.png" if report["confusion_matrix"] is not None else ""
    print(f"report: {report['output']}/eval.json{figure}")
    if "confusion_matrix_omitted" in report:
        print(f"no confusion matrix: {report['confusion_matrix_omitted']}")
    print(
        f"top-1 {100 * report['top1']:.2f}%  top-5 {100 * report['top5']:.2f}%  loss {report['loss']:.4f}  on "
        f"{report['images']} images ({report['split']})"
    )
    return 0
