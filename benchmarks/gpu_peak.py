"""The inference rows of a CUDA ``mlp-mixer bench`` as a fraction of the card's dense bf16 peak (issue #26 item 4).

Usage: ``python benchmarks/gpu_peak.py benchmarks/results/bench_cuda.json``. The peaks are the vendors' dense
(no sparsity) bf16 tensor-core figures; a card not listed prints its FLOP rate without a fraction.
"""

from __future__ import annotations

import json
import sys

DENSE_BF16_TFLOPS = {  # card name (as torch.cuda.get_device_name gives it, lower case) -> dense bf16 TFLOP/s
    "h200": 989.0,
    "h100 80gb hbm3": 989.0,  # SXM
    "h100 pcie": 756.0,
    "a100": 312.0,
    "l40s": 362.0,
    "rtx 4090": 165.2,
    "rtx 5090": 209.5,
}


def peak(gpu: str) -> float | None:
    name = gpu.lower()
    return next((v for k, v in DENSE_BF16_TFLOPS.items() if k in name), None)


def main(path: str) -> None:
    result = json.loads(open(path).read())
    gpu = result["machine"].get("gpu") or "?"
    tflops = peak(gpu)
    print(f"card: {gpu}; dense bf16 peak: {tflops or 'unknown'} TFLOP/s\n")
    print("| config | model | mode | task | batch | images/s | TFLOP/s | of peak |")
    print("|---|---|---|---|---:|---:|---:|---:|")
    for row in result["rows"]:
        if row.get("status") != "ok" or row["task"] not in ("infer", "train") or row["model"] == "gemm":
            continue
        rate = row["gflops"] / 1e3
        share = f"{rate / tflops:.0%}" if tflops else "-"
        print(
            f"| {row['config']} | {row['model']} | {row['mode']} | {row['task']} | {row['batch_size']} | "
            f"{row['images_per_s']:.0f} | {rate:.1f} | {share} |"
        )


if __name__ == "__main__":
    main(sys.argv[1])
