"""What each of the model's fast paths buys, measured against the plain form in one process, interleaved.

The forms, cumulative: ``plain`` (token mixing as ``torch.matmul(W, x) + b``, the stem's transposed tokens fed to
the blocks as they are, every MLP as its three modules: ``fast_paths(False)``), ``+baddbmm`` (token mixing as one
batched GEMM with the bias fused), ``+contiguous`` (the residual stream made contiguous once after the stem),
``+fast-paths`` (``mlp_mixer.model.fast_paths`` on: GELU in place, channel mixing's fc1+GELU as one oneDNN call)
= the model as shipped. All give the same logits (checked). Eager fp32 inference.

    .venv/bin/python benchmarks/fast_paths.py --config S/16 --batch-size 32 --repeats 5
"""

from __future__ import annotations

import argparse
import contextlib
import statistics

import torch

from mlp_mixer import bench
from mlp_mixer.model import MLPMixer, TokenLinear
from mlp_mixer.model.fast_paths import fast_paths

SHIPPED = (TokenLinear.forward, MLPMixer.forward_features)


def matmul_token_linear(self: TokenLinear, x: torch.Tensor) -> torch.Tensor:
    return torch.matmul(self.weight, x) + self.bias[:, None]


def transposed_forward_features(self: MLPMixer, x: torch.Tensor) -> torch.Tensor:
    x = self.stem(x).flatten(2).transpose(1, 2)  # (B, C, h, w) -> (B, S, C), left transposed in memory
    for block in self.blocks:
        x = block(x)
    return self.pre_head_layer_norm(x)


FORMS = {  # name: (TokenLinear.forward, MLPMixer.forward_features, fast paths on)
    "plain": (matmul_token_linear, transposed_forward_features, False),
    "+baddbmm": (SHIPPED[0], transposed_forward_features, False),
    "+contiguous": (*SHIPPED, False),
    "+fast-paths": (*SHIPPED, True),
}


@contextlib.contextmanager
def form(name: str):
    token, features, fast = FORMS[name]
    TokenLinear.forward, MLPMixer.forward_features = token, features
    try:
        with fast_paths(fast):
            yield
    finally:
        TokenLinear.forward, MLPMixer.forward_features = SHIPPED


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="S/16", help="tiny, small or a paper variant")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    config = bench.bench_config(args.config)
    device = torch.device("cpu")
    mixer = bench.build_models(config, ["ours"], device)[0]["ours"]
    x, _ = bench._images(config, args.batch_size, device)

    def runner(name: str):
        def run() -> torch.Tensor:
            with form(name), torch.inference_mode():
                return mixer(x)

        return run

    calls = {name: runner(name) for name in FORMS}
    reference = calls["plain"]()
    for name, call in calls.items():
        torch.testing.assert_close(call(), reference, atol=1e-5, rtol=0, msg=name)
    machine = bench.machine_info(device)
    _, times = bench.time_interleaved(calls, args.repeats, device)
    plain = statistics.median(times["plain"])
    print(f"{machine['cpu']}, {machine['threads']} threads, load {machine['loadavg']}")
    print(f"{args.config}, batch {args.batch_size}, eager fp32 inference, medians of {args.repeats}")
    for name, t in times.items():
        print(f"{name:>14}: {statistics.median(t) * 1e3:8.1f} ms  {plain / statistics.median(t):.2f}x plain")


if __name__ == "__main__":
    main()
