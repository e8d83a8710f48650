"""``mlp-mixer shard``: write a dataset as WebDataset tar shards with an index (:func:`mlp_mixer.data.write_shards`)."""

from __future__ import annotations

import argparse

HELP = "write a dataset (folder, CIFAR, Hugging Face, the embedded MNIST) as WebDataset tar shards with index.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..data.shards import DEFAULT_SHARD_SIZE, SPLITS

    parser.add_argument(
        "src",
        metavar="SRC",
        help="what train --data reads: an ImageFolder root, a CIFAR folder, a Hugging Face dataset (hf:owner/name, "
        "save_to_disk folder, Parquet), or 'embedded' (MNIST)",
    )
    parser.add_argument("out", metavar="OUT", help="folder for the shards and their index.json (created)")
    parser.add_argument(
        "--shard-size",
        default=DEFAULT_SHARD_SIZE,
        help="per shard: auto (at most 256MB, at least 64 shards where the data allow), a size (1GB, 256MB) or a "
        "number of images",
    )
    parser.add_argument("--split", choices=SPLITS, default=None, help="write one split only (default: train and val)")
    parser.add_argument("--val-fraction", type=float, default=0.1, help="held out of a folder without val/")
    parser.add_argument("--workers", type=int, default=None, help="processes reading and checking the images "
                        "(default: one per core, at most 4)")  # fmt: skip
    parser.add_argument(
        "--max-size",
        type=int,
        default=None,
        metavar="N",
        help="store each image resized so its shorter side is at most N (Lanczos, JPEG quality 90; never upscaled): "
        "less to decode each epoch, at a fixed maximum resolution (default: the original bytes)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..data.shard_writer import write_shards
    from ..utils.cores import default_workers

    workers = default_workers() if args.workers is None else args.workers
    index = write_shards(
        args.src,
        args.out,
        args.split,
        args.shard_size,
        args.val_fraction,
        None,
        workers,
        not args.no_progress,
        args.max_size,
    )
    for name, split in index["splits"].items():
        if "shard_size" in split and (args.split is None or name == args.split):
            print(f"{name}: --shard-size auto chose {split['shard_size']}")
        print(
            f"{name}: {split['images']} images in {len(split['shards'])} shard(s), {split['skipped']} unreadable "
            f"skipped" + (f" (e.g. {split['skipped_files'][0]})" if split["skipped"] else "")
        )
    if args.max_size:
        print(f"images stored with the shorter side at most {args.max_size} (larger ones resized, JPEG quality 90)")
    print(
        f"index: {args.out}/index.json ({len(index['classes'])} classes); train with: mlp-mixer train --data {args.out}"
    )
    return 0
