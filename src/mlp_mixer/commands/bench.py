"""``mlp-mixer bench``: speed and memory against the peers (:func:`mlp_mixer.bench.bench`)."""

from __future__ import annotations

import argparse

from .common import add_device_argument, ints, names

HELP = "benchmark speed and memory against timm and other peers"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..bench.options import MODELS, MODES, TASKS

    parser.add_argument("--quick", action="store_true", help="a tiny configuration, 2 repeats: a smoke test")
    parser.add_argument(
        "--configs", type=names, help="comma-separated: tiny, small (the seed's), S/16, B/16, ... (default: the plan's)"
    )
    parser.add_argument("--models", type=names, help=f"comma-separated, of {', '.join(MODELS)} (default: the plan's)")
    parser.add_argument("--modes", type=names, help=f"comma-separated, of {', '.join(MODES)} (default: the plan's)")
    parser.add_argument("--tasks", type=names, help=f"comma-separated, of {', '.join(TASKS)} (default: the plan's)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per call for infer/train/memory")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per model (medians are reported)")
    add_device_argument(parser)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--output", default="benchmarks/results", help="directory for JSON, CSV and PNG")
    parser.add_argument("--no-plot", action="store_true", help="skip the PNG chart")
    parser.add_argument(
        "--keep-freed-memory",
        action="store_true",
        help="glibc: reuse freed memory instead of fresh pages per tensor (like jemalloc); results get a _kept suffix",
    )
    parser.add_argument(
        "--targets",
        default=None,
        help="TOML file of the performance targets to judge (default: benchmarks/targets.toml in the current"
        " directory, else in the source checkout; none found: no targets judged)",
    )
    parser.add_argument(
        "--scaling", action="store_true", help="instead: Mixer-B/16 vs ViT-B/16 against image size (batch 4)"
    )
    parser.add_argument(
        "--resolutions", type=ints("--resolutions"), default=[64, 128, 224, 320, 448], help="for --scaling"
    )


def run(args: argparse.Namespace) -> int:
    from ..bench import bench

    _, report, paths = bench(
        quick=args.quick,
        configs=args.configs,
        models=args.models,
        modes=args.modes,
        tasks=args.tasks,
        batch_size=args.batch_size,
        repeats=args.repeats,
        device=args.device,
        threads=args.threads,
        output=args.output,
        plot=not args.no_plot,
        keep_freed=args.keep_freed_memory,
        scaling_study=args.scaling,
        resolutions=args.resolutions,
        targets=args.targets,
    )
    print(report)
    print("written: " + ", ".join(str(p) for p in paths))
    return 0
