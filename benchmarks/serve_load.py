"""Load test of ``mlp-mixer serve``: throughput, latency, batch sizes and errors under concurrent clients.

For each model (the embedded default's small Mixer at 28x28, and S/16 at 224), backend (torch, onnx) and batching
(on: ``--max-batch-size 32 --max-wait-ms 5``; off: ``--max-batch-size 1``), a server is started in its own process
on a free loopback port, warmed up, then C concurrent clients (1, 8, 32) send a fixed number of single-image
requests. Reported per run: throughput, client-side p50/p99 latency, the histogram of forward-pass batch sizes read
from ``/metrics``, and the error count (non-200 answers and failed requests; it must be 0). Every run is bounded in
requests and in time. The weights are random (a trained head changes nothing in the timing); results go to
``benchmarks/results/serve_load.{json,md}`` with the CPU model and the load average.

    PYTHONPATH=src .venv/bin/python benchmarks/serve_load.py                      # the full plan
    PYTHONPATH=src .venv/bin/python benchmarks/serve_load.py --models small --requests-small 100   # quick look
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime
import torch
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from mlp_mixer.model.mixer import create_model
from mlp_mixer.model.pretrained import Preprocessing
from mlp_mixer.utils.devices import cpu_model

ROOT = Path(__file__).parent.parent
# name: (constructor arguments, preprocessing, the uploaded image's size and mode)
MODELS: dict[str, tuple[dict[str, Any], Preprocessing, tuple[int, int], str]] = {
    "small": (  # the embedded default's Mixer (mlp-mixer train), 440,624 parameters
        dict(
            dim=128, depth=6, token_dim=64, channel_dim=256, patch_size=4, image_size=28, in_channels=1, num_classes=10
        ),
        Preprocessing(image_size=(28, 28), mean=(0.5,), std=(0.5,), crop_pct=1.0),
        (28, 28),
        "L",
    ),
    "S/16": ({}, Preprocessing(image_size=(224, 224)), (320, 240), "RGB"),  # a VGA-sized photo, resized and cropped
}
BATCHING = {"on": dict(max_batch_size=32, max_wait_ms=5.0), "off": dict(max_batch_size=1, max_wait_ms=0.0)}


def make_checkpoint(name: str, folder: Path) -> Path:
    config, preprocessing, _, _ = MODELS[name]
    torch.manual_seed(0)
    model = create_model("S/16", **config)  # "small" overrides every size
    torch.nn.init.normal_(model.head.weight, std=0.02)  # a zero head would tie every class
    model.classes, model.preprocessing = [str(i) for i in range(model.num_classes)], preprocessing
    model.save_pretrained(folder / name.replace("/", ""))  # a method since the Hugging Face mixin
    return folder / name.replace("/", "")


def make_image(name: str) -> bytes:
    """A smooth picture (gradients and a disc) as JPEG or PNG, what a client would upload."""
    _, _, (width, height), mode = MODELS[name]
    y, x = np.mgrid[0:height, 0:width]
    disc = (x - width * 0.6) ** 2 + (y - height * 0.4) ** 2 < (min(width, height) * 0.25) ** 2
    pixels = np.stack([x * 255 // width, y * 255 // height, np.where(disc, 230, 60)], axis=-1).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).convert(mode).save(buffer, "JPEG" if mode == "RGB" else "PNG")
    return buffer.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(checkpoint: Path, port: int, backend: str, threads: int, batching: dict, cache: Path):
    code = (
        "import sys, json; from mlp_mixer.inference.serve import serve; "
        "serve(sys.argv[1], log_level='warning', **json.loads(sys.argv[2]))"
    )
    options = dict(port=port, backend=backend, threads=threads, device="cpu", onnx_cache=str(cache), **batching)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-c", code, str(checkpoint), json.dumps(options)], env=env)
    deadline = time.monotonic() + 600  # an S/16 ONNX export on a busy 2-core machine takes a minute or two
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"server for {checkpoint} ({backend}) did not start")
        time.sleep(0.2)


def batch_histogram(url: str) -> dict[str, float]:
    """Cumulative ``mixer_batch_size`` bucket counts (``le`` -> count) and the sum, from /metrics."""
    buckets: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=10).text):
        if family.name == "mixer_batch_size":
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    buckets[sample.labels["le"]] = sample.value
                elif sample.name.endswith("_sum"):
                    buckets["sum"] = sample.value
    return buckets


def histogram_difference(after: dict[str, float], before: dict[str, float]) -> tuple[dict[str, int], float]:
    """Forward passes per batch-size bucket ("1", "2", "3-4", ...) between two readings, and the mean batch size."""
    edges = sorted((float(k), k) for k in after if k not in ("+Inf", "sum"))
    counts, lower, previous = {}, 1, 0.0
    for value, key in edges:
        cumulative = after[key] - before.get(key, 0.0)
        if cumulative - previous:
            label = f"{lower}" if lower == int(value) else f"{lower}-{int(value)}"
            counts[label] = int(cumulative - previous)
        previous, lower = cumulative, int(value) + 1
    passes = after["+Inf"] - before.get("+Inf", 0.0)
    mean = (after["sum"] - before.get("sum", 0.0)) / passes if passes else 0.0
    return counts, mean


async def load(url: str, image: bytes, filename: str, clients: int, requests: int, time_limit: float) -> dict:
    """``clients`` concurrent clients send ``requests`` single-image requests in all; stop at ``time_limit`` s."""
    latencies: list[float] = []
    errors: list[str] = []
    sent = 0

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal sent
        while sent < requests:
            sent += 1
            start = time.perf_counter()
            try:
                response = await http.post(f"{url}/v1/predict", files={"image": (filename, image)})
                if response.status_code != 200:
                    errors.append(f"{response.status_code} {response.text[:200]}")
                    continue
            except httpx.HTTPError as err:
                errors.append(repr(err))
                continue
            latencies.append(time.perf_counter() - start)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=60) as http:
        start = time.perf_counter()
        try:
            await asyncio.wait_for(asyncio.gather(*(client(http) for _ in range(clients))), time_limit)
        except TimeoutError:
            errors.append(f"stopped at the time limit of {time_limit} s")
        wall = time.perf_counter() - start
    latencies.sort()
    return {
        "requests": len(latencies) + len(errors),
        "errors": len(errors),
        "error_examples": errors[:3],
        "seconds": round(wall, 3),
        "throughput_rps": round(len(latencies) / wall, 2),
        "p50_ms": round(1000 * statistics.median(latencies), 2) if latencies else None,
        "p99_ms": round(1000 * latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 2)
        if latencies
        else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--backends", nargs="+", default=["torch", "onnx"], choices=["torch", "onnx"])
    parser.add_argument("--batching", nargs="+", default=["off", "on"], choices=list(BATCHING))
    parser.add_argument("--clients", nargs="+", type=int, default=[1, 8, 32])
    parser.add_argument("--requests-small", type=int, default=400, help="requests per run, small model")
    parser.add_argument("--requests-s16", type=int, default=160, help="requests per run, S/16")
    parser.add_argument("--time-limit", type=float, default=120.0, help="seconds per run at most")
    # One by default: the clients share the CPU, and two busy OpenMP threads on 2 shared cores stall each other.
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of the server (default: 1)")
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "serve_load"))
    args = parser.parse_args()

    started, load_before = time.time(), os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for model_name in args.models:
            checkpoint, image = make_checkpoint(model_name, scratch), make_image(model_name)
            filename = "photo.jpg" if MODELS[model_name][3] == "RGB" else "digit.png"
            requests = args.requests_small if model_name == "small" else args.requests_s16
            for backend in args.backends:
                for batching in args.batching:
                    port = free_port()
                    url = f"http://127.0.0.1:{port}"
                    server = start_server(checkpoint, port, backend, args.threads, BATCHING[batching], scratch / "onnx")
                    try:
                        asyncio.run(load(url, image, filename, 8, 16, args.time_limit))  # warm-up
                        for clients in args.clients:
                            before = batch_histogram(url)
                            result = asyncio.run(load(url, image, filename, clients, requests, args.time_limit))
                            histogram, mean = histogram_difference(batch_histogram(url), before)
                            row = dict(model=model_name, backend=backend, batching=batching, clients=clients,
                                       **result, batch_sizes=histogram, mean_batch=round(mean, 2))  # fmt: skip
                            rows.append(row)
                            print(json.dumps(row), flush=True)
                    finally:
                        server.terminate()
                        server.wait(60)
    environment = {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "server_threads": args.threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "seconds": round(time.time() - started, 1),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": " ".join(["python", "benchmarks/serve_load.py", *sys.argv[1:]]),
        "batching": BATCHING,
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps({"environment": environment, "runs": rows}, indent=2) + "\n")
    output.with_suffix(".md").write_text(markdown(environment, rows))
    print(f"wrote {output.with_suffix('.json')} and {output.with_suffix('.md')}")


def markdown(environment: dict, rows: list[dict]) -> str:
    lines = [
        f"# mlp-mixer serve under load on {environment['cpu']}",
        "",
        f"{environment['cpus']} CPUs, server threads {environment['server_threads']}, torch {environment['torch']}, "
        f"onnxruntime {environment['onnxruntime']}, python {environment['python']}; load average "
        f"{environment['load_average_before']} before, {environment['load_average_after']} after; "
        f"{environment['date']}, {environment['seconds']} s. Batching on: --max-batch-size 32 --max-wait-ms 5; "
        "off: --max-batch-size 1. Client and server share the machine (loopback).",
        "",
        f"    {environment['command']}",
        "",
        "| model | backend | batching | clients | requests | errors | req/s | p50 ms | p99 ms | mean batch | "
        "batch sizes (passes) |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        sizes = ", ".join(f"{k}: {v}" for k, v in r["batch_sizes"].items())
        lines.append(
            f"| {r['model']} | {r['backend']} | {r['batching']} | {r['clients']} | {r['requests']} | {r['errors']} | "
            f"{r['throughput_rps']} | {r['p50_ms']} | {r['p99_ms']} | {r['mean_batch']} | {sizes} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
