"""``mlp-mixer serve``: a checkpoint behind HTTP with dynamic batching (:mod:`mlp_mixer.inference.serve`)."""

from __future__ import annotations

import argparse
from types import ModuleType

from ..inference import options
from .common import add_checkpoint_argument, add_device_argument

HELP = "serve a checkpoint over HTTP with dynamic batching and a web page"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_checkpoint_argument(parser)
    parser.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 exposes the model, "
        "/v1/model and /metrics to the network without authentication: see docs/serve.md)",
    )
    parser.add_argument("--port", type=int, default=8000, help="TCP port (default: 8000)")
    parser.add_argument(
        "--max-batch-size", type=int, default=32, help="images per forward pass; 1 turns batching off (default: 32)"
    )
    parser.add_argument(
        "--max-wait-ms", type=float, default=5.0, help="how long a batch waits to fill up, in ms (default: 5)"
    )
    parser.add_argument(
        "--backend", choices=options.BACKENDS, default="torch", help="torch, or onnx via onnxruntime (default: torch)"
    )
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: the library's own)")
    add_device_argument(parser)  # the torch backend's
    parser.add_argument(
        "--max-body-mb",
        type=float,
        default=options.DEFAULT_MAX_BODY_MB,
        help=f"largest request body in MB (default: {options.DEFAULT_MAX_BODY_MB:g})",
    )
    parser.add_argument(
        "--max-pixels",
        type=int,
        default=options.DEFAULT_MAX_PIXELS,
        help=f"largest image, width x height, checked before decoding (default: {options.DEFAULT_MAX_PIXELS:,})",
    )
    parser.add_argument(
        "--max-images",
        type=int,
        default=options.DEFAULT_MAX_IMAGES,
        help=f"most images in one request (default: {options.DEFAULT_MAX_IMAGES})",
    )


def run(args: argparse.Namespace) -> int:
    from ..inference import serve

    serve.serve(
        args.checkpoint,
        host=args.host,
        port=args.port,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        backend=args.backend,
        threads=args.threads,
        device=args.device,
        max_body_mb=args.max_body_mb,
        max_pixels=args.max_pixels,
        max_images=args.max_images,
    )
    return 0


def __getattr__(name: str) -> ModuleType:
    """``commands.serve.serve``: the server's module, loaded on first use (what a test patches ``serve`` on)."""
    if name != "serve":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from ..inference import serve

    return serve
