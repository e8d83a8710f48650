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
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="intra-op threads; on a CPU, a batch runs in that many one-thread lanes (default: the library's own)",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="run the forward pass in a thread of the server's process, not in a worker process of its own (one "
        "process and one model in memory; slower under load, where it waits for the GIL) (default: off)",
    )
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
        "--max-request-pixels",
        type=int,
        default=options.DEFAULT_MAX_REQUEST_PIXELS,
        help="most pixels of all the images of one request together, checked before decoding "
        f"(default: {options.DEFAULT_MAX_REQUEST_PIXELS:,})",
    )
    parser.add_argument(
        "--max-images",
        type=int,
        default=options.DEFAULT_MAX_IMAGES,
        help=f"most images in one request (default: {options.DEFAULT_MAX_IMAGES})",
    )

    parser.add_argument(
        "--model-name",
        default=options.DEFAULT_MODEL_NAME,
        help=f"its name in the Open Inference Protocol: /v2/models/NAME (default: {options.DEFAULT_MODEL_NAME})",
    )
    limits = parser.add_argument_group("limits against hostile or overloading clients")
    for flag, kind, default, text in (
        ("--max-queue", int, options.DEFAULT_MAX_QUEUE, "requests admitted at once; the next gets 503 Retry-After"),
        ("--max-inflight-mb", float, options.DEFAULT_MAX_INFLIGHT_MB, "request bodies held in memory at once, in MB"),
        ("--max-connections", int, options.DEFAULT_MAX_CONNECTIONS, "open connections; at the cap the oldest idle "
         "one is closed to make room, or the new one gets 503"),
        ("--header-timeout-s", float, options.DEFAULT_HEADER_TIMEOUT_S, "seconds for a request's headers (408)"),
        ("--body-timeout-s", float, options.DEFAULT_BODY_TIMEOUT_S, "seconds for a request's body, after its "
         "headers (408)"),
        ("--keep-alive-s", float, options.DEFAULT_KEEP_ALIVE_S, "seconds an idle keep-alive connection stays open "
         "after its last response"),
        ("--drain-timeout-s", float, options.DEFAULT_DRAIN_TIMEOUT_S, "after SIGTERM, the longest the server "
         "stays up, requests in flight included"),
    ):  # fmt: skip
        limits.add_argument(flag, type=kind, default=default, help=f"{text} (default: {default:g})")


NAMES = ("host", "port", "max_batch_size", "max_wait_ms", "backend", "threads", "device", "max_body_mb", "max_pixels",
         "max_request_pixels", "max_images", "model_name", "max_queue", "max_inflight_mb", "max_connections",
         "header_timeout_s", "body_timeout_s", "keep_alive_s", "drain_timeout_s")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from ..inference import serve

    serve.serve(args.checkpoint, model_process=not args.in_process, **{name: getattr(args, name) for name in NAMES})
    return 0


def __getattr__(name: str) -> ModuleType:
    """``commands.serve.serve``: the server's module, loaded on first use (what a test patches ``serve`` on)."""
    if name != "serve":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from ..inference import serve

    return serve
