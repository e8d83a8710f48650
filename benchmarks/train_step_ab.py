"""Interleaved A/B of one training step (the bench's ``train_runner``: forward, cross-entropy, backward, AdamW,
timed by its ``time_interleaved``), all with the erf GELU: our model; the same model with its channel-mixing GEMMs
in MKL (``model.ONEDNN_GEMM`` off during its steps; where it is already off, as on Intel, this equals ours);
the same model with ``MLPFunction`` off (a no-op forward hook on each ``fc1`` sends every MLP through its three
modules); and timm's Mixer.

    python benchmarks/train_step_ab.py B/16 4 --threads 2   # config, repeats
"""

import argparse
import statistics
from collections.abc import Callable

import timm
import torch

from mlp_mixer import MLPMixer
from mlp_mixer.bench import time_interleaved, train_runner
from mlp_mixer.model import FeedForward
from mlp_mixer.model import mixer as model_module
from mlp_mixer.model.variants import VARIANTS
from mlp_mixer.utils.devices import machine_info

TIMM = {"S/16": "mixer_s16_224", "B/16": "mixer_b16_224"}


def ours(config: str, mlp_function: bool = True) -> torch.nn.Module:
    model = MLPMixer(**VARIANTS[config], gelu="exact")
    if not mlp_function:
        for module in model.modules():
            if isinstance(module, FeedForward):
                module.fc1.register_forward_hook(lambda *args: None)
    return model


def with_mkl(step: Callable[[], None]) -> Callable[[], None]:
    def run() -> None:
        onednn, model_module.ONEDNN_GEMM = model_module.ONEDNN_GEMM, False
        try:
            step()
        finally:
            model_module.ONEDNN_GEMM = onednn

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
        "ours without MLPFunction": ours(args.config, mlp_function=False),
        "timm": timm.create_model(TIMM[args.config], num_classes=1000),
    }
    steps = {name: train_runner(model, "eager", cpu, x, y) for name, model in models.items()}
    steps["ours, MKL GEMMs"] = with_mkl(steps["ours, MKL GEMMs"])
    _, seconds = time_interleaved(steps, args.repeats, cpu)  # an untimed first call, then rotating repeats
    median = {name: statistics.median(s) for name, s in seconds.items()}
    info = machine_info(cpu)
    where = f"{info['cpu']} ({info['cpu_capability']}, {info['cpu_vendor']})"
    print(f"{args.config}, batch 32, {args.threads} threads, {args.repeats} repeats, {where}")
    print(f"  oneDNN GEMMs by default: {model_module.ONEDNN_GEMM}")
    for name, s in seconds.items():
        print(f"  {name:26s} median {median[name]:.2f} s  ({', '.join(f'{t:.2f}' for t in s)})")
    print(
        f"  timm / ours {median['timm'] / median['ours']:.3f}; oneDNN speed-up "
        f"{median['ours, MKL GEMMs'] / median['ours']:.3f}; MLPFunction speed-up (both in MKL) "
        f"{median['ours without MLPFunction'] / median['ours, MKL GEMMs']:.3f}"
    )


if __name__ == "__main__":
    main()
