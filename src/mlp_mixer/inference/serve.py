"""Serve a trained Mixer over HTTP: an ASGI app (FastAPI on uvicorn) with dynamic batching and a web page.

Images are decoded and preprocessed as ``predict`` does them (the checkpoint's classes and eval transform, through
:class:`~mlp_mixer.inference.predict.Predictor`), so a served answer equals ``predict``'s for the same file. A
:class:`~mlp_mixer.inference.batching.MicroBatcher` gathers the images of concurrent requests into one forward pass
of up to ``max_batch_size`` images, waiting at most ``max_wait_ms`` after the first, and answers each request with
its own rows (the ``max_batch_size`` and batch timeout of Ray Serve and LitServe); the forward pass runs in a model
worker process (:mod:`.worker`), or with ``model_process=False`` in a thread of this one.

Endpoints: ``POST /v1/predict``, ``GET /v1/model``, ``GET /healthz``, ``GET /readyz``, ``GET /metrics``
(Prometheus text), the page at ``/``, and the Open Inference Protocol's ``/v2`` (:mod:`.oip`). Every error a
client can cause is a 4xx with ``{"error": "..."}``, and the server keeps serving. On SIGTERM it drains: requests
in flight are answered, new ones get 503, and it exits by the drain deadline, whatever the clients do.

Hostile clients are bounded where they would cost: connections (a cap, header and body deadlines:
:mod:`.connections`), requests admitted at once and the bytes their bodies hold (503 ``Retry-After`` past either),
parsing and decoding in worker threads, pixels per image and per request (:mod:`.uploads`).

This module is the app: the backends, the metrics, the admission middleware, the routes (the methods of
:class:`Routes`), :func:`create_app` that wires them, and the draining server. Reading and checking a request's
images is :mod:`.uploads`; the batching is :mod:`.batching`.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from ..model.mixer import count_parameters
from ..model.pretrained import WEIGHTS_NAME
from ..model.variants import VARIANTS
from ..weights.checkpoint import resolve_checkpoint
from ..weights.download import default_cache_dir
from . import options as defaults
from .batching import MicroBatcher, NotRunningError
from .connections import ConnectionGuard, DrainingServer, protocol_class, raise_file_limit, return_freed_memory
from .oip import OpenInference
from .options import BACKENDS
from .predict import Predictor
from .uploads import ClientError, Intake, decode_uploads, parse_uploads
from .worker import ModelWorker, WorkerError, onnx_forward

log = logging.getLogger("mlp_mixer.serve")

LOOPBACK = ("127.0.0.1", "localhost", "::1")
STATIC = Path(__file__).parent / "static" / "serve"
PATHS = {"/", "/v1/predict", "/v1/model", "/healthz", "/readyz", "/metrics"}  # the routes, each its own metric label
OPEN_WHILE_DRAINING = ("/healthz", "/readyz", "/metrics", "/v2/health/live", "/v2/health/ready")  # the probes


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


# --------------------------------------------------------------------------- model, backends, metadata


def checkpoint_digest(checkpoint: str | Path, model: torch.nn.Module) -> tuple[str, str | None]:
    """``("sha256:...", file)``: the digest of the file the weights were read from (a run folder's ``best.pt``, a
    ``save_pretrained`` folder's ``model.safetensors``), streamed, never other files beside it; for a source that is
    not a local path (a Hub id, a URL), of the loaded weights, and None for the file."""
    path = Path(checkpoint)
    if path.exists():
        weights = resolve_checkpoint(path)
        weights = weights / WEIGHTS_NAME if weights.is_dir() else weights
        with weights.open("rb") as f:
            return f"sha256:{hashlib.file_digest(f, 'sha256').hexdigest()}", str(weights)
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    return f"sha256:{digest.hexdigest()}", None


def _variant_name(config: dict[str, Any]) -> str | None:
    """The paper's name for these sizes (``"S/16"``), or None for a custom Mixer."""
    keys = ("depth", "patch_size", "dim", "token_dim", "channel_dim")
    return next((name for name, v in VARIANTS.items() if all(v[k] == config[k] for k in keys)), None)


def _onnx_model(checkpoint: str | Path, digest: str, cache: str | Path | None) -> Path:
    """The checkpoint exported once per digest to ``cache`` (:mod:`.export`, parity-verified): the ``.onnx``."""
    from .export import export

    root = Path(cache) if cache is not None else default_cache_dir("onnx")
    path = root / digest.split(":")[1][:16] / "model.onnx"
    if not path.is_file():
        log.info("exporting %s to %s", checkpoint, path)
        export(checkpoint, path, "onnx")
    return path


# --------------------------------------------------------------------------- shared state, metrics, admission


@dataclass
class ServeState:
    """What the admission middleware, the probes and the draining server share."""

    draining: bool = False
    in_flight: int = 0
    worker: ModelWorker | None = None

    @property
    def failure(self) -> str | None:
        """Why the server cannot serve any more (its model worker cannot be started again): it drains and exits."""
        return None if self.worker is None else self.worker.failure


class _Metrics:
    """Prometheus metrics in a registry of their own (several apps may live in one process, as in tests)."""

    def __init__(self, max_batch_size: int) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

        disable_created_metrics()  # the *_created series only add noise to a scrape
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mixer_http_requests", "HTTP requests by path and status", ["path", "status"], registry=self.registry
        )
        self.errors = Counter(
            "mixer_http_errors", "HTTP responses with status >= 400", ["status"], registry=self.registry
        )
        self.closed = Counter(
            "mixer_connections_closed",
            "connections the server closed itself: header_timeout, body_timeout (408), headers_too_large (431), "
            "evicted (idle, at the connection cap), refused (503 at the cap), keep_alive (idle after a response), "
            "drain_deadline (503)",
            ["reason"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mixer_predict_seconds",
            "POST /v1/predict and /v2/models/{name}/infer latency, body read to response",
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        sizes = sorted({2**i for i in range(max_batch_size.bit_length())} | {max_batch_size})
        self.batch_size = Histogram(
            "mixer_batch_size", "images per forward pass", registry=self.registry, buckets=sizes
        )
        self.forward = Histogram(
            "mixer_forward_seconds",
            "duration of one forward pass",
            registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
        )
        self.images = Counter("mixer_images", "images classified", registry=self.registry)
        self.in_flight = Gauge("mixer_requests_in_flight", "requests being handled", registry=self.registry)

    def observe_batch(self, size: int, seconds: float) -> None:
        self.batch_size.observe(size)
        self.forward.observe(seconds)
        self.images.inc(size)

    def closed_connection(self, reason: str) -> None:
        self.closed.labels(reason).inc()


class _Admission:
    """ASGI middleware: 503 while draining, counts requests in flight and every status, 500s included."""

    def __init__(self, app: Any, state: ServeState, metrics: _Metrics, paths: set[str]) -> None:
        self.app, self.state, self.metrics, self.paths = app, state, metrics, paths

    def _label(self, path: str) -> str:
        if path in self.paths:
            return path
        if path.startswith("/static/"):
            return "/static"  # one label for the page's files
        if path.startswith("/v2/models/"):  # one label per kind of v2 route, whatever the model's name
            return "/v2/models/{name}" + next((f"/{end}" for end in ("infer", "ready") if path.endswith(end)), "")
        return path if path in ("/v2", "/v2/health/live", "/v2/health/ready") else "other"

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = self._label(scope["path"])
        status = 500  # what the server answers when the app raises before starting a response

        async def send_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            if self.state.draining and path not in OPEN_WHILE_DRAINING:
                await _error(503, "server is shutting down; retry another instance")(scope, receive, send_status)
            else:
                self.state.in_flight += 1
                self.metrics.in_flight.inc()
                try:
                    await self.app(scope, receive, send_status)
                finally:
                    self.state.in_flight -= 1
                    self.metrics.in_flight.dec()
        finally:
            self.metrics.requests.labels(path, str(status)).inc()
            if status >= 400:
                self.metrics.errors.labels(str(status)).inc()


# --------------------------------------------------------------------------- the routes


class Routes:
    """What the routes share (the model, the batcher, the intake, the limits, the metrics) and the routes.

    :func:`create_app` registers the methods on the app; their names and the docstring of :meth:`predict` are
    what ``/openapi.json`` shows.
    """

    def __init__(
        self,
        predictor: Predictor,
        batcher: MicroBatcher,
        intake: Intake,
        metrics: _Metrics,
        state: ServeState,
        info: dict[str, Any],
        limits: dict[str, Any],
    ) -> None:
        self.predictor, self.batcher, self.intake, self.metrics = predictor, batcher, intake, metrics
        self.state, self.info, self.limits = state, info, limits

    @asynccontextmanager
    async def lifespan(self, _: FastAPI) -> AsyncIterator[None]:
        worker = self.state.worker
        if worker is not None:
            await worker.start()
        await self.batcher.start()
        # What start-up made (torch, FastAPI, the model's description: about a million objects) is never garbage;
        # out of the collector's sight, a full collection no longer stalls every request in flight (130 ms seen).
        gc.freeze()
        try:
            yield
        finally:
            await self.batcher.stop()  # uvicorn has drained the connections: this answers nothing new
            if worker is not None:
                await worker.stop()
            self.intake.close()

    async def predict(self, request: Request, topk: int = 5) -> JSONResponse:
        """Top-k classes of each image: multipart (field 'image', repeatable), JSON with base64, or a raw image."""
        start = time.perf_counter()
        if topk < 1:
            raise ClientError(400, f"topk must be at least 1, got {topk}")
        async with self.intake.admit() as reservation:
            body = await reservation.read_body(request)
            content_type = request.headers.get("content-type", "")
            with self.batcher.arriving():  # the batch being gathered may wait for this request
                names, images = await self.intake.run(self._parse, body, content_type)
            del body
            reservation.release()  # the body is parsed: its bytes no longer count against the budget
            probabilities = (await self.batcher.submit(images)).softmax(dim=-1)
        classes = self.predictor.classes
        values, indices = probabilities.topk(min(topk, self.predictor.model.num_classes), dim=-1)
        results = [
            {
                "name": name,
                "predictions": [
                    {"class": classes[i], "index": i, "probability": p} for i, p in zip(idx, val, strict=True)
                ],
            }
            for name, idx, val in zip(names, indices.tolist(), values.tolist(), strict=True)
        ]
        self.metrics.latency.observe(time.perf_counter() - start)
        return JSONResponse({"results": results})  # as it is: FastAPI's encoder would walk every value again

    def _parse(self, body: bytearray, content_type: str, inline: bool = False) -> tuple[list[str], list[torch.Tensor]]:
        """Names and model inputs of a body's images (in a worker thread, or ``inline`` when cheap: parsing and
        decoding must not stall the event loop)."""
        limits = self.limits
        uploads = parse_uploads(content_type, body, limits["max_images"])
        pixels = decode_uploads(
            uploads, self.predictor.model.in_channels, limits["max_pixels"], limits["max_request_pixels"], inline
        )
        return [name for name, _, _ in uploads], [self.predictor.transform(image) for image in pixels]

    async def model_info(self) -> dict[str, Any]:
        return self.info

    async def healthz(self) -> dict[str, str]:
        return {"status": "ok"}

    async def readyz(self) -> JSONResponse:
        if self.state.draining:
            return _error(503, "draining: shutting down")
        return JSONResponse({"status": "ready"})

    async def prometheus(self) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(self.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def page(self) -> FileResponse:
        return FileResponse(STATIC / "index.html")


async def _client_error(_: Request, err: ClientError) -> JSONResponse:
    return _error(err.status, err.message, err.headers)


async def _not_running(_: Request, err: NotRunningError | WorkerError) -> JSONResponse:
    return _error(503, str(err), {"Retry-After": "1"})


async def _http_error(_: Request, err: HTTPException) -> JSONResponse:
    return _error(err.status_code, f"{err.detail}")


async def _invalid(_: Request, err: RequestValidationError) -> JSONResponse:
    problems = "; ".join(f"{e['loc'][-1]}: {e['msg']}" for e in err.errors())
    return _error(400, problems)


async def _internal(_: Request, err: Exception) -> JSONResponse:
    """A bug of ours: a 500 in the protocol's shape, never a traceback to the client (the log has it)."""
    return _error(500, f"internal error ({type(err).__name__}); the server log has the details")


# --------------------------------------------------------------------------- the app


def create_app(
    checkpoint: str | Path,
    *,
    max_batch_size: int = 32,
    max_wait_ms: float = 5.0,
    backend: str = "torch",
    threads: int | None = None,
    device: str = "auto",
    model_name: str = defaults.DEFAULT_MODEL_NAME,
    max_body_mb: float = defaults.DEFAULT_MAX_BODY_MB,
    max_pixels: int = defaults.DEFAULT_MAX_PIXELS,
    max_request_pixels: int = defaults.DEFAULT_MAX_REQUEST_PIXELS,
    max_images: int = defaults.DEFAULT_MAX_IMAGES,
    max_queue: int = defaults.DEFAULT_MAX_QUEUE,
    max_inflight_mb: float = defaults.DEFAULT_MAX_INFLIGHT_MB,
    max_connections: int = defaults.DEFAULT_MAX_CONNECTIONS,
    header_timeout_s: float = defaults.DEFAULT_HEADER_TIMEOUT_S,
    body_timeout_s: float = defaults.DEFAULT_BODY_TIMEOUT_S,
    keep_alive_s: float = defaults.DEFAULT_KEEP_ALIVE_S,
    onnx_cache: str | Path | None = None,
    model_process: bool = True,
) -> FastAPI:
    """The ASGI app serving ``checkpoint``; run it with :func:`serve` (or :func:`make_server`).

    Args:
        checkpoint: anything ``predict`` takes (a training ``.pt``, a run folder, a ``save_pretrained`` directory).
        max_batch_size: most images per forward pass; 1 turns dynamic batching off.
        max_wait_ms: how long a batch's first image waits for others.
        backend: ``"torch"``, or ``"onnx"`` (exported once per checkpoint with ``mlp_mixer.inference.export``, run
            with onnxruntime on the CPU).
        threads: intra-op threads of the forward pass (torch or onnxruntime); None keeps the library default.
        device: the torch backend's device (``"auto"``, ``"cpu"``, ``"cuda:0"``...).
        model_name: the model's name in the Open Inference Protocol's ``/v2/models/{name}``.
        max_body_mb: largest request body; larger ones get 413.
        max_pixels: largest image (width x height), checked from the header before decoding: a decompression
            bomb (a small file that decodes to gigabytes) gets 413.
        max_request_pixels: most pixels of all the images of one request together (413 above).
        max_images: most images in one request.
        max_queue: most requests admitted at once (reading, parsing, decoding, waiting for the model); the next
            gets 503 with ``Retry-After``.
        max_inflight_mb: most request-body megabytes held at once by all requests (503 ``Retry-After`` above).
        max_connections, header_timeout_s, body_timeout_s, keep_alive_s: the connection bounds of
            :mod:`.connections` (they apply when the app runs on :func:`make_server`).
        onnx_cache: where ONNX exports are kept (default
            :func:`~mlp_mixer.weights.download.default_cache_dir` ``("onnx")``: ``~/.cache/mlp-mixer/onnx``).
        model_process: run the forward pass in a worker process of its own (:mod:`.worker`), started and stopped
            with the app; False runs it in a thread of the server's process, where it shares the GIL with the
            event loop.
    """
    if backend not in BACKENDS:
        raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    limits = {"max_body_mb": max_body_mb, "max_pixels": max_pixels, "max_request_pixels": max_request_pixels,
              "max_images": max_images, "max_queue": max_queue, "max_inflight_mb": max_inflight_mb}  # fmt: skip
    for name, value in limits.items():
        if value <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if not model_name or "/" in model_name:
        raise ValueError(f"--model-name must be a non-empty name without '/', got {model_name!r}")
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    metrics = _Metrics(max_batch_size)
    guard = ConnectionGuard(
        max_connections, header_timeout_s, body_timeout_s, metrics.closed_connection, keep_alive_s=keep_alive_s
    )
    # The model that runs here: none with a worker process (this copy gives the names, sizes and transform).
    predictor = Predictor(checkpoint, device=device if backend == "torch" and not model_process else "cpu", amp=False)
    model = predictor.model
    digest, weights = checkpoint_digest(checkpoint, model)
    onnx_path = _onnx_model(checkpoint, digest, onnx_cache) if backend == "onnx" else None
    worker = None
    if model_process:
        worker = ModelWorker(checkpoint, (model.in_channels, *model.image_size), model.num_classes, max_batch_size,
                             backend=backend, onnx_path=onnx_path, device=device, threads=threads)  # fmt: skip
        forward = worker  # its begin() starts a pass on the event loop
    elif backend == "torch":
        forward = lambda x: predictor.logits(x).cpu()  # noqa: E731
    else:
        forward = onnx_forward(onnx_path, threads)
    batcher = MicroBatcher(forward, max_batch_size, max_wait_ms, on_batch=metrics.observe_batch)
    intake = Intake(int(max_body_mb * 2**20), max_queue, int(max_inflight_mb * 2**20))
    state = ServeState(worker=worker)
    config = model.config()
    info = {
        "name": model_name,
        "variant": _variant_name(config),
        "model_config": config,
        "parameters": count_parameters(model),
        "classes": predictor.classes,
        "preprocessing": predictor.preprocessing.to_dict(),
        "checkpoint": {"source": str(checkpoint), "weights": weights, "digest": digest},
        "backend": backend,
        "batching": {"max_batch_size": max_batch_size, "max_wait_ms": max_wait_ms, "model_process": model_process},
        "limits": limits,
        "connections": {
            "max_connections": max_connections,
            "header_timeout_s": header_timeout_s,
            "body_timeout_s": body_timeout_s,
            "keep_alive_s": keep_alive_s,
        },  # fmt: skip
    }
    routes = Routes(predictor, batcher, intake, metrics, state, info, limits)
    v2 = OpenInference(model_name, predictor, batcher, intake, limits, info, lambda: not state.draining)

    app = FastAPI(title="mlp-mixer", lifespan=routes.lifespan, docs_url=None, redoc_url=None)  # docs need a CDN
    app.state.serve, app.state.batcher, app.state.info, app.state.guard = state, batcher, info, guard
    app.state.intake = intake
    app.add_exception_handler(ClientError, _client_error)
    app.add_exception_handler(NotRunningError, _not_running)
    app.add_exception_handler(WorkerError, _not_running)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(Exception, _internal)
    app.post("/v1/predict")(routes.predict)
    get = ["GET", "HEAD"]  # HEAD answers what GET would, without the body (uvicorn drops it)
    app.add_api_route("/v1/model", routes.model_info, methods=get)
    app.add_api_route("/healthz", routes.healthz, methods=get)
    app.add_api_route("/readyz", routes.readyz, methods=get)
    app.add_api_route("/metrics", routes.prometheus, methods=get)
    app.add_api_route("/", routes.page, methods=get)
    v2.register(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(_Admission, state=state, metrics=metrics, paths=PATHS)
    return app


# --------------------------------------------------------------------------- running it


def make_server(
    app: FastAPI,
    host: str = "127.0.0.1",
    port: int = 8000,
    drain_timeout_s: float = defaults.DEFAULT_DRAIN_TIMEOUT_S,
    log_level: str = "info",
) -> DrainingServer:
    """A uvicorn server for ``app`` that drains on SIGTERM (``server.run()`` blocks; ``server.drain()`` from code),
    its connections under the app's :class:`~.connections.ConnectionGuard`.

    ``port=0`` takes a free port: read it from ``server.servers[0].sockets[0].getsockname()`` once started.
    """
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        http=protocol_class(app.state.guard),
        timeout_graceful_shutdown=drain_timeout_s,
        # The guard closes idle keep-alive connections (counted); uvicorn's own timer, 5 s by default (httpx's
        # expiry too, so the closes crossed requests), stays behind it.
        timeout_keep_alive=app.state.guard.keep_alive_s + 1,
        access_log=False,  # one line per request is an attacker's way to fill the disk; /metrics counts them
    )
    return DrainingServer(config, app.state.serve, drain_timeout_s)


def serve(
    checkpoint: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    drain_timeout_s: float = defaults.DEFAULT_DRAIN_TIMEOUT_S,
    log_level: str = "info",
    **options: Any,
) -> None:
    """Serve ``checkpoint`` until SIGTERM or Ctrl-C (then drain); ``options`` go to :func:`create_app`.

    Args:
        host: the address to listen on. The default, loopback, is reachable from this machine only; any other
            address (``0.0.0.0``) lets everyone who can reach it classify images, read ``/v1/model`` (classes,
            preprocessing, checkpoint path and digest) and ``/metrics``, with no authentication or TLS.
        port: TCP port.
        drain_timeout_s: after SIGTERM, the longest the server stays up (requests in flight included).
    """
    if drain_timeout_s <= 0:
        raise ValueError(f"--drain-timeout-s must be positive, got {drain_timeout_s}")
    return_freed_memory()
    # The forward pass runs in its own thread and needs the GIL back between its operations; with the event loop
    # busy, each hand-off waits up to this interval (5 ms by default), which turned a 5 ms forward pass of the small
    # Mixer into 30 ms. 1 ms keeps the loop's Python work in longer slices than any hand-off it delays.
    sys.setswitchinterval(0.001)
    raise_file_limit(options.get("max_connections", defaults.DEFAULT_MAX_CONNECTIONS))
    app = create_app(checkpoint, **options)
    if app.state.serve.worker is not None:
        # The pass is the worker's; decoding here runs in threads of its own, and an OpenMP team on every core
        # would contend with the worker's. Set here, not in create_app: this process is the server's alone.
        torch.set_num_threads(1)
    if host not in LOOPBACK:
        log.warning(
            "listening on %s, not loopback: anyone who reaches it can use the model and read /v1/model and "
            "/metrics; there is no authentication or TLS (put a reverse proxy in front, see docs/serve.md)",
            host,
        )
    make_server(app, host, port, drain_timeout_s, log_level).run()
    if app.state.serve.failure is not None:
        raise SystemExit(f"mlp-mixer serve: {app.state.serve.failure}")
