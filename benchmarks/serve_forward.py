"""S/16's forward pass alone, one intra-op thread: ms per image by batch size, torch (fast paths on, off, oneDNN
for every GEMM) and onnxruntime; what bounds both servers in ``serve_load.py``'s S/16 runs (docs/serve.md).

    PYTHONPATH=src .venv/bin/python benchmarks/serve_forward.py [--batch-sizes 1 8 16 32]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import serve_load  # noqa: E402

from mlp_mixer.inference.export import export  # noqa: E402
from mlp_mixer.inference.predict import Predictor  # noqa: E402
from mlp_mixer.inference.worker import onnx_forward  # noqa: E402
from mlp_mixer.model.fast_paths import fast_paths  # noqa: E402
from mlp_mixer.utils.devices import cpu_model  # noqa: E402


def ms_per_image(forward, batch: int, seconds: float = 3.0) -> float:
    x = torch.randn(batch, 3, 224, 224)
    forward(x)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds or runs < 2:
        forward(x)
        runs += 1
    return 1000 * (time.perf_counter() - start) / runs / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8, 16, 32])
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(cpu_model())
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = serve_load.make_checkpoint("S/16", Path(scratch))
        predictor = Predictor(checkpoint, device="cpu", amp=False)
        export(checkpoint, Path(scratch) / "model.onnx", "onnx")
        onnx = onnx_forward(Path(scratch) / "model.onnx", 1)
        for batch in args.batch_sizes:
            row = {"torch": ms_per_image(predictor.logits, batch)}
            with fast_paths(False):
                row["torch, fast paths off"] = ms_per_image(predictor.logits, batch)
            with fast_paths(onednn_min_macs=0):
                row["torch, oneDNN every GEMM"] = ms_per_image(predictor.logits, batch)
            row["onnxruntime"] = ms_per_image(onnx, batch)
            print(f"batch {batch}: " + ", ".join(f"{k} {v:.1f} ms" for k, v in row.items()), flush=True)


if __name__ == "__main__":
    main()
