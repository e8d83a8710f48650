"""Interleaved A/B of one training step (the bench's ``train_runner``: forward, cross-entropy, backward, AdamW,
timed by its ``time_interleaved``), all with the erf GELU: our model; the same model with its channel-mixing GEMMs
in MKL (``fast_paths(onednn_gemm=False)`` during its steps; where oneDNN GEMMs are already off, as on Intel, this
equals ours); the same model with the fast paths off (``fast_paths(False)``: every MLP through its three modules,
without ``MLPFunction``); and timm's Mixer.

    python benchmarks/train_step_ab.py B/16 4 --threads 2   # config, repeats
"""

import argparse
import statistics
from collections.abc import Callable

import timm
import torch

from mlp_mixer import MLPMixer
from mlp_mixer.bench import time_interleaved, train_runner
from mlp_mixer.model.fast_paths import fast_paths
from mlp_mixer.model.variants import VARIANTS
from mlp_mixer.utils.devices import machine_info

TIMM = {"S/16": "mixer_s16_224", "B/16": "mixer_b16_224"}


def ours(config: str) -> torch.nn.Module:
    return MLPMixer(**VARIANTS[config], gelu="exact")


def switched(step: Callable[[], None], **settings: bool) -> Callable[[], None]:
    """``step`` with the fast paths set by ``settings`` (the arguments of ``fast_paths``) while it runs."""

    def run() -> None:
        with fast_paths(**settings):
            step()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", choices=sorted(TIMM))
    parser.add_argument("repeats", type=int)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    x, y, cpu = torch.randn(32, 3, 224, 224), torch.randint(0, 1000, (32,)), torch.device("cpu")
    models = {
        "ours": ours(args.config),
        "ours, MKL GEMMs": ours(args.config),
        "ours without MLPFunction": ours(args.config),
        "timm": timm.create_model(TIMM[args.config], num_classes=1000),
    }
    steps = {name: train_runner(model, "eager", cpu, x, y) for name, model in models.items()}
    steps["ours, MKL GEMMs"] = switched(steps["ours, MKL GEMMs"], onednn_gemm=False)
    steps["ours without MLPFunction"] = switched(steps["ours without MLPFunction"], enabled=False)
    _, seconds = time_interleaved(steps, args.repeats, cpu)  # an untimed first call, then rotating repeats
    median = {name: statistics.median(s) for name, s in seconds.items()}
    info = machine_info(cpu)
    where = f"{info['cpu']} ({info['cpu_capability']}, {info['cpu_vendor']})"
    print(f"{args.config}, batch 32, {args.threads} threads, {args.repeats} repeats, {where}")
    print(f"  oneDNN GEMMs by default: {fast_paths().settings.onednn_gemm}")
    for name, s in seconds.items():
        print(f"  {name:26s} median {median[name]:.2f} s  ({', '.join(f'{t:.2f}' for t in s)})")
    print(
        f"  timm / ours {median['timm'] / median['ours']:.3f}; oneDNN speed-up "
        f"{median['ours, MKL GEMMs'] / median['ours']:.3f}; MLPFunction speed-up (both in MKL) "
        f"{median['ours without MLPFunction'] / median['ours, MKL GEMMs']:.3f}"
    )


if __name__ == "__main__":
    main()
