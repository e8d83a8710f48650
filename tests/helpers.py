"""Data and weights that several test modules make: plain functions (fixtures live in conftest.py), so that no
test module imports another. ``pytest``'s ``pythonpath`` setting puts this folder on ``sys.path``."""

import faulthandler
import os
import pickle
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from mlp_mixer import MLPMixer
from mlp_mixer.model.pretrained import Preprocessing
from mlp_mixer.train import TrainConfig, distributed, train

ROOT = Path(__file__).parent.parent  # the checkout
RNG = np.random.default_rng(0)
# What the shared ``checkpoint`` fixture carries: ten named classes and a normalisation that is not the identity,
# so that a lost class list or preprocessing shows in a prediction.
CLASSES = [f"c{i}" for i in range(10)]
PREPROCESSING = Preprocessing(image_size=(16, 16), mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6), crop_pct=1.0)


def pixels(h: int, w: int, channels: int = 3) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, channels), dtype=np.uint8)


def save(image: Image.Image, path, fmt: str | None = None, **kw) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt, **kw)
    return str(path)


def make_folder(root, classes=("cat", "dog", "owl"), n=5, size=(12, 10), mode="RGB"):
    for c in classes:
        for i in range(n):
            save(Image.fromarray(pixels(*size)).convert(mode), root / c / f"{i}.png")
    return root


def write_cifar(root, kind: str = "cifar10", per_file: int = 6) -> tuple[np.ndarray, list[int]]:
    """A tiny CIFAR folder in the official python-pickle layout; returns the training images and labels."""
    root.mkdir(parents=True, exist_ok=True)
    num_classes = 10 if kind == "cifar10" else 100
    label_key = b"labels" if kind == "cifar10" else b"fine_labels"
    train_files = [f"data_batch_{i}" for i in range(1, 6)] if kind == "cifar10" else ["train"]
    test_files = ["test_batch"] if kind == "cifar10" else ["test"]
    names = [f"class{i}".encode() for i in range(num_classes)]
    meta = {b"label_names": names} if kind == "cifar10" else {b"fine_label_names": names}
    (root / ("batches.meta" if kind == "cifar10" else "meta")).write_bytes(pickle.dumps(meta, protocol=2))
    all_images, all_labels = [], []
    rng = np.random.default_rng(per_file)  # the same folder whichever tests ran before in this process
    for name in train_files + test_files:
        images = rng.integers(0, 256, (per_file, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, num_classes, per_file)]
        (root / name).write_bytes(pickle.dumps({b"data": images, label_key: labels}, protocol=2))
        if name in train_files:
            all_images.append(images)
            all_labels += labels
    return np.concatenate(all_images), all_labels


def make_cifar(root: Path, per_batch: int = 16, test: int = 33) -> Path:
    """A tiny CIFAR-10 python folder (random pixels and labels): 5 x ``per_batch`` train, ``test`` held out.

    33 held-out images split 16 / 17 over two processes, so the summed metrics are checked on uneven shares.
    """
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)

    def dump(name, obj):
        with open(root / name, "wb") as f:
            pickle.dump(obj, f)

    dump("batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})
    for i in range(1, 6):
        pixels = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        dump(f"data_batch_{i}", {b"data": pixels, b"labels": rng.integers(0, 10, per_batch).tolist()})
    pixels = rng.integers(0, 256, (test, 3072), dtype=np.uint8)
    dump("test_batch", {b"data": pixels, b"labels": rng.integers(0, 10, test).tolist()})
    return root


def save_pretrained(
    model: MLPMixer, directory: Path, classes: list[str] | None = None, preprocessing: Preprocessing | None = None
) -> Path:
    """``model.save_pretrained(directory)`` with class names and preprocessing attached first; returns the folder."""
    if classes is not None:
        model.classes = list(classes)
    if preprocessing is not None:
        model.preprocessing = preprocessing
    model.save_pretrained(directory)
    return Path(directory)


TASKS = Path("/proc/self/task")  # Linux: one folder per thread of this process


def thread_names() -> list[str]:
    """The names of this process's threads (gloo names its own: gloo_tcp_loop, pt_gloo_runloop)."""
    return [(task / "comm").read_text().strip() for task in TASKS.iterdir()]


def distributed_worker(
    rank: int, world: int, port: int, configs: list[TrainConfig], stop_after: int | None, logs: Path
) -> None:
    """One of ``world`` processes, set up as torchrun would (env:// rendezvous), running ``configs`` in turn in one
    process group. It lives here, not in a test module: a spawned process imports it by its module's name, and
    pytest's importlib mode names test modules so that another process cannot import them.

    Its stderr (file descriptor 2: Python, C++ and faulthandler alike) goes to ``logs/rank<rank>.stderr``, which the
    test shows when a rank fails; the names of the threads still running after :func:`distributed.teardown` go to
    ``logs/rank<rank>.threads``."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world)
    )
    with open(logs / f"rank{rank}.stderr", "w") as err:
        os.dup2(err.fileno(), 2)
    faulthandler.enable()  # a native abort prints every thread's Python stack into that file
    torch.set_num_threads(1)
    for config in configs:
        train(config, on_epoch_end=None if stop_after is None else (lambda row: row["epoch"] >= stop_after))
    distributed.teardown()
    if TASKS.is_dir():
        (logs / f"rank{rank}.threads").write_text("\n".join(sorted(thread_names())))


def randomize(model: nn.Module, seed: int = 1) -> nn.Module:
    """Random values everywhere (the official init zeroes biases and the head, which would hide bugs)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    return model


def free_port() -> int:
    """A loopback TCP port free now (for a server started in another process)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_process(
    checkpoint: Path, port: int, options: str, *, after: str = "", ready: str = "/healthz", seconds: float = 60, **popen
) -> tuple[subprocess.Popen, str]:
    """``mlp_mixer.inference.serve.serve(checkpoint, port=port, <options>)`` in a new Python process (for signals),
    with this checkout's ``src`` on its path; returns it and its base URL once ``ready`` answers 200. ``after``:
    Python run when ``serve`` returns. The caller kills the process."""
    import httpx

    code = f"import sys; from mlp_mixer.inference.serve import serve; serve(sys.argv[1], port={port}, {options}); "
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-c", code + after, str(checkpoint)], env=env, **popen)
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + seconds
    while True:
        try:
            if httpx.get(url + ready, timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError("server did not start")
        time.sleep(0.1)


@contextmanager
def running_server(app, **options):
    """``mlp_mixer.inference.serve``'s app on uvicorn in a thread, on a free loopback port; yields its base URL and
    stops it on exit. ``options`` go to ``make_server``."""
    from mlp_mixer.inference.serve import make_server

    server = make_server(app, port=0, log_level="warning", **options)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(20)
