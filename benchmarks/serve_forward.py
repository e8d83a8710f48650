"""S/16's forward pass alone: ms per image by batch size, torch (fast paths on, off, oneDNN for every GEMM; with
``--threads`` above 1 also the serve worker's lanes) and onnxruntime, the best of ``--repeats`` rounds; what bounds
both servers in ``serve_load.py``'s S/16 runs (docs/serve.md).

    PYTHONPATH=src .venv/bin/python benchmarks/serve_forward.py [--batch-sizes 1 8 16 32] [--threads 1]
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
from mlp_mixer.inference.worker import lanes, onnx_forward  # noqa: E402
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
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (default: 1)")
    parser.add_argument("--repeats", type=int, default=1, help="rounds; each figure is the best (default: 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{cpu_model()}, {args.threads} thread(s), best of {args.repeats}")
    with tempfile.TemporaryDirectory() as scratch:
        checkpoint = serve_load.make_checkpoint("S/16", Path(scratch))
        predictor = Predictor(checkpoint, device="cpu", amp=False)
        export(checkpoint, Path(scratch) / "model.onnx", "onnx")
        onnx = onnx_forward(Path(scratch) / "model.onnx", args.threads)
        in_lanes = lanes(predictor.logits, args.threads) if args.threads > 1 else None
        best: dict[tuple[int, str], float] = {}
        for _ in range(args.repeats):
            for batch in args.batch_sizes:
                row = {"torch": ms_per_image(predictor.logits, batch)}
                if in_lanes is not None:
                    row["torch, lanes"] = ms_per_image(in_lanes, batch)
                with fast_paths(False):
                    row["torch, fast paths off"] = ms_per_image(predictor.logits, batch)
                with fast_paths(onednn_min_macs=0):
                    row["torch, oneDNN every GEMM"] = ms_per_image(predictor.logits, batch)
                row["onnxruntime"] = ms_per_image(onnx, batch)
                for name, value in row.items():
                    best[batch, name] = min(best.get((batch, name), float("inf")), value)
        for batch in args.batch_sizes:
            names = [name for b, name in best if b == batch]
            print(f"batch {batch}: " + ", ".join(f"{n} {best[batch, n]:.1f} ms" for n in names), flush=True)


if __name__ == "__main__":
    main()
