"""The model worker process: answers as the in-process predictor, a killed worker is a 503 and is started again, one
that cannot start again stops the server, and no worker outlives its server (SIGTERM or SIGKILL)."""

import asyncio
import io
import os
import signal
import threading
import time
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
from mlp_mixer.inference.worker import ModelWorker, WorkerError, lanes
from mlp_mixer.model.pretrained import Preprocessing
from mlp_mixer.model.variants import TINY
from mlp_mixer.utils.files import atomic_save

ROOT = Path(__file__).parents[2]
CLASSES = [f"class_{c}" for c in "abcdefghij"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = MLPMixer(**TINY).eval()
    torch.nn.init.normal_(model.head.weight, std=0.5)
    preprocessing = Preprocessing(image_size=(16, 16), mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=1.0)
    state = {"model": model.state_dict(), "model_config": model.config(), "classes": CLASSES}
    return atomic_save({**state, "preprocessing": preprocessing.to_dict()}, tmp_path_factory.mktemp("run") / "best.pt")


@pytest.fixture(scope="module")
def png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def predict(url: str, png: bytes) -> httpx.Response:
    return httpx.post(f"{url}/v1/predict", files=[("image", ("a.png", png))], timeout=30)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError):
            pass
    return found


@pytest.mark.parametrize("threads", [1, 2])  # 2: a batch runs in two lanes
def test_worker_logits_equal_the_in_process_predictor(checkpoint, threads):
    predictor = Predictor(checkpoint, device="cpu", amp=False)
    worker = ModelWorker(checkpoint, (3, 16, 16), 10, max_batch_size=8, threads=threads)

    async def run() -> list[torch.Tensor]:
        await worker.start()
        try:
            return [await worker.forward(x) for x in batches]
        finally:
            await worker.stop()

    torch.manual_seed(1)
    batches = [torch.randn(n, 3, 16, 16) for n in (1, 5, 8, 2)]  # a short batch after a full one reads its own rows
    for x, logits in zip(batches, asyncio.run(run()), strict=True):
        torch.testing.assert_close(logits, predictor.logits(x), rtol=0, atol=1e-6)
    assert worker.process.poll() == 0  # it exited on its own when its socket closed

    async def too_large() -> None:
        await worker.start()
        try:
            await worker.forward(torch.zeros(9, 3, 16, 16))
        finally:
            await worker.stop()

    with pytest.raises(ValueError, match="1 to 8"):
        asyncio.run(too_large())


def test_lanes_run_slices_on_single_threaded_threads_and_keep_the_order():
    calls = []

    def forward(x: torch.Tensor) -> torch.Tensor:
        calls.append((len(x), threading.current_thread().name, torch.get_num_threads()))
        return x * 2

    run = lanes(forward, 2)
    x = torch.arange(5.0)[:, None]
    torch.testing.assert_close(run(x), x * 2, rtol=0, atol=0)  # rows back in their order
    assert sorted(c[0] for c in calls) == [2, 3]
    assert all(name.startswith("mixer-lane") and threads == 1 for _, name, threads in calls)
    calls.clear()
    run(x[:1])  # one image: on the caller's thread, with its intra-op threads
    assert calls == [(1, threading.current_thread().name, torch.get_num_threads())]


def test_killed_worker_answers_503_and_is_started_again(checkpoint, png):
    app = create_app(checkpoint, device="cpu", max_wait_ms=0)
    worker = app.state.serve.worker
    with running_server(app) as url:
        first = predict(url, png)
        assert first.status_code == 200
        old = worker.pid
        os.kill(old, signal.SIGKILL)
        while alive(old):
            time.sleep(0.01)
        lost = predict(url, png)
        assert lost.status_code == 503 and lost.headers["retry-after"] == "1"
        assert lost.json() == {"error": "the model worker was killed by SIGKILL; it is being restarted, retry"}
        again = predict(url, png)  # waits for the new worker
        assert again.status_code == 200 and again.json() == first.json()
        assert worker.restarts == 1 and worker.pid != old and alive(worker.pid)
        assert httpx.get(f"{url}/readyz", timeout=1).status_code == 200
    assert not alive(worker.pid)


def test_worker_that_cannot_start_again_stops_the_server(checkpoint, png, tmp_path):
    app = create_app(checkpoint, device="cpu", max_wait_ms=0)
    worker, state = app.state.serve.worker, app.state.serve
    with running_server(app) as url:
        assert predict(url, png).status_code == 200
        worker.config["checkpoint"] = str(tmp_path / "gone.pt")  # what the next worker will fail to load
        os.kill(worker.pid, signal.SIGKILL)
        assert predict(url, png).status_code == 503  # the batch it was lost in
        failed = predict(url, png)
        assert failed.status_code == 503
        assert failed.json()["error"].startswith("the model worker died and could not be started again: ")
        deadline = time.monotonic() + 10
        while not state.draining:  # the server drains (and serve() exits non-zero with the message)
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert state.failure == failed.json()["error"]
    assert not alive(worker.pid)
    with pytest.raises(WorkerError, match="could not be started again"):
        asyncio.run(worker.forward(torch.zeros(1, 3, 16, 16)))


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_no_worker_outlives_its_server(checkpoint, png, how):
    """SIGTERM: the server drains, stops its worker and exits 0 within the drain deadline. SIGKILL: nothing runs
    in the server to stop it, and the worker still goes (PR_SET_PDEATHSIG, and its socket's end)."""
    server, url = serve_process(
        checkpoint, free_port(), "log_level='warning', drain_timeout_s=5", ready="/readyz", seconds=120
    )
    try:
        assert predict(url, png).status_code == 200
        (worker,) = children(server.pid)
        start = time.monotonic()
        server.send_signal(how)
        assert server.wait(timeout=30) == (0 if how == signal.SIGTERM else -signal.SIGKILL)
        while alive(worker):
            assert time.monotonic() - start < 10, f"worker {worker} outlived its server"
            time.sleep(0.02)
        assert time.monotonic() - start < 5 + 1  # within the drain deadline
    finally:
        server.kill()
        server.wait()
