"""MKL (ATen's fp32 GEMM on x86) against oneDNN (``torch.ops.mkldnn._linear_pointwise``) on the six GEMMs of one
channel-mixing MLP's training step, interleaved (``bench.time_interleaved``), at a config's batch-32 shapes or at
explicit ones. The weight gradients stay in MKL in the model: oneDNN needs their transposed operands copied.

    python benchmarks/cpu_gemm_ab.py S/16 9 --threads 2             # rows = 32 * patches, dim, channel_dim
    python benchmarks/cpu_gemm_ab.py 3136,128,256 41 --threads 2    # the MNIST default's channel mixing
"""

import argparse
import statistics

import torch

from mlp_mixer.bench import time_interleaved
from mlp_mixer.model.variants import variant_config
from mlp_mixer.utils.devices import machine_info


def shapes(spec: str) -> tuple[int, int, int]:
    if "," in spec:
        m, c, d = (int(v) for v in spec.split(","))
        return m, c, d
    config = variant_config(spec)
    patches = (config["image_size"] // config["patch_size"]) ** 2
    return 32 * patches, config["dim"], config["channel_dim"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("shape", help="a variant (S/16) or rows,dim,channel_dim")
    parser.add_argument("repeats", type=int)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    m, c, d = shapes(args.shape)
    x, a, g, gh = torch.randn(m, c), torch.randn(m, d), torch.randn(m, c), torch.randn(m, d)
    w1, b1, w2, b2 = torch.randn(d, c), torch.randn(d), torch.randn(c, d), torch.randn(c)

    def onednn(i: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(i, w, b, "none", [], "")

    gemms = {  # name: (ATen, oneDNN); dW in oneDNN as the linear of the transposed operands
        "fc1 forward": (lambda: torch.addmm(b1, x, w1.t()), lambda: onednn(x, w1, b1)),
        "fc2 forward": (lambda: torch.addmm(b2, a, w2.t()), lambda: onednn(a, w2, b2)),
        "fc2 input grad": (lambda: g.mm(w2), lambda: onednn(g, w2.t().contiguous())),
        "fc1 input grad": (lambda: gh.mm(w1), lambda: onednn(gh, w1.t().contiguous())),
        "fc2 weight grad": (lambda: g.t().mm(a), lambda: onednn(g.t(), a.t())),
        "fc1 weight grad": (lambda: gh.t().mm(x), lambda: onednn(gh.t(), x.t())),
    }
    calls = {(name, lib): f for name, pair in gemms.items() for lib, f in zip(("MKL", "oneDNN"), pair, strict=True)}
    _, seconds = time_interleaved(calls, args.repeats, torch.device("cpu"))
    info = machine_info()
    print(f"rows {m}, dim {c}, channel_dim {d} ({m * c * d / 1e6:.0f}M multiply-adds a GEMM), {args.threads} threads,")
    print(f"{args.repeats} repeats, {info['cpu']} ({info['cpu_vendor']}, {info['cpu_capability']})")
    print("| GEMM | MKL ms | oneDNN ms | oneDNN speed-up |\n|---|---:|---:|---:|")
    for name in gemms:
        mkl, dnnl = (statistics.median(seconds[name, lib]) * 1e3 for lib in ("MKL", "oneDNN"))
        print(f"| {name} | {mkl:.2f} | {dnnl:.2f} | {mkl / dnnl:.2f} |")


if __name__ == "__main__":
    main()
