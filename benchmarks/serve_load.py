"""Load test of ``mlp-mixer serve`` side by side with LitServe: throughput, latency, memory, batch sizes, errors.

For each model (the embedded default's small Mixer at 28x28, and S/16 at 224), every server of the plan is started
in its own process on a free loopback port and warmed up: ours (``mlp-mixer serve``, for each ``--backends`` and
``--batching``) and LitServe (a minimal ``LitAPI`` around the same :class:`~mlp_mixer.inference.predict.Predictor`,
with LitServe's own ``max_batch_size``/``batch_timeout`` batching, one API server, one worker). Then, for C
concurrent clients (1, 8, 32, 128), the same load generator sends each server the same single-image multipart
requests, ``--rounds`` times, the servers alternating (ours, LitServe; then LitServe, ours), so both see the same
machine load. Reported per run: throughput, client-side p50/p99 latency, the peak resident memory of the server's
processes during the run (VmHWM, reset before each run), the error count (non-200 answers and failed requests; it
must be 0) and, for ours, the histogram of forward-pass batch sizes read from ``/metrics``. Every run is bounded
in requests and in time. Batching on: ``--max-batch-size 32 --max-wait-ms 5`` (LitServe: ``max_batch_size=32,
batch_timeout=0.005``); off: 1. Server intra-op threads: ``--threads`` for both (default: the cores, torch's
own default and so both servers' out of the box; ours then runs a batch in one-thread lanes). The weights are
random (a trained head changes nothing in the timing); results go to ``benchmarks/results/serve_load.{json,md}``
with the CPU model and the load average.

    PYTHONPATH=src .venv/bin/python benchmarks/serve_load.py                      # the full plan, ours vs LitServe
    PYTHONPATH=src .venv/bin/python benchmarks/serve_load.py --models small --servers ours --backends torch onnx \
        --batching off on --clients 1 8 32 --rounds 1                             # ours alone: backends, batching
"""

from __future__ import annotations

import argparse
import asyncio
import base64
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
import litserve as ls
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
    "small": (  # the embedded default's Mixer until 2026-12-03 (4x4-pixel patches), 440,624 parameters
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
# ours: the forward pass in a worker process (the default); ours-inprocess: in a thread of the server's process
PATHS = {"ours": "/v1/predict", "ours-inprocess": "/v1/predict", "litserve": "/predict"}


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


class MixerAPI(ls.LitAPI):
    """LitServe serving a checkpoint the way its docs write an image classifier: ``decode_request`` decodes the
    upload and applies the checkpoint's transform (as ours does), ``batch`` stacks, ``predict`` runs the same
    :class:`~mlp_mixer.inference.predict.Predictor`, ``encode_response`` returns the top 5 in our JSON shape."""

    def __init__(self, checkpoint: str, threads: int, **batching: Any) -> None:
        super().__init__(**batching)
        self.checkpoint, self.threads = checkpoint, threads

    def setup(self, device: str) -> None:
        from mlp_mixer.inference.predict import Predictor

        torch.set_num_threads(self.threads)
        self.predictor = Predictor(self.checkpoint, device="cpu", amp=False)

    def decode_request(self, request: dict) -> torch.Tensor:
        from mlp_mixer.data.decode import decode_image_bytes

        data = base64.b64decode(request["images"][0], validate=True)  # the request ours takes: {"images": [b64]}
        return self.predictor.transform(decode_image_bytes(data, self.predictor.model.in_channels))

    def batch(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(inputs)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self.predictor.logits(x if x.dim() == 4 else x[None]).softmax(dim=-1)

    def unbatch(self, output: torch.Tensor) -> list[torch.Tensor]:
        return list(output)

    def encode_response(self, probabilities: torch.Tensor) -> dict:
        values, indices = probabilities.reshape(-1).topk(5)
        classes = self.predictor.classes
        top = [
            {"class": classes[i], "index": i, "probability": p}
            for i, p in zip(indices.tolist(), values.tolist(), strict=True)
        ]
        return {"results": [{"name": "image", "predictions": top}]}


def run_litserve(checkpoint: str, port: int, threads: int, max_batch_size: int, batch_timeout: float) -> None:
    """LitServe on ``port``: one API server, one worker, its own batching."""
    api = MixerAPI(checkpoint, threads, max_batch_size=max_batch_size, batch_timeout=batch_timeout)
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=1, timeout=120)
    server.run(host="127.0.0.1", port=port, num_api_servers=1, generate_client_file=False, log_level="warning")


def start_server(kind: str, checkpoint: Path, port: int, backend: str, threads: int, batching: dict, cache: Path):
    if kind.startswith("ours"):
        code = (
            "import sys, json; from mlp_mixer.inference.serve import serve; "
            "serve(sys.argv[1], log_level='warning', **json.loads(sys.argv[2]))"
        )
        options = dict(port=port, backend=backend, threads=threads, device="cpu", onnx_cache=str(cache),
                       model_process=kind == "ours", **batching)  # fmt: skip
        probe = "/readyz"
    else:
        code = (
            f"import sys, json; sys.path.insert(0, {str(Path(__file__).parent)!r}); import serve_load; "
            "serve_load.run_litserve(sys.argv[1], **json.loads(sys.argv[2]))"
        )
        options = dict(port=port, threads=threads, max_batch_size=batching["max_batch_size"],
                       batch_timeout=batching["max_wait_ms"] / 1000)  # fmt: skip
        probe = "/health"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-c", code, str(checkpoint), json.dumps(options)], env=env)
    deadline = time.monotonic() + 600  # an S/16 ONNX export on a busy 2-core machine takes a minute or two
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}{probe}", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{kind} server for {checkpoint} ({backend}) did not start")
        time.sleep(0.2)


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (LitServe runs an API server and a worker beside its main process)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, stack = [], [pid]
    while stack:
        tree.append(stack.pop())
        stack.extend(children.get(tree[-1], []))
    return tree


def reset_peak_memory(pids: list[int]) -> None:
    for pid in pids:
        try:
            Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        except OSError:
            pass


def peak_memory_mb(pids: list[int]) -> float:
    """The sum over the processes of their peak resident memory (VmHWM) since the last reset."""
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total += next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)
    return round(total / 1024, 1)


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


async def _post(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> tuple[int, bytes]:
    """One HTTP/1.1 keep-alive POST already encoded as ``request``; the status and body (``Content-Length``)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status, length = int(head[9:12]), None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    if length is None:
        raise ConnectionError(f"response without Content-Length: {head[:200]!r}")
    return status, await reader.readexactly(length)


async def load(
    url: str, image: bytes, clients: int, requests: int, time_limit: float, path: str = "/v1/predict"
) -> dict:
    """``clients`` concurrent clients send ``requests`` single-image requests in all; stop at ``time_limit`` s.

    Each client is one keep-alive connection speaking raw HTTP/1.1 over asyncio streams: a fixed request written
    whole, the answer read by its ``Content-Length``. httpx cost more CPU per request than the servers did on this
    2-core machine; this costs a fraction, and is the same bytes for both servers.
    """
    latencies: list[float] = []
    errors: list[str] = []
    sent = 0
    # JSON with the image in base64: the one upload both servers take as it is (LitServe hands its worker a
    # pickled request, which a multipart upload cannot be).
    body = json.dumps({"images": [base64.b64encode(image).decode()]}).encode()
    host, port = url.removeprefix("http://").split(":")
    request = (
        f"POST {path} HTTP/1.1\r\nhost: {host}:{port}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode() + body

    async def client() -> None:
        nonlocal sent
        connection = None
        try:
            while sent < requests:
                sent += 1
                start = time.perf_counter()
                try:
                    if connection is None:
                        connection = await asyncio.open_connection(host, int(port))
                    status, answer = await _post(*connection, request)
                except (OSError, asyncio.IncompleteReadError, ValueError) as err:
                    errors.append(repr(err))
                    if connection is not None:
                        connection[1].close()
                    connection = None
                    continue
                if status != 200:
                    errors.append(f"{status} {answer[:200]!r}")
                    continue
                latencies.append(time.perf_counter() - start)
        finally:
            if connection is not None:
                connection[1].close()

    start = time.perf_counter()
    try:
        await asyncio.wait_for(asyncio.gather(*(client() for _ in range(clients))), time_limit)
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
    parser.add_argument(
        "--servers",
        nargs="+",
        default=["ours", "litserve"],
        choices=list(PATHS),
        help="ours: a model worker process; ours-inprocess: the pass in a thread",
    )
    parser.add_argument("--backends", nargs="+", default=["torch"], choices=["torch", "onnx"], help="ours only")
    parser.add_argument("--batching", nargs="+", default=["on"], choices=list(BATCHING))
    parser.add_argument("--clients", nargs="+", type=int, default=[1, 8, 32, 128])
    parser.add_argument("--rounds", type=int, default=2, help="runs per server and concurrency, interleaved")
    parser.add_argument("--requests-small", type=int, default=400, help="requests per run, small model")
    parser.add_argument("--requests-s16", type=int, default=64, help="requests per run, S/16 (at least 2 x clients)")
    parser.add_argument("--time-limit", type=float, default=180.0, help="seconds per run at most")
    parser.add_argument(
        "--threads",
        type=int,
        default=torch.get_num_threads(),
        help="intra-op threads of the servers (default: torch's own, the cores)",
    )
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "serve_load"))
    args = parser.parse_args()

    started, load_before = time.time(), os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for model_name in args.models:
            checkpoint, image = make_checkpoint(model_name, scratch), make_image(model_name)
            base_requests = args.requests_small if model_name == "small" else args.requests_s16
            plan = [(kind, backend, batching) for kind in ("ours", "ours-inprocess") for backend in args.backends
                    for batching in args.batching]  # fmt: skip
            plan += [("litserve", "torch", batching) for batching in args.batching if "litserve" in args.servers]
            plan = [p for p in plan if p[0] in args.servers]
            servers = {}
            try:
                for kind, backend, batching in plan:  # all up at once: the runs alternate between them
                    port = free_port()
                    process = start_server(kind, checkpoint, port, backend, args.threads, BATCHING[batching],
                                           scratch / "onnx")  # fmt: skip
                    servers[kind, backend, batching] = (f"http://127.0.0.1:{port}", process)
                    asyncio.run(load(f"http://127.0.0.1:{port}", image, 8, 16, args.time_limit, PATHS[kind]))
                for clients in args.clients:
                    requests = max(base_requests, 2 * clients)
                    for round_ in range(args.rounds):
                        order = plan if round_ % 2 == 0 else plan[::-1]
                        for kind, backend, batching in order:
                            url, process = servers[kind, backend, batching]
                            pids = process_tree(process.pid)
                            reset_peak_memory(pids)
                            before = batch_histogram(url) if kind != "litserve" else {}
                            result = asyncio.run(load(url, image, clients, requests, args.time_limit,
                                                      PATHS[kind]))  # fmt: skip
                            histogram, mean = (histogram_difference(batch_histogram(url), before) if before
                                               else ({}, None))  # fmt: skip
                            row = dict(model=model_name, server=kind, backend=backend, batching=batching,
                                       clients=clients, round=round_, **result, peak_memory_mb=peak_memory_mb(pids),
                                       batch_sizes=histogram, mean_batch=None if mean is None else round(mean, 2),
                                       load_average=round(os.getloadavg()[0], 2))  # fmt: skip
                            rows.append(row)
                            print(json.dumps(row), flush=True)
            finally:
                for _, process in servers.values():
                    for pid in process_tree(process.pid)[1:]:  # LitServe's children: they outlive a terminated parent
                        try:
                            os.kill(pid, 15)
                        except OSError:
                            pass
                    process.terminate()
                    process.wait(60)
    environment = {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "server_threads": args.threads,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "litserve": _version("litserve"),
        "fastapi": _version("fastapi"),
        "uvicorn": _version("uvicorn"),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "seconds": round(time.time() - started, 1),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "command": " ".join(["python", "benchmarks/serve_load.py", *sys.argv[1:]]),
        "batching": BATCHING,
    }
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    # name + suffix, not with_suffix: "serve_load.32clients" keeps its ".32clients"
    json_path, md_path = (output.parent / f"{output.name}.{suffix}" for suffix in ("json", "md"))
    json_path.write_text(json.dumps({"environment": environment, "runs": rows}, indent=2) + "\n")
    md_path.write_text(markdown(environment, rows))
    print(f"wrote {json_path} and {md_path}")


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def summary(rows: list[dict]) -> list[dict]:
    """Per model, server configuration and concurrency: the rounds' mean throughput, mean p50, worst p99, total
    errors and worst peak memory; and ours against LitServe (same batching) where both ran."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["server"], r["backend"], r["batching"], r["clients"]), []).append(r)
    table = []
    for (model, server, backend, batching, clients), runs in groups.items():
        table.append(dict(model=model, server=server, backend=backend, batching=batching, clients=clients,
                          rounds=len(runs), requests=sum(r["requests"] for r in runs),
                          errors=sum(r["errors"] for r in runs),
                          throughput_rps=round(statistics.mean(r["throughput_rps"] for r in runs), 2),
                          p50_ms=round(statistics.mean(r["p50_ms"] or 0 for r in runs), 1),
                          p99_ms=round(max(r["p99_ms"] or 0 for r in runs), 1),
                          peak_memory_mb=max(r["peak_memory_mb"] for r in runs)))  # fmt: skip
    by_key = {(t["model"], t["server"], t["backend"], t["batching"], t["clients"]): t for t in table}
    for t in table:
        peer = by_key.get((t["model"], "litserve", "torch", t["batching"], t["clients"]))
        if t["server"] != "litserve" and peer is not None and peer["throughput_rps"]:
            t["vs_litserve_throughput"] = round(t["throughput_rps"] / peer["throughput_rps"], 2)
            t["p99_below_litserve"] = t["p99_ms"] < peer["p99_ms"]
    return table


def markdown(environment: dict, rows: list[dict]) -> str:
    lines = [
        f"# mlp-mixer serve under load on {environment['cpu']}, side by side with LitServe",
        "",
        f"{environment['cpus']} CPUs, server threads {environment['server_threads']}, torch {environment['torch']}, "
        f"onnxruntime {environment['onnxruntime']}, litserve {environment['litserve']}, fastapi "
        f"{environment['fastapi']}, uvicorn {environment['uvicorn']}, python {environment['python']}; load average "
        f"{environment['load_average_before']} before, {environment['load_average_after']} after; "
        f"{environment['date']}, {environment['seconds']} s. Batching on: --max-batch-size 32 --max-wait-ms 5 "
        "(LitServe: max_batch_size=32, batch_timeout=0.005); off: 1. Client and server share the machine "
        "(loopback); the servers alternate run by run.",
        "",
        f"    {environment['command']}",
        "",
        "## Summary (mean req/s and p50 over the rounds, worst p99 and peak memory)",
        "",
        "| model | server | backend | batching | clients | requests | errors | req/s | p50 ms | p99 ms | peak MB | "
        "ours / LitServe req/s | p99 below LitServe's |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for t in summary(rows):
        ratio = t.get("vs_litserve_throughput", "")
        below = {True: "yes", False: "no"}.get(t.get("p99_below_litserve"), "")
        lines.append(
            f"| {t['model']} | {t['server']} | {t['backend']} | {t['batching']} | {t['clients']} | {t['requests']} | "
            f"{t['errors']} | {t['throughput_rps']} | {t['p50_ms']} | {t['p99_ms']} | {t['peak_memory_mb']} | "
            f"{ratio} | {below} |"
        )
    lines += [
        "",
        "## Every run",
        "",
        "| model | server | backend | batching | clients | round | requests | errors | req/s | p50 ms | p99 ms | "
        "peak MB | load | mean batch | batch sizes (passes) |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        sizes = ", ".join(f"{k}: {v}" for k, v in r["batch_sizes"].items())
        lines.append(
            f"| {r['model']} | {r['server']} | {r['backend']} | {r['batching']} | {r['clients']} | {r['round']} | "
            f"{r['requests']} | {r['errors']} | {r['throughput_rps']} | {r['p50_ms']} | {r['p99_ms']} | "
            f"{r['peak_memory_mb']} | {r['load_average']} | {r['mean_batch'] if r['mean_batch'] is not None else ''} | "
            f"{sizes} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
