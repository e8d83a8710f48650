"""The Open Inference Protocol v2, called with the clients people use (tritonclient's HTTP client, kserve's REST
client), answers as ``mlp-mixer predict`` does on the same images: same top-1, probabilities to 1e-6."""

import asyncio
import base64
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from helpers import CLASSES, running_server
from PIL import Image

from mlp_mixer.data.decode import read_image
from mlp_mixer.inference.oip import HEADER, encode_response, parse_infer
from mlp_mixer.inference.predict import Predictor
from mlp_mixer.inference.serve import create_app
from mlp_mixer.inference.uploads import ClientError

httpclient = pytest.importorskip("tritonclient.http", reason="pip install -e '.[dev]' (tritonclient[http])")
from tritonclient.utils import InferenceServerException  # noqa: E402

NAME = "mixer"


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """Six real files: PNG and JPEG, RGB, grey and RGBA, of different sizes (the server converts to RGB)."""
    root, rng = tmp_path_factory.mktemp("oip_images"), np.random.default_rng(3)
    paths = []
    for n, (suffix, mode) in enumerate([(".png", "RGB"), (".jpg", "RGB"), (".png", "L"), (".png", "RGBA")] * 2):
        if n == 6:
            break
        pixels = rng.integers(0, 256, (20 + 3 * n, 24 - n, 3), dtype=np.uint8)
        paths.append(root / f"img{n}{suffix}")
        Image.fromarray(pixels).convert(mode).save(paths[-1])
    return paths


@pytest.fixture(scope="module")
def predictor(checkpoint) -> Predictor:
    return Predictor(checkpoint, device="cpu")


@pytest.fixture(scope="module")
def expected(predictor, images) -> np.ndarray:
    """The oracle: ``predict``'s probabilities of every class, (images, classes), rebuilt from its top-10."""
    probabilities = np.zeros((len(images), len(CLASSES)), dtype=np.float64)
    for row, result in zip(probabilities, predictor.predict(images, topk=len(CLASSES), progress=False), strict=True):
        row[result.indices] = result.probabilities
    return probabilities


@pytest.fixture(scope="module")
def url(checkpoint):
    app = create_app(checkpoint, max_batch_size=8, max_wait_ms=20, device="cpu", model_name=NAME)
    with running_server(app) as base:
        yield base


@pytest.fixture()
def client(url):
    with httpclient.InferenceServerClient(url.removeprefix("http://"), concurrency=8) as client:
        yield client


def assert_same(probabilities: np.ndarray, labels: np.ndarray | None, expected: np.ndarray) -> None:
    np.testing.assert_allclose(probabilities, expected, atol=1e-6, rtol=0)
    top1 = [CLASSES[i] for i in expected.argmax(axis=1)]
    assert [CLASSES[i] for i in probabilities.argmax(axis=1)] == top1
    if labels is not None:
        assert [row[0].decode() if isinstance(row[0], bytes) else row[0] for row in labels] == top1


def test_tritonclient_metadata_and_readiness(client, checkpoint):
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(NAME)
    assert not client.is_model_ready("other")
    assert "binary_tensor_data" in client.get_server_metadata()["extensions"]
    metadata = client.get_model_metadata(NAME)
    assert metadata["name"] == NAME and metadata["versions"] == ["1"]
    assert {i["name"]: (i["datatype"], i["shape"]) for i in metadata["inputs"]} == {
        "image": ("BYTES", [-1]),
        "pixels": ("UINT8", [-1, -1, -1, 3]),
        "input": ("FP32", [-1, 3, 16, 16]),
    }
    assert {o["name"]: o["shape"] for o in metadata["outputs"]} == {"probabilities": [-1, 10], "labels": [-1, -1]}
    parameters = metadata["parameters"]
    assert parameters["classes"] == CLASSES and parameters["preprocessing"]["image_size"] == [16, 16]
    with pytest.raises(InferenceServerException, match="not found"):
        client.get_model_metadata("other")


def test_tritonclient_encoded_images_binary_and_json(client, images, expected):
    files = np.array([p.read_bytes() for p in images], dtype=np.object_)
    binary = httpclient.InferInput("image", [len(images)], "BYTES")
    binary.set_data_from_numpy(files)  # the client's default: the binary-tensor extension
    result = client.infer(NAME, [binary])  # no outputs named: all of them, binary
    assert_same(result.as_numpy("probabilities"), result.as_numpy("labels"), expected)
    assert result.as_numpy("labels").shape == (len(images), 5)

    encoded = np.array([base64.b64encode(p.read_bytes()) for p in images], dtype=np.object_)
    as_json = httpclient.InferInput("image", [len(images)], "BYTES")
    as_json.set_data_from_numpy(encoded, binary_data=False)  # JSON carries BYTES as (base64) strings
    outputs = [
        httpclient.InferRequestedOutput("probabilities", binary_data=False),
        httpclient.InferRequestedOutput("labels", binary_data=False, class_count=3),
    ]
    result = client.infer(NAME, [as_json], outputs=outputs, request_id="r1")
    assert result.get_response()["id"] == "r1"
    assert "parameters" not in result.get_response()["outputs"][0]  # JSON data, not binary
    assert_same(result.as_numpy("probabilities"), result.as_numpy("labels"), expected)
    assert result.as_numpy("labels").shape == (len(images), 3)

    # Triton's classification extension on the probabilities: "probability:index:label", best first.
    top = client.infer(NAME, [binary], outputs=[httpclient.InferRequestedOutput("probabilities", class_count=2)])
    rows = top.as_numpy("probabilities")
    assert rows.shape == (len(images), 2)
    for row, probabilities in zip(rows, expected, strict=True):
        value, index, label = row[0].decode().split(":")
        assert int(index) == probabilities.argmax() and label == CLASSES[int(index)]
        assert abs(float(value) - probabilities.max()) < 1e-6


def test_tritonclient_pixels_and_preprocessed_async_many_in_flight(client, predictor, images, expected):
    """UINT8 [1, H, W, C] of each decoded file, and FP32 [N, C, H, W] of predict's own preprocessing, sent with
    async_infer: 3 rounds of every image in flight at once (the server batches them)."""
    pending = []
    for _ in range(3):
        for n, path in enumerate(images):
            pixels = read_image(path, 3).permute(1, 2, 0).numpy()[None]  # (1, H, W, C) uint8, predict's decoding
            tensor = httpclient.InferInput("pixels", list(pixels.shape), "UINT8")
            tensor.set_data_from_numpy(pixels)
            pending.append((n, client.async_infer(NAME, [tensor])))
    for n, request in pending:
        result = request.get_result(timeout=30)
        assert_same(result.as_numpy("probabilities"), None, expected[n : n + 1])

    batch = np.stack([predictor.load(p).numpy() for p in images]).astype(np.float32)
    for binary in (True, False):
        tensor = httpclient.InferInput("input", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch, binary_data=binary)
        result = client.infer(NAME, [tensor])
        assert_same(result.as_numpy("probabilities"), result.as_numpy("labels"), expected)


def test_tritonclient_errors_are_400_and_404_with_the_protocols_error(client, url, images):
    cases = [
        ("input", [1, 3, 8, 8], "FP32", np.zeros((1, 3, 8, 8), np.float32), "shape"),  # not the model's size
        ("pixels", [1, 4, 4, 1], "UINT8", np.zeros((1, 4, 4, 1), np.uint8), "shape"),  # one channel, not three
        ("image", [1], "BYTES", np.array([b"not an image"], dtype=np.object_), "not an image"),
        ("other", [1], "FP32", np.zeros(1, np.float32), "unknown input"),
    ]
    for name, shape, datatype, data, word in cases:
        tensor = httpclient.InferInput(name, shape, datatype)
        tensor.set_data_from_numpy(data)
        with pytest.raises(InferenceServerException, match=word):
            client.infer(NAME, [tensor])
    tensor = httpclient.InferInput("image", [1], "BYTES")
    tensor.set_data_from_numpy(np.array([images[0].read_bytes()], dtype=np.object_))
    with pytest.raises(InferenceServerException, match="not found"):
        client.infer("other", [tensor])
    for body, status in [(b'{"inputs": []}', 400), (b"[" * 100_000, 400), (b'{"inputs": [{"name": 1e999999}]}', 400)]:
        response = httpx.post(f"{url}/v2/models/{NAME}/infer", content=body)
        assert response.status_code == status and set(response.json()) == {"error"}
    assert httpx.post(f"{url}/v2/models/other/infer", content=b"{}").status_code == 404
    assert httpx.get(f"{url}/v2/models/{NAME}/versions/2").status_code == 404
    assert httpx.get(f"{url}/v2/models/{NAME}/versions/1/ready").status_code == 200
    assert httpx.get(f"{url}/healthz", timeout=1).status_code == 200  # and the server goes on


def test_kserve_rest_client_answers_as_predict(url, predictor, images, expected):
    kserve = pytest.importorskip("kserve", reason="pip install -e '.[dev]' (kserve)")

    async def calls():
        client = kserve.InferenceRESTClient(kserve.RESTConfig(protocol="v2", timeout=30))
        try:
            assert await client.is_server_ready(url) and await client.is_server_live(url)
            assert await client.is_model_ready(url, NAME)
            batch = np.stack([predictor.load(p).numpy() for p in images]).astype(np.float32)
            answers = []
            for binary in (True, False):
                tensor = kserve.InferInput("input", list(batch.shape), "FP32")
                tensor.set_data_from_numpy(batch, binary_data=binary)
                request = kserve.InferRequest(model_name=NAME, infer_inputs=[tensor])
                answers.append(await client.infer(url, request, model_name=NAME))
            files = kserve.InferInput("image", [len(images)], "BYTES")
            files.set_data_from_numpy(np.array([p.read_bytes() for p in images], dtype=np.object_), binary_data=True)
            request = kserve.InferRequest(model_name=NAME, infer_inputs=[files])
            answers.append(await client.infer(url, request, model_name=NAME))
            return answers
        finally:
            await client.close()

    for answer in asyncio.run(calls()):
        outputs = {output.name: output for output in answer.outputs}
        assert_same(outputs["probabilities"].as_numpy(), outputs["labels"].as_numpy(), expected)


# --------------------------------------------------------------------------- the parser alone


OPTIONS = dict(in_channels=3, image_size=(16, 16), max_images=4, max_pixels=10_000, max_request_pixels=20_000)


def test_parse_infer_bounds_every_field_before_costly_work():
    def error(body: bytes, header: str | None = None, status: int = 400) -> str:
        with pytest.raises(ClientError) as caught:
            parse_infer(body, header, **OPTIONS)
        assert caught.value.status == status
        return caught.value.message

    tensor = {"name": "pixels", "datatype": "UINT8"}
    huge = json.dumps({"inputs": [{**tensor, "shape": [4, 99, 99, 3], "data": []}]}).encode()
    assert "per-request budget" in error(huge, status=413)  # refused on its shape, before its data is read
    assert "images in one request" in error(
        json.dumps({"inputs": [{**tensor, "shape": [5, 1, 1, 3], "data": []}]}).encode()
    )
    assert "non-negative" in error(json.dumps({"inputs": [{**tensor, "shape": [1, -1, 2, 3], "data": []}]}).encode())
    assert "0 to 255" in error(
        json.dumps({"inputs": [{**tensor, "shape": [1, 1, 1, 3], "data": [1, 2, 256]}]}).encode()
    )
    assert "numbers" in error(json.dumps({"inputs": [{**tensor, "shape": [1, 1, 1, 3], "data": ["1", 2, 3]}]}).encode())
    prefix = b'{"inputs": [{"name": "pixels", "datatype": "UINT8", "shape": [1, 1, 1, 3], "data": [1, 2, '
    assert "JSON" in error(prefix + b"9" * 5000 + b"]}]}")  # more digits than Python converts
    assert "nested too deeply" in error(b"[" * 100_000)
    assert "header" in error(b"{}", "99")  # the declared JSON length is past the body
    body = json.dumps({"inputs": [{**tensor, "shape": [1, 1, 1, 3], "parameters": {"binary_data_size": 4}}]})
    assert "binary_data_size" in error(body.encode() + b"\0\0\0", str(len(body)))
    bytes_input = {"name": "image", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": 8}}
    body = json.dumps({"inputs": [bytes_input]}).encode()
    assert "runs past" in error(body + b"\xff\0\0\0abcd", str(len(body)))


def test_encode_response_binary_layout_is_tritons():
    """JSON header of Inference-Header-Content-Length bytes, then each binary output: FP32 little-endian, BYTES as
    4-byte little-endian lengths and the bytes."""
    import torch

    tensor = {"name": "input", "datatype": "FP32", "shape": [1, 3, 16, 16], "data": [0.0] * 768}
    body = json.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True, "topk": 2}})
    request = parse_infer(body.encode(), None, **OPTIONS)
    probabilities = torch.tensor([[0.1, 0.6, 0.3]])
    content, headers = encode_response(NAME, request, probabilities, ["a", "b", "c"])
    length = int(headers[HEADER])
    document = json.loads(content[:length])
    sizes = [o["parameters"]["binary_data_size"] for o in document["outputs"]]
    assert sizes == [12, 4 + 1 + 4 + 1] and len(content) == length + sum(sizes)
    assert np.frombuffer(content[length : length + 12], "<f4").tolist() == pytest.approx([0.1, 0.6, 0.3])
    assert content[length + 12 :] == b"\x01\0\0\0b\x01\0\0\0c"
