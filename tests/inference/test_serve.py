"""serve: the real server (uvicorn on a free loopback port) answers as predict does, batches, refuses bad input.

The checkpoint is a training ``.pt`` of its own (not the shared save_pretrained folder): ``/v1/model`` reports the
sha256 of that one file."""

import argparse
import base64
import hashlib
import importlib
import importlib.util
import io
import os
import shutil
import signal
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from helpers import free_port, running_server, serve_process
from PIL import Image

from mlp_mixer import MLPMixer
from mlp_mixer.inference.predict import Predictor
from mlp_mixer.inference.serve import create_app
from mlp_mixer.model.pretrained import Preprocessing
from mlp_mixer.model.variants import TINY
from mlp_mixer.utils.files import atomic_save

CLASSES = [f"class_{c}" for c in "abcdefghij"]
PREPROCESSING = Preprocessing(image_size=(16, 16), mean=(0.2, 0.4, 0.6), std=(0.3, 0.2, 0.1), crop_pct=0.8)
LIMITS = dict(max_body_mb=0.25, max_pixels=100_000, max_images=4)
CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).parents[2]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = MLPMixer(**TINY).eval()
    torch.nn.init.normal_(model.head.weight, std=0.5)  # the official zero head would make every class tie
    state = {"model": model.state_dict(), "model_config": model.config(), "classes": CLASSES}
    return atomic_save({**state, "preprocessing": PREPROCESSING.to_dict()}, tmp_path_factory.mktemp("run") / "best.pt")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[Path]:
    """Eight real images of different sizes, modes and formats; the first a picture (the docs' screenshot shows it)."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:96, 0:128]
    sky = np.stack([60 + y, 120 + y, 230 - y // 2], axis=-1)
    sun = ((x - 84) ** 2 + (y - 34) ** 2 < 18**2)[..., None]
    hill = (y > 66 + 14 * np.sin(x / 20))[..., None]
    picture = np.where(sun, [250, 200, 40], np.where(hill, [40, 140, 60], sky)).astype(np.uint8)
    Image.fromarray(picture).save(root / "picture.png")
    paths = [root / "picture.png"]
    for n, (suffix, mode) in enumerate(([(".jpg", "L"), (".png", "RGBA"), (".gif", "RGB"), (".png", "RGB")] * 2)[:7]):
        size = (12 + 5 * n, 30 - 2 * n)
        image = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).convert(mode)
        paths.append(root / f"img{n}{suffix}")
        image.save(paths[-1])
    return paths


@pytest.fixture(scope="module")
def app(checkpoint):
    return create_app(checkpoint, max_batch_size=8, max_wait_ms=100, device="cpu", **LIMITS)


@pytest.fixture(scope="module")
def url(app):
    with running_server(app) as base:
        yield base


@pytest.fixture(scope="module")
def expected(checkpoint, images) -> dict[str, tuple[list[str], list[float]]]:
    """The oracle: ``predict``'s top-5 for each file."""
    results = Predictor(checkpoint, device="cpu").predict(images, topk=5, progress=False)
    return {Path(r.path).name: (r.classes, r.probabilities) for r in results}


def assert_same(result: dict, expected: tuple[list[str], list[float]]) -> None:
    classes, probabilities = expected
    assert [p["class"] for p in result["predictions"]] == classes
    np.testing.assert_allclose([p["probability"] for p in result["predictions"]], probabilities, atol=1e-5)


def upload(path: Path) -> tuple[str, tuple[str, bytes]]:
    return ("image", (path.name, path.read_bytes()))


def test_served_answers_equal_predict(url, images, expected):
    response = httpx.post(f"{url}/v1/predict", files=[upload(p) for p in images[:4]], timeout=30)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["name"] for r in results] == [p.name for p in images[:4]]
    for result in results:
        assert_same(result, expected[result["name"]])
    # JSON with base64 (a data: URL too), and one raw image body, give the same answers.
    encoded = [base64.b64encode(p.read_bytes()).decode() for p in images[4:6]]
    document = {"images": [{"data": encoded[0], "name": images[4].name}, f"data:image/png;base64,{encoded[1]}"]}
    results = httpx.post(f"{url}/v1/predict", json=document, timeout=30).json()["results"]
    assert_same(results[0], expected[images[4].name])
    assert_same(results[1], expected[images[5].name])
    raw = httpx.post(f"{url}/v1/predict?topk=2", content=images[6].read_bytes(), headers={"content-type": "image/png"})
    assert len(raw.json()["results"][0]["predictions"]) == 2
    assert [p["class"] for p in raw.json()["results"][0]["predictions"]] == expected[images[6].name][0][:2]


def test_concurrent_requests_share_forward_passes_and_each_gets_its_own_answer(app, url, images, expected):
    before = app.state.batcher.batches
    start = threading.Barrier(len(images))

    def one(path: Path) -> dict:
        with httpx.Client(timeout=30) as client:
            start.wait()  # all requests leave together; the 100 ms batch wait gathers them
            return client.post(f"{url}/v1/predict", files=[upload(path)]).json()["results"][0]

    with ThreadPoolExecutor(len(images)) as pool:
        results = list(pool.map(one, images))
    passes = app.state.batcher.batches - before
    assert passes < len(images), f"{len(images)} concurrent requests took {passes} forward passes"
    for path, result in zip(images, results, strict=True):
        assert result["name"] == path.name
        assert_same(result, expected[path.name])  # its own image's answer, not a neighbour's in the batch
    metrics = httpx.get(f"{url}/metrics").text
    assert "mixer_batch_size_bucket" in metrics and "mixer_predict_seconds_bucket" in metrics


def png_header_only(width: int, height: int) -> bytes:
    """A 60-byte PNG that claims width x height pixels: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    idat = zlib.compress(b"\0" * 64)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def encoded(image: Image.Image, format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format)
    return buffer.getvalue()


def bad_requests(images: list[Path]) -> dict[str, tuple[dict, int, str]]:
    """name: (httpx.post keyword arguments, expected status, a word the error must contain)."""
    noise = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    jpeg = encoded(Image.fromarray(noise), "JPEG")  # noise: most of the file is pixel data, past the header
    gif = next(p for p in images if p.suffix == ".gif").read_bytes()
    bomb = encoded(Image.new("L", (400, 400)), "PNG")  # 1 kB that decodes to 160,000 pixels, over the cap of 100,000
    return {
        "not an image": (dict(files=[("image", ("notes.png", b"hello, not pixels"))]), 415, "not an image"),
        "truncated JPEG": (dict(files=[("image", ("cut.jpg", jpeg[: len(jpeg) // 2]))]), 422, "truncated"),
        "GIF named .jpg": (dict(files=[("image", ("photo.jpg", gif))]), 415, "GIF"),
        "decompression bomb": (dict(files=[("image", ("bomb.png", bomb))]), 413, "100,000"),
        "bomb header": (dict(files=[("image", ("huge.png", png_header_only(100_000, 100_000)))]), 413, "pixels"),
        "empty body": (dict(content=b"", headers={"content-type": "image/png"}), 400, "empty"),
        "empty file": (dict(files=[("image", ("zero.png", b""))]), 400, "empty"),
        "body over the limit": (dict(files=[("image", ("big.png", b"\0" * 300_000))]), 413, "--max-body-mb"),
        "wrong field name": (dict(files=[("file", (images[0].name, images[0].read_bytes()))]), 400, "'file'"),
        "text in the image field": (dict(data={"image": "abc"}, files=[("x", ("", b""))]), 400, "field"),
        "too many images": (dict(files=[upload(images[0])] * 5), 400, "limit is 4"),
        "wrong JSON key": (dict(json={"image": []}), 400, "'images'"),
        "bad base64": (dict(json={"images": ["not base64!"]}), 400, "base64"),
        "not JSON": (dict(content=b"{", headers={"content-type": "application/json"}), 400, "JSON"),
        "unknown content type": (dict(content=b"abc", headers={"content-type": "text/plain"}), 415, "text/plain"),
        "bad topk": (dict(params={"topk": "x"}, files=[upload(images[0])]), 400, "topk"),
    }


def test_bad_input_gets_a_4xx_json_error_and_the_server_keeps_serving(url, images, expected):
    for name, (request, status, word) in bad_requests(images).items():
        response = httpx.post(f"{url}/v1/predict", timeout=30, **request)
        assert response.status_code == status, f"{name}: {response.status_code} {response.text}"
        assert word in response.json()["error"], f"{name}: {response.json()}"
    good = httpx.post(f"{url}/v1/predict", files=[upload(images[0])], timeout=30)
    assert_same(good.json()["results"][0], expected[images[0].name])
    missing = httpx.get(f"{url}/v2/nothing")
    assert missing.status_code == 404 and "error" in missing.json()


def test_model_probes_and_metrics(url, checkpoint):
    info = httpx.get(f"{url}/v1/model").json()
    assert info["classes"] == CLASSES
    assert info["preprocessing"] == PREPROCESSING.to_dict()
    assert info["model_config"]["patch_size"] == 4 and info["variant"] is None
    assert info["checkpoint"]["digest"] == "sha256:" + hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert {key: info["limits"][key] for key in LIMITS} == LIMITS
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{url}/readyz").status_code == 200
    metrics = httpx.get(f"{url}/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    for name in ("mixer_http_requests_total", "mixer_http_errors_total", "mixer_batch_size_bucket"):
        assert name in metrics.text


def test_onnx_backend_answers_as_predict(checkpoint, images, expected, tmp_path):
    app = create_app(checkpoint, backend="onnx", onnx_cache=tmp_path, max_wait_ms=0)
    with running_server(app) as base:
        results = httpx.post(f"{base}/v1/predict", files=[upload(p) for p in images[:3]], timeout=30).json()
        assert httpx.get(f"{base}/v1/model").json()["backend"] == "onnx"
    for result in results["results"]:
        classes, probabilities = expected[result["name"]]
        assert [p["class"] for p in result["predictions"]] == classes
        np.testing.assert_allclose([p["probability"] for p in result["predictions"]], probabilities, atol=1e-4)
    assert list(tmp_path.rglob("model.onnx"))  # exported once, kept for the next start


def test_sigterm_answers_requests_in_flight_and_refuses_new_ones(checkpoint, images, expected):
    process, url = serve_process(checkpoint, free_port(), "log_level='warning'")
    data, signalled = images[0].read_bytes(), threading.Event()

    def slow_upload():  # the request in flight: half its body before the signal, the rest after
        yield data[:20]
        signalled.wait(30)
        yield data[20:]

    try:
        deadline = time.monotonic() + 60
        with ThreadPoolExecutor(1) as pool:
            headers = {"content-type": "image/png"}
            first = pool.submit(httpx.post, f"{url}/v1/predict", content=slow_upload(), headers=headers, timeout=30)
            while "mixer_requests_in_flight 2.0" not in httpx.get(f"{url}/metrics").text:  # the upload and this one
                assert time.monotonic() < deadline and not first.done()
                time.sleep(0.02)
            process.send_signal(signal.SIGTERM)
            time.sleep(0.3)  # the signal handler runs between the server's ticks
            refused = httpx.post(f"{url}/v1/predict", files=[upload(images[1])], timeout=30)
            assert refused.status_code == 503 and "shutting down" in refused.json()["error"]
            assert httpx.get(f"{url}/readyz").status_code == 503
            assert process.poll() is None  # still up: a request is in flight
            signalled.set()
            answered = first.result(timeout=30)
        assert answered.status_code == 200, answered.text
        assert_same(answered.json()["results"][0], expected[images[0].name])
        assert process.wait(timeout=30) == 0
    finally:
        signalled.set()
        process.kill()
        process.wait()


def test_command_flags_show_defaults_and_reach_serve(monkeypatch):
    from mlp_mixer.commands import serve as command

    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    for action in parser._actions:
        if action.dest not in ("help", "checkpoint"):
            assert "default" in action.help, f"--{action.dest} help does not show its default"
    calls = []
    monkeypatch.setattr(command.serve, "serve", lambda checkpoint, **kw: calls.append((checkpoint, kw)))
    assert command.run(parser.parse_args(["--checkpoint", "c.pt", "--backend", "onnx", "--max-batch-size", "1"])) == 0
    checkpoint, options = calls[0]
    assert checkpoint == "c.pt" and options["host"] == "127.0.0.1" and options["port"] == 8000
    assert options["backend"] == "onnx" and options["max_batch_size"] == 1 and options["max_wait_ms"] == 5.0
    assert options["model_process"] is True
    command.run(parser.parse_args(["--checkpoint", "c.pt", "--in-process"]))
    assert calls[1][1]["model_process"] is False
    command.run(parser.parse_args(["--checkpoint", "c.pt", "--keep-alive-s", "7"]))
    assert calls[2][1]["keep_alive_s"] == 7.0


def browser_or_skip() -> None:
    """Chromium and Playwright, or a skip saying how to get them; in CI (MLP_MIXER_REQUIRE_BROWSER=1) a failure."""
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (install Debian's package: sudo apt-get install -y chromium)")
    if importlib.util.find_spec("playwright") is None:
        missing.append("the playwright package (pip install -e '.[dev]'; never `playwright install`)")
    if missing:
        message = "browser test needs " + " and ".join(missing)
        if os.environ.get("MLP_MIXER_REQUIRE_BROWSER") == "1":
            pytest.fail(message + "; MLP_MIXER_REQUIRE_BROWSER=1 makes it required")
        pytest.skip(message)


def test_page_in_a_real_browser_shows_predicts_top1(url, images, expected, tmp_path):
    browser_or_skip()
    from playwright.sync_api import sync_playwright

    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
    foreign = []  # requests the page makes anywhere but the app: there must be none (no CDN)
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=str(CHROMIUM), headless=True, args=args, timeout=30_000
        )
        try:
            page = context.new_page()
            page.route(
                "**/*",
                lambda route: (
                    route.continue_()
                    if route.request.url.startswith(url)
                    else (foreign.append(route.request.url), route.abort())
                ),
            )
            page.goto(url)
            page.wait_for_selector("body[data-state=ready]", timeout=15_000)
            page.set_input_files("#file", str(images[0]))
            page.wait_for_selector("body[data-state=done]", timeout=15_000)
            top1 = page.text_content("#results li[data-rank='1'] .label")
            bars = page.locator("#results li").count()
            page.screenshot(path=str(tmp_path / "serve_page.png"), full_page=True)
        finally:
            context.close()
    assert top1 == expected[images[0].name][0][0]
    assert bars == 5
    assert not foreign, f"the page reached outside the app: {foreign}"
    if os.environ.get("MLP_MIXER_UPDATE_SCREENSHOT") == "1":  # the docs' picture: docs/serve.md says how
        shutil.copy(tmp_path / "serve_page.png", ROOT / "docs" / "images" / "serve_page.png")


# --------------------------------------------------------------------------- hostile clients
# Each bounded in requests and time, on loopback; during and after each, an ordinary request gets 200 within a second.


def ordinary(url: str) -> None:
    assert httpx.get(f"{url}/healthz", timeout=1).status_code == 200


def while_running(url: str, attack) -> httpx.Response:
    """Run ``attack()`` (a request) in a thread; meanwhile every ordinary request gets 200 within a second."""
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(attack)
        while not future.done():
            ordinary(url)
            time.sleep(0.05)
        ordinary(url)
        return future.result()


def counts(url: str) -> dict[str, float]:
    """``mixer_http_requests_total`` by status, summed over paths."""
    totals: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics", timeout=1).text.splitlines():
        if line.startswith("mixer_http_requests_total{"):
            status = line.split('status="')[1].split('"')[0]
            totals[status] = totals.get(status, 0) + float(line.split()[-1])
    return totals


@pytest.fixture(scope="module")
def roomy(checkpoint):
    """A server with the default body limit (16 MB), so that large hostile bodies reach the parser."""
    app = create_app(checkpoint, device="cpu", max_images=4, max_pixels=100_000, max_request_pixels=250_000)
    with running_server(app) as base:
        yield base


@pytest.mark.slow
def test_costly_bodies_are_parsed_off_the_event_loop(roomy):
    """14 MB of JSON holding 5M empty strings, and 1 MB of multipart holding 10k parts: each gets its 400 while
    the server keeps answering others."""
    strings = b'{"images": [' + b",".join([b'""'] * 5_000_000) + b"]}"
    response = while_running(roomy, lambda: httpx.post(f"{roomy}/v1/predict", content=strings, timeout=30,
                                                       headers={"content-type": "application/json"}))  # fmt: skip
    assert response.status_code == 400 and "limit is 4" in response.json()["error"]
    boundary = "b0undary"
    part = f'--{boundary}\r\ncontent-disposition: form-data; name="image"; filename="a.png"\r\n\r\nx\r\n'
    parts = (part * 10_000 + f"--{boundary}--\r\n").encode()
    headers = {"content-type": f"multipart/form-data; boundary={boundary}"}
    response = while_running(roomy, lambda: httpx.post(f"{roomy}/v1/predict", content=parts, headers=headers))
    assert response.status_code == 400 and "more than 4" in response.json()["error"]


def test_per_request_pixel_budget_refuses_before_decoding(roomy):
    """Four images each under the per-image cap (75,000 < 100,000 pixels) that together pass the request's budget
    (250,000): 413 from their headers, nothing decoded."""
    files = [("image", (f"{n}.png", png_header_only(300, 250))) for n in range(4)]
    response = while_running(roomy, lambda: httpx.post(f"{roomy}/v1/predict", files=files))
    assert response.status_code == 413 and "--max-request-pixels" in response.json()["error"]
    assert "300,000" in response.json()["error"]


def test_client_errors_are_4xx_and_every_status_is_counted(url, app, images, monkeypatch):
    """Inputs that made 500s with tracebacks before (deep nesting, a data: URL without a comma, a 5,000-digit
    integer) are 400s; a failure of ours is a JSON 500; /metrics counts every one of them."""
    before = counts(url)
    hostile = {
        "deeply nested JSON": dict(content=b"[" * 200_000, headers={"content-type": "application/json"}),
        "data: URL without a comma": dict(json={"images": ["data:image/png;base64"]}),
        "5,000-digit integer": dict(
            content=b'{"images": [' + b"7" * 5000 + b"]}", headers={"content-type": "application/json"}
        ),  # fmt: skip
        "5,000-digit topk": dict(params={"topk": "9" * 5000}, files=[upload(images[0])]),
        "5,000-digit content-length": dict(content=b"x", headers={"content-length": "9" * 5000}),
    }
    statuses = {}
    for name, request in hostile.items():
        try:
            response = httpx.post(f"{url}/v1/predict", timeout=10, **request)
        except httpx.HTTPError:  # httpx itself may refuse to send a bad Content-Length
            continue
        statuses[name] = response.status_code
        assert 400 <= response.status_code < 500, f"{name}: {response.status_code} {response.text[:200]}"
        assert set(response.json()) == {"error"}, name
    ordinary(url)

    def broken(_):
        raise RuntimeError("a bug")

    monkeypatch.setattr(app.state.batcher, "forward", broken)
    failed = httpx.post(f"{url}/v1/predict", files=[upload(images[0])], timeout=10)
    assert failed.status_code == 500 and failed.json() == {
        "error": "internal error (RuntimeError); the server log has the details"
    }
    monkeypatch.undo()
    ordinary(url)
    after = counts(url)
    changes = {status: after[status] - before.get(status, 0) for status in after if after[status] != before.get(status)}
    expected = {"200": 2 + 1, "500": 1}  # two ordinary requests and the first /metrics scrape; the failure
    for status in statuses.values():
        expected[str(status)] = expected.get(str(status), 0) + 1
    assert changes == expected


def test_head_answers_on_every_get_route(url):
    v2 = ("/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/mlp-mixer", "/v2/models/mlp-mixer/ready")
    for path in ("/", "/healthz", "/readyz", "/v1/model", "/metrics", "/static/app.js", *v2):
        response = httpx.head(f"{url}{path}", timeout=1)
        assert response.status_code == 200 and response.content == b"", path


def test_bounded_queue_and_body_budget_answer_503_retry_after(checkpoint, images, expected):
    """Two requests whose bodies trickle fill a queue of 2 (or, each a quarter MB, a budget of 0.5 MB): the next
    gets 503 with Retry-After at once, ordinary probes still answer, and the two get their answers once their
    bodies arrive."""
    go = threading.Event()
    for options, size, word in (
        (dict(max_queue=2), 0, "--max-queue"),
        (dict(max_inflight_mb=0.5), 2**18, "--max-inflight-mb"),
    ):
        data = images[0].read_bytes()
        data += b"\0" * (size - len(data)) if size else b""  # Pillow ignores what follows a PNG's end
        go.clear()

        def slow_upload(data=data):
            yield data[:10]
            go.wait(20)
            yield data[10:]

        app = create_app(checkpoint, device="cpu", max_wait_ms=0, **options)
        headers = {"content-type": "image/png", "content-length": str(len(data))}
        with running_server(app) as base, ThreadPoolExecutor(2) as pool:
            slow = [pool.submit(httpx.post, f"{base}/v1/predict", content=slow_upload(), headers=headers,
                                timeout=30) for _ in range(2)]  # fmt: skip
            deadline = time.monotonic() + 10
            while app.state.intake.admitted < 2:
                assert time.monotonic() < deadline
                time.sleep(0.02)
            refused = httpx.post(f"{base}/v1/predict", files=[upload(images[1])], timeout=1)
            go.set()
            assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
            assert word in refused.json()["error"]
            ordinary(base)
            for future in slow:
                assert_same(future.result(timeout=30).json()["results"][0], expected[images[0].name])
            ordinary(base)


def test_digest_is_of_the_weights_file_alone(checkpoint, tmp_path):
    """A run folder with a large unrelated file beside best.pt (1 GB, sparse): the digest is best.pt's, and the
    unrelated file is never read."""
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(checkpoint, run / "best.pt")
    with open(run / "unrelated.bin", "wb") as f:
        f.truncate(2**30)
    info = create_app(run, device="cpu").state.info["checkpoint"]
    assert info["digest"] == "sha256:" + hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    assert info["weights"] == str(run / "best.pt")
