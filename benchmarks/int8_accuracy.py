"""Held-out accuracy and CPU speed of int8 against fp32, for a checkpoint trained on the embedded set.

Four ways to run the same weights: PyTorch fp32, PyTorch dynamic int8 (``quantize.quantize_dynamic_int8``),
onnxruntime fp32 and onnxruntime dynamic int8 (``mlp-mixer export --format onnx [--int8]``). Accuracy is top-1 on
the 1,000 held-out digits of ``data.embedded_mnist()``; speed is the median over repeats of a full batch, at 1
thread and at all threads, with the four runners interleaved in every repeat so a busy shared CPU slows them
alike. Results go to ``benchmarks/int8_accuracy.json`` with the CPU model and load average recorded.

    mlp-mixer train --output runs/default          # the default run (embedded MNIST)
    .venv/bin/python benchmarks/int8_accuracy.py --checkpoint runs/default/best.pt
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import onnxruntime as ort
import torch

from mlp_mixer.data.mnist import embedded_mnist
from mlp_mixer.data.transforms import eval_transform
from mlp_mixer.inference.export import export
from mlp_mixer.inference.quantize import quantize_dynamic_int8
from mlp_mixer.utils.devices import cpu_model
from mlp_mixer.weights import load_model

Runner = Callable[[torch.Tensor], torch.Tensor]


def onnx_runner(path: Path, threads: int) -> Runner:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads  # the same thread count as torch, for a fair ratio
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(["logits"], {"images": x.numpy()})[0])


def accuracy(run: Runner, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> float:
    correct = 0
    for start in range(0, len(labels), batch_size):
        correct += int((run(images[start : start + batch_size]).argmax(1) == labels[start : start + batch_size]).sum())
    return correct / len(labels)


def time_runners(runners: dict[str, Runner], batch: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median seconds per batch of each runner; runners are interleaved so a busy CPU slows them alike."""
    times: dict[str, list[float]] = {name: [] for name in runners}
    for run in runners.values():
        run(batch)  # warm-up: first-call allocations and kernel selection
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run(batch)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a model trained on the embedded set (mlp-mixer train)")
    parser.add_argument("--batch-size", type=int, default=256, help="images per timed forward pass")
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats per runner (median reported)")
    parser.add_argument(
        "--threads", type=int, nargs="+", default=[1, torch.get_num_threads()], help="thread counts to time"
    )
    parser.add_argument("--output", default=str(Path(__file__).with_suffix(".json")))
    args = parser.parse_args()
    threads = sorted(set(args.threads))

    loaded = load_model(args.checkpoint)
    model = loaded.model.cpu().eval()
    _, _, val_images, val_labels = embedded_mnist()
    if model.in_channels != val_images.shape[1]:
        val_images = val_images.expand(-1, model.in_channels, -1, -1)  # grayscale digits into an RGB model
    images = eval_transform(loaded.preprocessing)(val_images)
    int8_model = quantize_dynamic_int8(model)

    speed: dict[int, dict[str, float]] = {}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp, torch.inference_mode():
        export(loaded, Path(tmp) / "fp32.onnx", "onnx")
        export(loaded, Path(tmp) / "int8.onnx", "onnx", int8=True)
        for n in threads:
            torch.set_num_threads(n)
            runners: dict[str, Runner] = {
                "pytorch fp32": model,
                "pytorch int8": int8_model,
                "onnxruntime fp32": onnx_runner(Path(tmp) / "fp32.onnx", n),  # same thread count as torch
                "onnxruntime int8": onnx_runner(Path(tmp) / "int8.onnx", n),
            }
            if n == threads[-1]:
                top1 = {name: accuracy(run, images, val_labels, args.batch_size) for name, run in runners.items()}
            speed[n] = time_runners(runners, images[: args.batch_size], args.repeats)
    load_after = os.getloadavg()

    pairs = [
        ("pytorch int8", "pytorch fp32"),
        ("onnxruntime int8", "onnxruntime fp32"),
        ("onnxruntime int8", "pytorch fp32"),
    ]
    results = {
        "checkpoint": str(args.checkpoint),
        "model_config": model.config(),
        "held_out_images": len(val_labels),
        "top1": top1,
        "top1_change_points": {
            "pytorch": 100 * (top1["pytorch int8"] - top1["pytorch fp32"]),
            "onnxruntime": 100 * (top1["onnxruntime int8"] - top1["onnxruntime fp32"]),
        },
        "median_seconds_per_batch": {str(n): median for n, median in speed.items()},
        "speedup": {str(n): {f"{a} vs {b}": median[b] / median[a] for a, b in pairs} for n, median in speed.items()},
        "batch_size": args.batch_size,
        "repeats": args.repeats,
        "cpu": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "quantized_engine": torch.backends.quantized.engine,
        "load_average_1min_before_after": [load_before[0], load_after[0]],
        "torch": torch.__version__,
        "onnxruntime": ort.__version__,
    }
    Path(args.output).write_text(json.dumps(results, indent=2) + "\n")

    print(f"{cpu_model()} ({os.cpu_count()} logical CPUs, load average {load_before[0]:.1f} -> {load_after[0]:.1f})")
    print(f"held-out top-1 on {len(val_labels)} images; median ms per batch of {args.batch_size} over {args.repeats}")
    header = "".join(f" {f'{n} thread' + ('s' if n > 1 else ''):>10}" for n in threads)
    print(f"{'runner':<18} {'top-1':>7}{header}")
    for name in top1:
        times = "".join(f" {1e3 * speed[n][name]:>10.1f}" for n in threads)
        print(f"{name:<18} {100 * top1[name]:>6.2f}%{times}")
    for key, value in results["top1_change_points"].items():
        print(f"int8 top-1 change ({key}): {value:+.2f} points")
    for a, b in pairs:
        ratios = ", ".join(f"{speed[n][b] / speed[n][a]:.2f}x at {n} thread{'s' if n > 1 else ''}" for n in threads)
        print(f"speed-up {a} vs {b}: {ratios}")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
