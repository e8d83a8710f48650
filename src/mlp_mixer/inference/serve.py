"""Serve a trained Mixer over HTTP: an ASGI app (FastAPI on uvicorn) with dynamic batching and a web page.

Images are decoded and preprocessed as ``predict`` does them (the checkpoint's classes and eval transform, through
:class:`~mlp_mixer.inference.predict.Predictor`), so a served answer equals ``predict``'s for the same file. A
:class:`MicroBatcher` gathers the images of concurrent requests into one forward pass of up to ``max_batch_size``
images, waiting at most ``max_wait_ms`` after the first, and answers each request with its own rows (the
``max_batch_size`` and batch timeout of Ray Serve and LitServe).

Endpoints: ``POST /v1/predict``, ``GET /v1/model``, ``GET /healthz``, ``GET /readyz``, ``GET /metrics``
(Prometheus text) and the page at ``/``. Every error a client can cause is a 4xx with ``{"error": "..."}``, and
the server keeps serving. On SIGTERM it drains: requests in flight are answered, new ones get 503, then it exits.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from ..data.decode import ImageError, TooLargeError, decode_image_bytes, image_header
from ..model.mixer import count_parameters
from ..model.variants import VARIANTS
from .predict import Predictor

log = logging.getLogger("mlp_mixer.serve")

BACKENDS = ("torch", "onnx")
DEFAULT_MAX_BODY_MB = 16.0  # a few phone photos; raise it for big batches of large images
DEFAULT_MAX_PIXELS = 40_000_000  # 40 Mpx (e.g. 7300x5500): above any camera, below what would exhaust memory
DEFAULT_MAX_IMAGES = 32
FIELDS = ("image", "images")  # multipart field names; repeat the field for several images
LOOPBACK = ("127.0.0.1", "localhost", "::1")
STATIC = Path(__file__).parent / "static" / "serve"
OPEN_WHILE_DRAINING = ("/healthz", "/readyz", "/metrics")  # probes keep working while the server drains
# Declared formats (file extension, Content-Type) -> Pillow's name, to catch e.g. a GIF named .jpg.
DECLARED_FORMATS = {
    **dict.fromkeys((".jpg", ".jpeg", "image/jpeg"), "JPEG"),
    **dict.fromkeys((".png", "image/png"), "PNG"),
    **dict.fromkeys((".gif", "image/gif"), "GIF"),
    **dict.fromkeys((".webp", "image/webp"), "WEBP"),
    **dict.fromkeys((".bmp", "image/bmp"), "BMP"),
    **dict.fromkeys((".tif", ".tiff", "image/tiff"), "TIFF"),
}


class ClientError(Exception):
    """A request the server cannot answer; becomes ``{"error": message}`` with a 4xx (or 503) status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


# --------------------------------------------------------------------------- dynamic batching


@dataclass
class _Item:
    image: torch.Tensor
    future: asyncio.Future[torch.Tensor]


class MicroBatcher:
    """Gathers the images of concurrent requests into batches, one forward pass each.

    One worker task takes the first waiting image, then more until ``max_batch_size`` or ``max_wait_ms`` after
    the first, and runs ``forward`` in its own thread, so the event loop keeps accepting and decoding requests
    meanwhile; whatever arrives during a forward pass makes the next batch. Each image's future gets its own row.
    A batch waits only while a request is on its way (inside :meth:`arriving`): a lone client pays no wait.

    Args:
        forward: float images (B, C, H, W) -> float32 logits (B, num_classes) on the CPU.
        max_batch_size: images per forward pass; 1 turns batching off.
        max_wait_ms: how long the first image of a batch waits for company; 0 takes only what is already queued.
        on_batch: called with ``(batch_size, seconds)`` after each forward pass (metrics).
    """

    def __init__(
        self,
        forward: Callable[[torch.Tensor], torch.Tensor],
        max_batch_size: int = 32,
        max_wait_ms: float = 5.0,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be at least 1, got {max_batch_size}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be at least 0, got {max_wait_ms}")
        self.forward, self.max_batch_size, self.max_wait = forward, max_batch_size, max_wait_ms / 1000
        self.on_batch = on_batch
        self.batches = 0  # forward passes run so far
        self._arriving = 0  # requests being read or decoded, which will submit soon
        self._queue: asyncio.Queue[_Item | None] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="mixer-forward")  # one model, one pass at a time
        self._worker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._worker = asyncio.create_task(self._run())

    async def stop(self) -> None:
        """Answer everything queued, then stop the worker."""
        if self._worker is not None:
            await self._queue.put(None)
            await self._worker
            self._worker = None
        self._executor.shutdown()

    @contextmanager
    def arriving(self) -> Iterator[None]:
        """Wrap the reading and decoding of a request: while any is on its way, a batch waits for it."""
        self._arriving += 1
        try:
            yield
        finally:
            self._arriving -= 1

    async def submit(self, images: list[torch.Tensor]) -> torch.Tensor:
        """Logits (len(images), num_classes) of preprocessed images, computed with whatever else is waiting."""
        if self._worker is None or self._worker.done():
            raise ClientError(503, "the model is not running (server starting or stopping)")
        loop = asyncio.get_running_loop()
        items = [_Item(image, loop.create_future()) for image in images]
        for item in items:
            self._queue.put_nowait(item)
        return torch.stack(await asyncio.gather(*(item.future for item in items)))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            first = await self._queue.get()
            if first is None:
                break
            batch, deadline = [first], loop.time() + self.max_wait
            while len(batch) < self.max_batch_size and (self._arriving or not self._queue.empty()):
                timeout = deadline - loop.time()
                try:
                    item = (
                        await asyncio.wait_for(self._queue.get(), timeout) if timeout > 0 else self._queue.get_nowait()
                    )
                except (TimeoutError, asyncio.QueueEmpty):
                    break
                if item is None:  # stop() was called: finish this batch, then exit
                    stopping = True
                    break
                batch.append(item)
            await self._forward(loop, batch)

    async def _forward(self, loop: asyncio.AbstractEventLoop, batch: list[_Item]) -> None:
        start = time.perf_counter()
        try:
            logits = await loop.run_in_executor(self._executor, self.forward, torch.stack([i.image for i in batch]))
        except Exception as err:  # a failed pass fails its requests (500), not the worker
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(err)
            return
        self.batches += 1
        if self.on_batch is not None:
            self.on_batch(len(batch), time.perf_counter() - start)
        for item, row in zip(batch, logits, strict=True):
            if not item.future.done():  # a client that went away cancelled its future
                item.future.set_result(row)


# --------------------------------------------------------------------------- model, backends, metadata


def checkpoint_digest(checkpoint: str | Path, model: torch.nn.Module) -> str:
    """``sha256:...`` of the checkpoint file, of a directory's files (names and contents, sorted), or, for a
    source that is not a local path (a Hub id, a URL), of the loaded weights."""
    digest, path = hashlib.sha256(), Path(checkpoint)
    if path.is_file():
        digest.update(path.read_bytes())
    elif path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(file.relative_to(path)).encode() + b"\0" + file.read_bytes())
    else:
        for name, tensor in model.state_dict().items():
            digest.update(name.encode() + tensor.detach().cpu().contiguous().numpy().tobytes())
    return f"sha256:{digest.hexdigest()}"


def _variant_name(config: dict[str, Any]) -> str | None:
    """The paper's name for these sizes (``"S/16"``), or None for a custom Mixer."""
    keys = ("depth", "patch_size", "dim", "token_dim", "channel_dim")
    return next((name for name, v in VARIANTS.items() if all(v[k] == config[k] for k in keys)), None)


def _onnx_forward(
    checkpoint: str | Path, digest: str, cache: str | Path | None, threads: int | None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """Export once per checkpoint digest to ``cache`` (:mod:`.export`, parity-verified), run with onnxruntime."""
    import onnxruntime as ort

    from .export import INPUT_NAME, OUTPUT_NAME, export

    root = Path(cache) if cache is not None else Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    path = (root if cache is not None else root / "mlp-mixer" / "onnx") / digest.split(":")[1][:16] / "model.onnx"
    if not path.is_file():
        log.info("exporting %s to %s", checkpoint, path)
        export(checkpoint, path, "onnx")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0])


@dataclass
class ServeState:
    """What the admission middleware, the probes and the draining server share."""

    draining: bool = False
    in_flight: int = 0


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
        self.latency = Histogram(
            "mixer_predict_seconds",
            "POST /v1/predict latency, body read to response",
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


class _Admission:
    """ASGI middleware: 503 while draining, counts requests in flight and by status."""

    def __init__(self, app: Any, state: ServeState, metrics: _Metrics, paths: set[str]) -> None:
        self.app, self.state, self.metrics, self.paths = app, state, metrics, paths

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"] if scope["path"] in self.paths or scope["path"].startswith("/static/") else "other"
        status = 500

        async def send_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

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
        path = "/static" if path.startswith("/static/") else path  # one label for the page's files
        self.metrics.requests.labels(path, str(status)).inc()
        if status >= 400:
            self.metrics.errors.labels(str(status)).inc()


# --------------------------------------------------------------------------- reading requests


async def _read_body(request: Request, limit: int) -> bytes:
    """The whole body, refused with 413 as soon as it (or its declared length) passes ``limit`` bytes."""
    too_large = ClientError(413, f"body over the size limit of {limit / 2**20:g} MB (--max-body-mb)")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


async def _images_from_multipart(request: Request, body: bytes) -> list[tuple[str, bytes, str | None]]:
    async def once() -> AsyncIterator[bytes]:
        yield body

    # No per-request file/field count limit here (the body limit bounds them); the image count is checked after.
    parser = MultiPartParser(request.headers, once(), max_files=10_000, max_fields=10_000, max_part_size=len(body) + 1)
    try:
        form = await parser.parse()
    except MultiPartException as err:
        raise ClientError(400, f"malformed multipart body: {err.message}") from err
    images = []
    for field, value in form.multi_items():
        if field not in FIELDS:
            raise ClientError(400, f"unknown form field {field!r}: send each image as a file in the field 'image'")
        if not isinstance(value, UploadFile):
            raise ClientError(400, f"form field {field!r} must be a file upload, not text")
        images.append((value.filename or f"image {len(images)}", await value.read(), value.content_type))
    return images


def _images_from_json(body: bytes) -> list[tuple[str, bytes, str | None]]:
    usage = 'send {"images": ["<base64>", ...]} (or items {"data": "<base64>", "name": "a.jpg"})'
    try:
        document = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ClientError(400, f"body is not valid JSON ({err}); {usage}") from err
    if not isinstance(document, dict) or not isinstance(document.get("images"), list):
        keys = sorted(document) if isinstance(document, dict) else type(document).__name__
        raise ClientError(400, f"JSON body needs an 'images' list, got {keys}; {usage}")
    if set(document) - {"images"}:
        raise ClientError(400, f"unknown JSON keys {sorted(set(document) - {'images'})}; {usage}")
    images = []
    for n, item in enumerate(document["images"]):
        data, name = (item.get("data"), item.get("name")) if isinstance(item, dict) else (item, None)
        if not isinstance(data, str):
            raise ClientError(400, f"images[{n}] is not a base64 string; {usage}")
        data = data.split(",", 1)[1] if data.startswith("data:") else data  # a data: URL as a browser makes it
        try:
            images.append((str(name or f"images[{n}]"), base64.b64decode(data, validate=True), None))
        except (binascii.Error, ValueError) as err:
            raise ClientError(400, f"images[{n}] is not valid base64 ({err})") from err
    return images


# --------------------------------------------------------------------------- the app


def create_app(
    checkpoint: str | Path,
    *,
    max_batch_size: int = 32,
    max_wait_ms: float = 5.0,
    backend: str = "torch",
    threads: int | None = None,
    device: str = "auto",
    max_body_mb: float = DEFAULT_MAX_BODY_MB,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_images: int = DEFAULT_MAX_IMAGES,
    onnx_cache: str | Path | None = None,
) -> FastAPI:
    """The ASGI app serving ``checkpoint``; run it with :func:`serve` or any ASGI server.

    Args:
        checkpoint: anything ``predict`` takes (a training ``.pt``, a ``save_pretrained`` directory, ...).
        max_batch_size: most images per forward pass; 1 turns dynamic batching off.
        max_wait_ms: how long a batch's first image waits for others.
        backend: ``"torch"``, or ``"onnx"`` (exported once per checkpoint with ``mlp_mixer.inference.export``, run with
            onnxruntime on the CPU).
        threads: intra-op threads of the forward pass (torch or onnxruntime); None keeps the library default.
        device: the torch backend's device (``"auto"``, ``"cpu"``, ``"cuda:0"``...).
        max_body_mb: largest request body; larger ones get 413.
        max_pixels: largest image (width x height), checked from the header before decoding: a decompression
            bomb (a small file that decodes to gigabytes) gets 413.
        max_images: most images in one request.
        onnx_cache: where ONNX exports are kept (default ``~/.cache/mlp-mixer/onnx``).
    """
    if backend not in BACKENDS:
        raise ValueError(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    for name, value in (("max_body_mb", max_body_mb), ("max_pixels", max_pixels), ("max_images", max_images)):
        if value <= 0:
            raise ValueError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    predictor = Predictor(checkpoint, device=device if backend == "torch" else "cpu", amp=False)
    model = predictor.model
    digest = checkpoint_digest(checkpoint, model)
    if backend == "torch":
        forward = lambda x: predictor.logits(x).cpu()  # noqa: E731
    else:
        forward = _onnx_forward(checkpoint, digest, onnx_cache, threads)
    metrics = _Metrics(max_batch_size)
    batcher = MicroBatcher(forward, max_batch_size, max_wait_ms, on_batch=metrics.observe_batch)
    state = ServeState()
    body_limit = int(max_body_mb * 2**20)
    config = model.config()
    info = {
        "variant": _variant_name(config),
        "model_config": config,
        "parameters": count_parameters(model),
        "classes": predictor.classes,
        "preprocessing": predictor.preprocessing.to_dict(),
        "checkpoint": {"source": str(checkpoint), "digest": digest},
        "backend": backend,
        "batching": {"max_batch_size": max_batch_size, "max_wait_ms": max_wait_ms},
        "limits": {"max_body_mb": max_body_mb, "max_pixels": max_pixels, "max_images": max_images},
    }

    def decode(name: str, data: bytes, content_type: str | None) -> torch.Tensor:
        """Check and decode one upload into the model's input (runs in a worker thread)."""
        if not data:
            raise ClientError(400, f"{name}: empty file")
        try:  # the header only: format and size, before any pixel is decoded
            found, width, height = image_header(data, name)
        except TooLargeError as err:
            raise ClientError(413, f"{err}; this server's cap is {max_pixels:,} pixels (--max-pixels)") from err
        except ImageError as err:
            raise ClientError(415, str(err)) from err
        if width * height > max_pixels:
            raise ClientError(
                413,
                f"{name}: {width}x{height} is {width * height:,} pixels, over this server's cap "
                f"of {max_pixels:,} (--max-pixels)",
            )
        for declared in (Path(name).suffix.lower(), (content_type or "").split(";")[0].strip().lower()):
            if DECLARED_FORMATS.get(declared, found) != found:
                raise ClientError(
                    415,
                    f"{name}: the content is {found} but {declared!r} says "
                    f"{DECLARED_FORMATS[declared]}; rename it or fix its type",
                )
        try:
            image = decode_image_bytes(data, model.in_channels, name, max_pixels=max_pixels)
        except ImageError as err:
            raise ClientError(422, f"{err}: the {found} data is truncated or corrupt") from err
        return predictor.transform(image)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await batcher.start()
        yield
        await batcher.stop()  # uvicorn has drained the connections: this answers nothing new

    app = FastAPI(title="mlp-mixer", lifespan=lifespan, docs_url=None, redoc_url=None)  # docs pages need a CDN
    app.state.serve, app.state.batcher, app.state.info = state, batcher, info

    @app.exception_handler(ClientError)
    async def client_error(_: Request, err: ClientError) -> JSONResponse:
        return _error(err.status, err.message)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, err: HTTPException) -> JSONResponse:
        return _error(err.status_code, f"{err.detail}")

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, err: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{e['loc'][-1]}: {e['msg']}" for e in err.errors())
        return _error(400, problems)

    async def read_uploads(request: Request) -> list[tuple[str, bytes, str | None]]:
        """(name, bytes, declared type) of each image in the request, checked against the limits."""
        body = await _read_body(request, body_limit)
        if not body:
            raise ClientError(400, "empty body: send images as multipart field 'image' or JSON {\"images\": [...]}")
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind == "multipart/form-data":
            uploads = await _images_from_multipart(request, body)
        elif kind == "application/json":
            uploads = _images_from_json(body)
        elif kind.startswith("image/") or kind == "application/octet-stream":
            uploads = [("body", body, kind)]
        else:
            raise ClientError(
                415,
                f"Content-Type {kind or 'missing'}: send multipart/form-data (field 'image'), "
                "application/json with base64 images, or one raw image/*",
            )
        if not uploads:
            raise ClientError(400, "no images in the request: the multipart field is 'image', the JSON key 'images'")
        if len(uploads) > max_images:
            raise ClientError(400, f"{len(uploads)} images in one request; the limit is {max_images} (--max-images)")
        return uploads

    @app.post("/v1/predict")
    async def predict(request: Request, topk: int = 5) -> dict[str, Any]:
        """Top-k classes of each image: multipart (field 'image', repeatable), JSON with base64, or a raw image."""
        start = time.perf_counter()
        if topk < 1:
            raise ClientError(400, f"topk must be at least 1, got {topk}")
        with batcher.arriving():  # the batch being gathered may wait for this request
            uploads = await read_uploads(request)
            images = await asyncio.to_thread(lambda: [decode(*upload) for upload in uploads])
        probabilities = (await batcher.submit(images)).softmax(dim=-1)
        values, indices = probabilities.topk(min(topk, model.num_classes), dim=-1)
        results = [
            {
                "name": name,
                "predictions": [
                    {"class": predictor.classes[i], "index": i, "probability": p} for i, p in zip(idx, val, strict=True)
                ],
            }
            for (name, _, _), idx, val in zip(uploads, indices.tolist(), values.tolist(), strict=True)
        ]
        metrics.latency.observe(time.perf_counter() - start)
        return {"results": results}

    @app.get("/v1/model")
    async def model_info() -> dict[str, Any]:
        return info

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if state.draining:
            return _error(503, "draining: shutting down")
        return JSONResponse({"status": "ready"})

    @app.get("/metrics")
    async def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/")
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    paths = {"/", "/v1/predict", "/v1/model", "/healthz", "/readyz", "/metrics"}
    app.add_middleware(_Admission, state=state, metrics=metrics, paths=paths)
    return app


# --------------------------------------------------------------------------- running it


class DrainingServer(uvicorn.Server):
    """uvicorn's server whose first SIGTERM (or Ctrl-C) drains instead of stopping at once.

    While draining, ``/readyz`` says 503 (a load balancer takes the instance out), new requests get 503 rather than
    a refused connection, and the process exits once the requests in flight are answered or ``drain_timeout_s``
    has passed. A second signal is uvicorn's own: stop now.
    """

    def __init__(self, config: uvicorn.Config, state: ServeState, drain_timeout_s: float = 30.0) -> None:
        super().__init__(config)
        self.state, self.drain_timeout_s, self._deadline = state, drain_timeout_s, float("inf")

    def drain(self) -> None:
        self.state.draining = True
        self._deadline = time.monotonic() + self.drain_timeout_s

    def handle_exit(self, sig: int, frame: Any) -> None:
        if self.state.draining:
            super().handle_exit(sig, frame)
        else:
            self.drain()

    async def on_tick(self, counter: int) -> bool:
        if self.state.draining and (self.state.in_flight == 0 or time.monotonic() > self._deadline):
            self.should_exit = True
        return await super().on_tick(counter)


def make_server(
    app: FastAPI, host: str = "127.0.0.1", port: int = 8000, drain_timeout_s: float = 30.0, log_level: str = "info"
) -> DrainingServer:
    """A uvicorn server for ``app`` that drains on SIGTERM (``server.run()`` blocks; ``server.drain()`` from code).

    ``port=0`` takes a free port: read it from ``server.servers[0].sockets[0].getsockname()`` once started.
    """
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=drain_timeout_s)
    return DrainingServer(config, app.state.serve, drain_timeout_s)


def serve(
    checkpoint: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    drain_timeout_s: float = 30.0,
    log_level: str = "info",
    **options: Any,
) -> None:
    """Serve ``checkpoint`` until SIGTERM or Ctrl-C (then drain); ``options`` go to :func:`create_app`.

    Args:
        host: the address to listen on. The default, loopback, is reachable from this machine only; any other
            address (``0.0.0.0``) lets everyone who can reach it classify images, read ``/v1/model`` (classes,
            preprocessing, checkpoint path and digest) and ``/metrics``, with no authentication or TLS.
        port: TCP port.
        drain_timeout_s: longest wait for requests in flight after SIGTERM.
    """
    app = create_app(checkpoint, **options)
    if host not in LOOPBACK:
        log.warning(
            "listening on %s, not loopback: anyone who reaches it can use the model and read /v1/model and "
            "/metrics; there is no authentication or TLS (put a reverse proxy in front, see docs/serve.md)",
            host,
        )
    make_server(app, host, port, drain_timeout_s, log_level).run()
