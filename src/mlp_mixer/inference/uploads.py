"""What a ``POST /v1/predict`` carries, read and checked: the body, its images, each decoded to pixels.

Three ways to send images (multipart field ``image``, repeatable; JSON with base64; one raw ``image/*`` body), each
bounded before it costs memory: the body's size as it streams in, the number of images, and each image's pixel
count from its header before any pixel is decoded. Every problem a client can cause is a :class:`ClientError`
naming it, with the 4xx status it gets.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator
from pathlib import Path

import torch
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request

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


class ClientError(Exception):
    """A request the server cannot answer; becomes ``{"error": message}`` with a 4xx (or 503) status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


async def read_uploads(request: Request, body_limit: int, max_images: int) -> list[Upload]:
    """Each image in the request, checked against the limits (``body_limit`` bytes, ``max_images``)."""
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


async def _images_from_multipart(request: Request, body: bytes) -> list[Upload]:
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


def _images_from_json(body: bytes) -> list[Upload]:
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


def decode_upload(name: str, data: bytes, content_type: str | None, in_channels: int, max_pixels: int) -> torch.Tensor:
    """One image checked and decoded to uint8 (C, H, W) with ``in_channels`` channels (run it in a worker thread).

    The header comes first (format and size, before any pixel is decoded), so a decompression bomb over
    ``max_pixels`` gets 413 undecoded; a name or Content-Type that contradicts the content gets 415.
    """
    if not data:
        raise ClientError(400, f"{name}: empty file")
    try:
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
        return decode_image_bytes(data, in_channels, name, max_pixels=max_pixels)
    except ImageError as err:
        raise ClientError(422, f"{err}: the {found} data is truncated or corrupt") from err
