"""What each of the model's fast paths buys, measured against the plain form in one process, interleaved.

The forms, cumulative: ``plain`` (token mixing as ``torch.matmul(W, x) + b``, the stem's transposed tokens fed to
the blocks as they are, GELU out of place), ``+baddbmm`` (token mixing as one batched GEMM with the bias fused),
``+contiguous`` (the residual stream made contiguous once after the stem), ``+inplace-gelu`` (GELU in place when
no autograd graph is recorded) = the model as shipped. All give the same logits (checked). Eager fp32 inference.

    .venv/bin/python benchmarks/fast_paths.py --config S/16 --batch-size 32 --repeats 5
"""

from __future__ import annotations

import argparse
import contextlib
import statistics

import torch

from mlp_mixer import bench
from mlp_mixer.model import FeedForward, MLPMixer, TokenLinear

SHIPPED = (TokenLinear.forward, FeedForward.forward, MLPMixer.forward_features)


def matmul_token_linear(self: TokenLinear, x: torch.Tensor) -> torch.Tensor:
    return torch.matmul(self.weight, x) + self.bias[:, None]


def out_of_place_feed_forward(self: FeedForward, x: torch.Tensor) -> torch.Tensor:
    return self.drop2(self.fc2(self.drop1(self.act(self.fc1(x)))))


def transposed_forward_features(self: MLPMixer, x: torch.Tensor) -> torch.Tensor:
    x = self.stem(x).flatten(2).transpose(1, 2)  # (B, C, h, w) -> (B, S, C), left transposed in memory
    for block in self.blocks:
        x = block(x)
    return self.pre_head_layer_norm(x)


FORMS = {
    "plain": (matmul_token_linear, out_of_place_feed_forward, transposed_forward_features),
    "+baddbmm": (SHIPPED[0], out_of_place_feed_forward, transposed_forward_features),
    "+contiguous": (SHIPPED[0], out_of_place_feed_forward, SHIPPED[2]),
    "+inplace-gelu": SHIPPED,
}


@contextlib.contextmanager
def form(name: str):
    token, feed_forward, features = FORMS[name]
    TokenLinear.forward, FeedForward.forward, MLPMixer.forward_features = token, feed_forward, features
    try:
        yield
    finally:
        TokenLinear.forward, FeedForward.forward, MLPMixer.forward_features = SHIPPED


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
