"""What a request carries, read and checked within budgets: the body, its images, each decoded to pixels.

Every request that carries images passes the :class:`Intake`: admitted only while fewer than ``max_queue`` are in
the server and their bodies fit ``max_inflight_mb`` together (else 503 with ``Retry-After``), its body read up to
``max_body_mb``, then parsed and decoded in worker threads, never on the event loop, so a request that is costly to
parse (a JSON of millions of items, a multipart body of thousands of parts) delays no other request's answer.

``POST /v1/predict`` sends images three ways (multipart field ``image``, repeatable; JSON with base64; one raw
``image/*`` body): :func:`parse_uploads`. Whatever the way, the images of one request are checked from their
headers before any pixel is decoded: each at most ``max_pixels``, all together at most ``max_request_pixels``
(:func:`decode_uploads`). Every problem a client can cause is a :class:`ClientError` naming it, with the 4xx status
it gets.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

from ..data.decode import ImageError, TooLargeError, decode_image_bytes, image_header

FIELDS = ("image", "images")  # multipart field names; repeat the field for several images
# Declared formats (file extension, Content-Type) -> Pillow's name, to catch e.g. a GIF named .jpg.
DECLARED_FORMATS = {
    **dict.fromkeys((".jpg", ".jpeg", "image/jpeg"), "JPEG"),
    **dict.fromkeys((".png", "image/png"), "PNG"),
    **dict.fromkeys((".gif", "image/gif"), "GIF"),
    **dict.fromkeys((".webp", "image/webp"), "WEBP"),
    **dict.fromkeys((".bmp", "image/bmp"), "BMP"),
    **dict.fromkeys((".tif", ".tiff", "image/tiff"), "TIFF"),
}
Upload = tuple[str, bytes, str | None]  # (name, bytes, declared Content-Type) of one image
T = TypeVar("T")
INLINE_BYTES = 64 * 1024  # a body this small is parsed on the event loop (well under a millisecond) ...
INLINE_PIXELS = 64 * 1024  # ... and its images decoded there if they hold this many pixels at most (a 256x256)


class Costly(Exception):
    """Raised by work tried inline (on the event loop) that finds itself too costly for it: run it in a thread."""


class ClientError(Exception):
    """A request the server cannot answer; becomes ``{"error": message}`` with a 4xx (or 503) status."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def busy(message: str) -> ClientError:
    """503 with ``Retry-After: 1``: the server is full now, not broken; a client (or a proxy) retries."""
    return ClientError(503, f"{message}; retry shortly", {"Retry-After": "1"})


# --------------------------------------------------------------------------- admission, body, worker threads


class Intake:
    """The path of every request body: admission, the body read, parsing and decoding in worker threads.

    Args:
        body_limit: largest body in bytes (413 above it).
        max_queue: most requests admitted at once, from admission to answer (the next gets 503 Retry-After).
        max_inflight_bytes: most body bytes held at once by all admitted requests (the next gets 503 Retry-After).
        workers: threads that parse and decode; more would only contend for the GIL and the forward pass's cores.
    """

    def __init__(self, body_limit: int, max_queue: int, max_inflight_bytes: int, workers: int = 2) -> None:
        self.body_limit, self.max_queue, self.max_inflight_bytes = body_limit, max_queue, max_inflight_bytes
        self.admitted = 0
        self.inflight_bytes = 0
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="mixer-parse")

    @asynccontextmanager
    async def admit(self) -> AsyncIterator[_Reservation]:
        """One request in the server (503 Retry-After when ``max_queue`` are); yields what its body may reserve."""
        if self.admitted >= self.max_queue:
            raise busy(f"{self.admitted} requests queued, the limit (--max-queue)")
        self.admitted += 1
        reservation = _Reservation(self)
        try:
            yield reservation
        finally:
            self.admitted -= 1
            reservation.release()

    async def run(self, function: Callable[..., T], body: bytes | bytearray, *args: Any) -> T:
        """``function(body, *args)`` (parsing, decoding) in a worker thread, so the event loop keeps answering;
        a small body (at most :data:`INLINE_BYTES`) is tried on the loop first with ``inline=True``, where the
        function raises :class:`Costly` as soon as it finds more than :data:`INLINE_PIXELS` to decode.

        A thread hop and the GIL hand-offs around it cost more than parsing a 28x28 PNG; a bound on what runs
        inline keeps the loop's worst stall to about a millisecond.
        """
        if len(body) <= INLINE_BYTES:
            try:
                return function(body, *args, inline=True)
            except Costly:
                pass
        return await asyncio.get_running_loop().run_in_executor(self._pool, function, body, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


class _Reservation:
    """The body bytes one request holds against :attr:`Intake.max_inflight_bytes`, given back when it ends."""

    def __init__(self, intake: Intake) -> None:
        self.intake, self.bytes = intake, 0

    def take(self, size: int) -> None:
        intake = self.intake
        if intake.inflight_bytes + size > intake.max_inflight_bytes:
            raise busy(
                f"request bodies in memory would pass {intake.max_inflight_bytes / 2**20:g} MB (--max-inflight-mb)"
            )
        intake.inflight_bytes += size
        self.bytes += size

    def release(self) -> None:
        self.intake.inflight_bytes -= self.bytes
        self.bytes = 0

    async def read_body(self, request: Request) -> bytearray:
        """The whole body, refused with 413 as soon as it (or its declared length) passes the body limit, and with
        503 when the bodies in memory would pass the server's budget."""
        limit = self.intake.body_limit
        too_large = ClientError(413, f"body over the size limit of {limit / 2**20:g} MB (--max-body-mb)")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and len(declared) < 20:  # a 5,000-digit length is no number to parse
            if int(declared) > limit:
                raise too_large
            self.take(int(declared))  # reserved up front: the body fits, or it is not read at all
        reserved, body = self.bytes, bytearray()
        try:
            async for chunk in request.stream():
                if len(body) + len(chunk) > limit:
                    raise too_large
                if len(body) + len(chunk) > reserved:  # chunked, or longer than declared
                    self.take(len(body) + len(chunk) - reserved)
                    reserved = self.bytes
                body += chunk
        except ClientDisconnect as err:  # the body timeout or the client itself closed the connection
            raise ClientError(400, "the client closed the connection before the body was complete") from err
        return body


# --------------------------------------------------------------------------- the three ways of /v1/predict


def parse_uploads(content_type: str, body: bytes | bytearray, max_images: int) -> list[Upload]:
    """Each image in a ``/v1/predict`` body, at most ``max_images`` (run it in a worker thread)."""
    if not body:
        raise ClientError(400, "empty body: send images as multipart field 'image' or JSON {\"images\": [...]}")
    kind = content_type.split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        uploads = _images_from_multipart(content_type, body, max_images)
    elif kind == "application/json":
        uploads = _images_from_json(body, max_images)
    elif kind.startswith("image/") or kind == "application/octet-stream":
        uploads = [("body", bytes(body), kind)]
    else:
        raise ClientError(
            415,
            f"Content-Type {kind or 'missing'}: send multipart/form-data (field 'image'), "
            "application/json with base64 images, or one raw image/*",
        )
    if not uploads:
        raise ClientError(400, "no images in the request: the multipart field is 'image', the JSON key 'images'")
    return uploads


def _too_many(count: int | str, max_images: int) -> ClientError:
    return ClientError(400, f"{count} images in one request; the limit is {max_images} (--max-images)")


def _images_from_multipart(content_type: str, body: bytes | bytearray, max_images: int) -> list[Upload]:
    """The file parts of a multipart body; parsing stops at the first part past ``max_images`` (a body of
    thousands of tiny parts costs no more than ``max_images + 1`` of them)."""
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise ClientError(400, "malformed multipart body: the Content-Type has no boundary")
    parts: list[dict[str, Any]] = []
    header: dict[str, bytes] = {}

    def begin() -> None:
        if len(parts) >= max_images:
            raise _too_many(f"more than {max_images}", max_images)
        parts.append({"headers": {}, "data": bytearray()})

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header["value"] = header.get("value", b"") + data[start:end]

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header["field"] = header.get("field", b"") + data[start:end]

    def header_end() -> None:
        parts[-1]["headers"][header.get("field", b"").lower()] = header.get("value", b"")
        header.clear()

    def data(chunk: bytes, start: int, end: int) -> None:
        parts[-1]["data"] += chunk[start:end]

    callbacks = dict(on_part_begin=begin, on_header_field=on_header_field, on_header_value=on_header_value,
                     on_header_end=header_end, on_part_data=data)  # fmt: skip
    try:
        parser = MultipartParser(boundary, callbacks)  # type: ignore[arg-type]
        parser.write(bytes(body))
        parser.finalize()
    except ClientError:
        raise
    except Exception as err:  # python-multipart raises several types for malformed bodies
        raise ClientError(400, f"malformed multipart body: {err}") from err
    images = []
    for part in parts:
        _, disposition = parse_options_header(part["headers"].get(b"content-disposition"))
        field = disposition.get(b"name", b"").decode("latin-1")
        if field not in FIELDS:
            raise ClientError(400, f"unknown form field {field!r}: send each image as a file in the field 'image'")
        if b"filename" not in disposition:
            raise ClientError(400, f"form field {field!r} must be a file upload, not text")
        name = disposition[b"filename"].decode("utf-8", "replace") or f"image {len(images)}"
        declared = part["headers"].get(b"content-type", b"").decode("latin-1") or None
        images.append((name, bytes(part["data"]), declared))
    return images


def _images_from_json(body: bytes | bytearray, max_images: int) -> list[Upload]:
    usage = 'send {"images": ["<base64>", ...]} (or items {"data": "<base64>", "name": "a.jpg"})'
    document = parse_json(body, usage)
    if not isinstance(document, dict) or not isinstance(document.get("images"), list):
        keys = sorted(document) if isinstance(document, dict) else type(document).__name__
        raise ClientError(400, f"JSON body needs an 'images' list, got {keys}; {usage}")
    if set(document) - {"images"}:
        raise ClientError(400, f"unknown JSON keys {sorted(set(document) - {'images'})}; {usage}")
    if len(document["images"]) > max_images:  # before decoding any of them
        raise _too_many(len(document["images"]), max_images)
    images = []
    for n, item in enumerate(document["images"]):
        data, name = (item.get("data"), item.get("name")) if isinstance(item, dict) else (item, None)
        if not isinstance(data, str):
            raise ClientError(400, f"images[{n}] is not a base64 string; {usage}")
        images.append((str(name or f"images[{n}]"), decode_base64(data, f"images[{n}]"), None))
    return images


def parse_json(body: bytes | bytearray | memoryview, usage: str) -> Any:
    """``json.loads`` whose every failure is a 400 naming it: bad syntax, bad UTF-8, nesting deeper than Python's
    recursion limit, an integer of more digits than Python converts (4,300)."""
    try:
        return json.loads(bytes(body))
    except (ValueError, RecursionError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        reason = "nested too deeply" if isinstance(err, RecursionError) else str(err)
        raise ClientError(400, f"body is not valid JSON ({reason}); {usage}") from err


def decode_base64(data: str, name: str) -> bytes:
    """Base64 (or a ``data:`` URL as a browser makes it) to bytes; 400 naming ``name`` if it is not."""
    if data.startswith("data:"):
        if "," not in data:
            raise ClientError(400, f"{name} is a data: URL without the comma before its base64 data")
        data = data.split(",", 1)[1]
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as err:
        raise ClientError(400, f"{name} is not valid base64 ({err})") from err


# --------------------------------------------------------------------------- checking and decoding


def check_pixels(sizes: list[tuple[str, int, int]], max_pixels: int, max_request_pixels: int) -> None:
    """Each image (name, width, height) at most ``max_pixels``, all of them together at most
    ``max_request_pixels``: 413 naming the image or the total, before anything is decoded."""
    total = 0
    for name, width, height in sizes:
        if width * height > max_pixels:
            raise ClientError(
                413,
                f"{name}: {width}x{height} is {width * height:,} pixels, over this server's cap "
                f"of {max_pixels:,} (--max-pixels)",
            )
        total += width * height
    if total > max_request_pixels:
        raise ClientError(
            413,
            f"the {len(sizes)} images of this request declare {total:,} pixels together, over this server's "
            f"per-request budget of {max_request_pixels:,} (--max-request-pixels)",
        )


def decode_uploads(
    uploads: list[Upload], in_channels: int, max_pixels: int, max_request_pixels: int, inline: bool = False
) -> list[torch.Tensor]:
    """Every upload checked, then decoded to uint8 (C, H, W) with ``in_channels`` channels (in a worker thread).

    All headers come first (format and size, before any pixel is decoded), so a decompression bomb, or many
    large images that are small files, get 413 undecoded; a name or Content-Type that contradicts the content
    gets 415. ``inline``: raise :class:`Costly` rather than decode more than :data:`INLINE_PIXELS`.
    """
    sizes, formats = [], []
    for name, data, content_type in uploads:
        if not data:
            raise ClientError(400, f"{name}: empty file")
        try:
            found, width, height = image_header(data, name)
        except TooLargeError as err:
            raise ClientError(413, f"{err}; this server's cap is {max_pixels:,} pixels (--max-pixels)") from err
        except ImageError as err:
            raise ClientError(415, str(err)) from err
        for declared in (Path(name).suffix.lower(), (content_type or "").split(";")[0].strip().lower()):
            if DECLARED_FORMATS.get(declared, found) != found:
                raise ClientError(
                    415,
                    f"{name}: the content is {found} but {declared!r} says "
                    f"{DECLARED_FORMATS[declared]}; rename it or fix its type",
                )
        sizes.append((name, width, height))
        formats.append(found)
    check_pixels(sizes, max_pixels, max_request_pixels)
    if inline and sum(width * height for _, width, height in sizes) > INLINE_PIXELS:
        raise Costly
    images = []
    for (name, data, _), found in zip(uploads, formats, strict=True):
        try:
            images.append(decode_image_bytes(data, in_channels, name, max_pixels=max_pixels))
        except ImageError as err:
            raise ClientError(422, f"{err}: the {found} data is truncated or corrupt") from err
    return images
