"""The Open Inference Protocol (KServe V2, Triton's and Seldon's HTTP API) beside ``/v1/predict``.

What a serving platform or a Triton client calls: ``GET /v2`` (server metadata), ``/v2/health/live``,
``/v2/health/ready``, ``GET /v2/models/{name}`` (model metadata: inputs, outputs, and our classes and preprocessing
as ``parameters``), ``/v2/models/{name}/ready`` and ``POST /v2/models/{name}/infer`` (each also under
``/versions/1``). ``infer`` takes one of three inputs:

- ``image``: BYTES ``[N]``, each element an encoded image (JPEG, PNG, ...; base64 strings in JSON), decoded and
  preprocessed as ``predict`` does a file;
- ``pixels``: UINT8 ``[N, H, W, C]``, decoded images (``C`` the model's channels), preprocessed as ``predict``
  does;
- ``input``: FP32 ``[N, C, H, W]``, already preprocessed (the model's own input size).

It answers ``probabilities`` (FP32 ``[N, classes]``) and ``labels`` (BYTES ``[N, k]``, the top-k class names,
k = the request's ``topk`` parameter, default 5), or the ``outputs`` the request names, with Triton's
``classification`` parameter (``"probability:index:label"`` strings) honoured. Tensors travel as JSON or in
Triton's binary-tensor extension (a JSON header of ``Inference-Header-Content-Length`` bytes, then the raw
tensors), which ``tritonclient`` uses by default; outputs are binary when the request asks (``binary_data`` per
output, or ``binary_data_output``). Errors are the protocol's ``{"error": "..."}`` with 400 (or 404 for an unknown
model). The images go through the same :class:`~.uploads.Intake` and micro-batcher as ``/v1/predict``.

The parsing is plain functions of bytes (:func:`parse_infer`, :func:`to_images`, :func:`encode_response`), run in
the intake's worker threads; :class:`OpenInference` holds the routes.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from .batching import MicroBatcher
from .predict import Predictor
from .uploads import (
    INLINE_PIXELS,
    ClientError,
    Costly,
    Intake,
    Upload,
    check_pixels,
    decode_base64,
    decode_uploads,
    parse_json,
)

HEADER = "inference-header-content-length"  # Triton's binary-tensor extension
INPUTS = {"image": "BYTES", "pixels": "UINT8", "input": "FP32"}
OUTPUTS = {"probabilities": "FP32", "labels": "BYTES"}
DEFAULT_TOPK = 5
USAGE = (
    'send {"inputs": [{"name": "image", "datatype": "BYTES", "shape": [N], "data": ["<base64>", ...]}]} '
    '(or "pixels" UINT8 [N, H, W, C], or "input" FP32 [N, C, H, W])'
)


@dataclass
class Requested:
    """One output a request asks for: its name, whether it travels as binary, Triton's ``classification`` k."""

    name: str
    binary: bool
    classification: int | None = None


@dataclass
class InferRequest:
    """A parsed ``infer`` request: which input, its images (encoded uploads or an array), the outputs to send."""

    id: str | None
    input: str
    uploads: list[Upload] = field(default_factory=list)
    array: np.ndarray | None = None
    outputs: list[Requested] = field(default_factory=list)
    topk: int = DEFAULT_TOPK

    @property
    def count(self) -> int:
        return len(self.uploads) if self.array is None else len(self.array)


# --------------------------------------------------------------------------- request


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ClientError(400, f"{what} must be a positive integer, got {json.dumps(value)[:40]}")
    return value


def _shape(tensor: dict[str, Any], name: str) -> list[int]:
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or not 1 <= len(shape) <= 4
        or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**31 for d in shape)
    ):
        raise ClientError(400, f"input '{name}': shape must be a list of 1 to 4 non-negative integers, got {shape}")
    return shape


def _bytes_elements(raw: memoryview, count: int, name: str) -> list[bytes]:
    """Triton's BYTES serialization: each element a 4-byte little-endian length, then that many bytes."""
    elements, offset = [], 0
    while offset < len(raw):
        if len(elements) == count or offset + 4 > len(raw):
            raise ClientError(400, f"input '{name}': binary BYTES data does not hold the {count} elements of its shape")
        (size,) = struct.unpack_from("<I", raw, offset)
        if offset + 4 + size > len(raw):
            raise ClientError(400, f"input '{name}': a BYTES element of {size} bytes runs past the binary data")
        elements.append(bytes(raw[offset + 4 : offset + 4 + size]))
        offset += 4 + size
    if len(elements) != count:
        raise ClientError(400, f"input '{name}': {len(elements)} BYTES elements for a shape of {count}")
    return elements


def _strings(data: Any, count: int, name: str) -> list[str]:
    """A JSON BYTES tensor's elements, flat or nested one level ([N] or [N, 1]), each a string."""
    if isinstance(data, list) and data and isinstance(data[0], list):
        data = [x for row in data if isinstance(row, list) for x in row] if len(data) == count else None
    if not isinstance(data, list) or len(data) != count or not all(isinstance(x, str) for x in data):
        raise ClientError(400, f"input '{name}': data must be {count} base64 strings, as its shape says")
    return data


def parse_infer(
    body: bytes | bytearray,
    header_length: str | None,
    *,
    in_channels: int,
    image_size: tuple[int, int],
    max_images: int,
    max_pixels: int,
    max_request_pixels: int,
) -> InferRequest:
    """An ``infer`` body (JSON, or with ``Inference-Header-Content-Length`` the binary extension) checked against
    the model and the limits; every problem a 400 naming the field."""
    view = memoryview(body)
    if header_length is not None:
        if not header_length.isdigit() or not 0 < int(header_length) <= len(body):
            raise ClientError(
                400, f"{HEADER} {header_length[:20]!r} must be the JSON header's length, 1 to the body's {len(body)}"
            )
        view, binary = view[: int(header_length)], view[int(header_length) :]
    else:
        binary = view[:0]
    document = parse_json(view, USAGE)
    if not isinstance(document, dict):
        raise ClientError(400, f"the infer request must be a JSON object; {USAGE}")
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise ClientError(400, f"'inputs' must hold exactly one tensor, one of {', '.join(INPUTS)}; {USAGE}")
    tensor = inputs[0]
    name, datatype = tensor.get("name"), tensor.get("datatype")
    if name not in INPUTS:
        raise ClientError(400, f"unknown input {name!r}: this model takes one of {', '.join(INPUTS)}; {USAGE}")
    if datatype != INPUTS[name]:
        raise ClientError(400, f"input '{name}' is {INPUTS[name]}, got datatype {datatype!r}")
    shape, count = _shape(tensor, name), 0
    parameters = tensor.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ClientError(400, f"input '{name}': parameters must be an object")
    if "binary_data_size" in parameters:
        size = parameters["binary_data_size"]
        if isinstance(size, bool) or not isinstance(size, int) or size != len(binary):
            raise ClientError(
                400, f"input '{name}': binary_data_size {size} but {len(binary)} bytes follow the JSON header"
            )
        data: Any = None
    else:
        if len(binary):
            raise ClientError(400, f"input '{name}': {len(binary)} binary bytes but no binary_data_size parameter")
        if "data" not in tensor:
            raise ClientError(400, f"input '{name}' has neither 'data' nor a binary_data_size parameter")
        data = tensor["data"]
    count = math.prod(shape)
    request = InferRequest(document.get("id") if isinstance(document.get("id"), str) else None, name)
    n = shape[0]
    if not 1 <= n <= max_images:
        raise ClientError(400, f"input '{name}': {n} images in one request; 1 to {max_images} (--max-images)")
    if name == "image":
        if shape not in ([n], [n, 1]):
            raise ClientError(400, f"input 'image' has shape [N] or [N, 1], got {shape}")
        if data is None:
            request.uploads = [(f"image[{i}]", b, None) for i, b in enumerate(_bytes_elements(binary, count, name))]
        else:
            strings = _strings(data, count, name)
            request.uploads = [(f"image[{i}]", decode_base64(x, f"image[{i}]"), None) for i, x in enumerate(strings)]
    else:
        if name == "pixels":
            if len(shape) != 4 or shape[3] != in_channels:
                raise ClientError(400, f"input 'pixels' has shape [N, H, W, {in_channels}], got {shape}")
            check_pixels([(f"pixels[{i}]", shape[2], shape[1]) for i in range(n)], max_pixels, max_request_pixels)
        elif shape != [n, in_channels, *image_size]:
            raise ClientError(400, f"input 'input' has shape [N, {in_channels}, {image_size[0]}, {image_size[1]}], "
                                   f"got {shape}")  # fmt: skip
        dtype = np.dtype("<f4") if name == "input" else np.dtype("u1")
        request.array = _array(data, binary, dtype, count, name).reshape(shape)
    request.outputs, request.topk = _outputs(document)
    return request


def _array(data: Any, binary: memoryview, dtype: np.dtype, count: int, name: str) -> np.ndarray:
    """The tensor's values, from the binary data or from JSON numbers (flat or nested), as ``dtype``."""
    if data is None:
        if len(binary) != count * dtype.itemsize:
            raise ClientError(400, f"input '{name}': {len(binary)} bytes of binary data for {count} elements of "
                                   f"{dtype.itemsize} bytes")  # fmt: skip
        return np.frombuffer(binary, dtype).copy()  # a copy: the body's memory is given back
    try:
        values = np.asarray(data)
    except ValueError as err:  # a ragged nesting
        raise ClientError(400, f"input '{name}': data must be a list of numbers, flat or regularly nested") from err
    if values.dtype.kind not in "iuf":  # strings, booleans, objects (mixed types, integers of thousands of digits)
        raise ClientError(400, f"input '{name}': data must be numbers, got {values.dtype.name} values")
    if values.size != count:
        raise ClientError(400, f"input '{name}': {values.size} values for a shape of {count} elements")
    if dtype.kind == "u" and not np.all((values >= 0) & (values <= 255) & (values == np.round(values))):
        raise ClientError(400, f"input '{name}': UINT8 values are integers 0 to 255")
    return values.reshape(-1).astype(dtype)


def _outputs(document: dict[str, Any]) -> tuple[list[Requested], int]:
    parameters = document.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ClientError(400, "'parameters' must be an object")
    binary = parameters.get("binary_data_output", False) is True
    topk = _positive_int(parameters.get("topk", DEFAULT_TOPK), "parameter 'topk'")
    requested = document.get("outputs")
    if requested is None:
        return [Requested(name, binary) for name in OUTPUTS], topk
    if not isinstance(requested, list) or not all(isinstance(o, dict) for o in requested):
        raise ClientError(400, "'outputs' must be a list of objects with a 'name'")
    outputs = []
    for output in requested:
        if output.get("name") not in OUTPUTS:
            raise ClientError(400, f"unknown output {output.get('name')!r}: this model has {', '.join(OUTPUTS)}")
        options = output.get("parameters") or {}
        if not isinstance(options, dict):
            raise ClientError(400, f"output '{output['name']}': parameters must be an object")
        k = options.get("classification")
        k = None if k is None else _positive_int(k, f"output '{output['name']}' parameter 'classification'")
        outputs.append(Requested(output["name"], options.get("binary_data", binary) is True, k))
    return outputs, topk


def to_images(
    request: InferRequest, predictor: Predictor, max_pixels: int, max_request_pixels: int, inline: bool = False
) -> list[torch.Tensor]:
    """The model's input for each image of a parsed request (in a worker thread: decoding and resizing cost;
    ``inline``: :class:`~.uploads.Costly` rather than resize or decode more than ``INLINE_PIXELS``)."""
    if request.input == "input":
        return list(torch.from_numpy(request.array))  # type: ignore[arg-type]
    if request.input == "pixels":
        n, h, w, _ = request.array.shape  # type: ignore[union-attr]
        if inline and n * h * w > INLINE_PIXELS:
            raise Costly
        pixels = torch.from_numpy(request.array).permute(0, 3, 1, 2)  # type: ignore[arg-type]  # (N, H, W, C) -> (N, C, H, W)
    else:
        pixels = decode_uploads(request.uploads, predictor.model.in_channels, max_pixels, max_request_pixels, inline)
    return [predictor.transform(image) for image in pixels]


# --------------------------------------------------------------------------- response


def _bytes_tensor(elements: list[str]) -> bytes:
    encoded = [e.encode() for e in elements]
    return b"".join(struct.pack("<I", len(e)) + e for e in encoded)


def encode_response(
    model_name: str, request: InferRequest, probabilities: torch.Tensor, classes: list[str]
) -> tuple[bytes, dict[str, str]]:
    """The ``infer`` answer (body, headers): JSON, or a JSON header and binary tensors when any output is binary."""
    n, num_classes = probabilities.shape
    outputs, blobs = [], []
    for output in request.outputs:
        k = min(output.classification or request.topk, num_classes)
        if output.name == "probabilities" and output.classification is None:
            shape, datatype = [n, num_classes], "FP32"
            values: Any = probabilities.numpy().astype("<f4")
        else:
            top, index = probabilities.topk(k, dim=-1)
            shape, datatype = [n, k], "BYTES"
            if output.name == "labels":
                values = [classes[i] for row in index.tolist() for i in row]
            else:  # Triton's classification extension: "probability:index:label"
                pairs = zip(top.reshape(-1).tolist(), index.reshape(-1).tolist(), strict=True)
                values = [f"{p}:{i}:{classes[i]}" for p, i in pairs]
        entry: dict[str, Any] = {"name": output.name, "datatype": datatype, "shape": shape}
        if output.binary:
            blob = values.tobytes() if datatype == "FP32" else _bytes_tensor(values)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = values.reshape(-1).tolist() if datatype == "FP32" else values
        outputs.append(entry)
    document: dict[str, Any] = {"model_name": model_name, "model_version": "1", "outputs": outputs}
    if request.id is not None:
        document["id"] = request.id
    header = json.dumps(document, separators=(",", ":")).encode()
    if not blobs:
        return header, {"content-type": "application/json"}
    return header + b"".join(blobs), {"content-type": "application/octet-stream", HEADER: str(len(header))}


# --------------------------------------------------------------------------- routes


class OpenInference:
    """The ``/v2`` routes of one model, over the server's intake and micro-batcher."""

    def __init__(
        self,
        name: str,
        predictor: Predictor,
        batcher: MicroBatcher,
        intake: Intake,
        limits: dict[str, Any],
        info: dict[str, Any],
        ready: Any,
    ) -> None:
        self.name, self.predictor, self.batcher, self.intake = name, predictor, batcher, intake
        self.limits, self.info, self.ready = limits, info, ready
        model = predictor.model
        self.parse_options = dict(in_channels=model.in_channels, image_size=tuple(model.image_size),
                                  max_images=limits["max_images"], max_pixels=limits["max_pixels"],
                                  max_request_pixels=limits["max_request_pixels"])  # fmt: skip

    def _model(self, name: str, version: str | None = None) -> None:
        if name != self.name:
            raise ClientError(404, f"model {name!r} not found; this server serves {self.name!r}")
        if version not in (None, "", "1"):
            raise ClientError(404, f"model {name!r} has no version {version!r}; its one version is '1'")

    async def server_metadata(self) -> dict[str, Any]:
        from .. import __version__

        return {"name": "mlp-mixer", "version": __version__, "extensions": ["binary_tensor_data", "classification"]}

    async def live(self) -> dict[str, bool]:
        return {"live": True}

    async def server_ready(self) -> JSONResponse:
        return JSONResponse({"ready": self.ready()}, status_code=200 if self.ready() else 503)

    async def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        self._model(name, version)
        model, info = self.predictor.model, self.info
        c, (h, w) = model.in_channels, model.image_size
        return {
            "name": self.name,
            "versions": ["1"],
            "platform": f"mlp-mixer_{info['backend']}",
            "inputs": [
                {"name": "image", "datatype": "BYTES", "shape": [-1]},
                {"name": "pixels", "datatype": "UINT8", "shape": [-1, -1, -1, c]},
                {"name": "input", "datatype": "FP32", "shape": [-1, c, h, w]},
            ],
            "outputs": [
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, model.num_classes]},
                {"name": "labels", "datatype": "BYTES", "shape": [-1, -1]},
            ],
            "parameters": {
                key: info[key] for key in ("classes", "preprocessing", "variant", "checkpoint", "batching", "limits")
            },  # fmt: skip
        }

    async def model_ready(self, name: str, version: str | None = None) -> JSONResponse:
        self._model(name, version)
        return JSONResponse({"name": self.name, "ready": self.ready()}, status_code=200 if self.ready() else 503)

    async def infer(self, name: str, request: Request, version: str | None = None) -> Response:
        """Classify a batch of images sent as the Open Inference Protocol's tensors (JSON or binary)."""
        self._model(name, version)
        header = request.headers.get(HEADER)
        async with self.intake.admit() as reservation:
            body = await reservation.read_body(request)
            with self.batcher.arriving():  # the batch being gathered may wait for this request
                parsed, images = await self.intake.run(self._parse, body, header)
            del body
            reservation.release()
            probabilities = (await self.batcher.submit(images)).softmax(dim=-1)
        content, headers = encode_response(self.name, parsed, probabilities, self.predictor.classes)
        return Response(content, headers=headers)

    def _parse(
        self, body: bytearray, header: str | None, inline: bool = False
    ) -> tuple[InferRequest, list[torch.Tensor]]:
        parsed = parse_infer(body, header, **self.parse_options)  # type: ignore[arg-type]
        limits = self.limits
        return parsed, to_images(parsed, self.predictor, limits["max_pixels"], limits["max_request_pixels"], inline)

    def register(self, app: FastAPI) -> None:
        """Add the routes to ``app`` (GET routes answer HEAD too)."""
        get = ["GET", "HEAD"]
        app.add_api_route("/v2", self.server_metadata, methods=get)
        app.add_api_route("/v2/health/live", self.live, methods=get)
        app.add_api_route("/v2/health/ready", self.server_ready, methods=get)
        for prefix in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
            app.add_api_route(prefix, self.model_metadata, methods=get)
            app.add_api_route(f"{prefix}/ready", self.model_ready, methods=get)
            app.add_api_route(f"{prefix}/infer", self.infer, methods=["POST"])
