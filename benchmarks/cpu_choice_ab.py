"""Which CPU kernels our default model (tanh GELU, ``ours-tanh``) should run on this machine: each choice of
``fast_paths`` (channel mixing's large GEMMs in oneDNN or MKL, ``onednn_gemm``; inference's fc1+GELU as one oneDNN
call or fc1 then ATen's GELU in place, ``onednn_gelu``) against timm's default (erf GELU), eager fp32, batch 32, the
bench's own calls (``inference_runner``, ``train_runner``) timed in one interleaved loop (``time_interleaved``).
The defaults that ``fast_paths`` picks for this CPU class (``cpu_choices``) are the rows to keep these figures for.

    python benchmarks/cpu_choice_ab.py S/16 infer 7 --threads 2
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 \\
        python benchmarks/cpu_choice_ab.py B/16 train 3 --threads 2    # the AVX2 stand-in
"""

import argparse
import itertools
import statistics
from collections.abc import Callable

import torch

from mlp_mixer.bench import bench_config, build_models, inference_runner, time_interleaved, train_runner
from mlp_mixer.bench.peers import _images
from mlp_mixer.model.fast_paths import fast_paths
from mlp_mixer.utils.devices import machine_info


def switched(call: Callable[[], object], **settings: bool) -> Callable[[], None]:
    """``call`` with the fast paths set by ``settings`` (the arguments of ``fast_paths``) while it runs."""

    def run() -> None:
        with fast_paths(**settings):
            call()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config", help="S/16, B/16, ...")
    parser.add_argument("task", choices=["infer", "train"])
    parser.add_argument("repeats", type=int)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cpu, config = torch.device("cpu"), bench_config(args.config)
    x, y = _images(config, 32, cpu)

    def runner(model: torch.nn.Module) -> Callable[[], object]:
        return (
            train_runner(model, "eager", cpu, x, y)
            if args.task == "train"
            else inference_runner(model, "eager", cpu, x)
        )

    defaults = fast_paths().settings
    gelus = (True, False) if args.task == "infer" else (defaults.onednn_gelu,)  # training never fuses the GELU
    calls: dict[str, Callable[[], object]] = {}
    for gemm, gelu in itertools.product((True, False), gelus):
        name = f"{'oneDNN' if gemm else 'MKL'} GEMMs" + (
            f", {'fused' if gelu else 'ATen'} GELU" * (args.task == "infer")
        )
        name += " (default)" * ((gemm, gelu) == (defaults.onednn_gemm, defaults.onednn_gelu))
        model = build_models(config, ["ours-tanh"], cpu)[0]["ours-tanh"]  # same weights; its own optimizer
        calls[name] = switched(runner(model), onednn_gemm=gemm, onednn_gelu=gelu)
    calls["timm (erf)"] = runner(build_models(config, ["timm"], cpu)[0]["timm"])
    info = machine_info(cpu)
    _, seconds = time_interleaved(calls, args.repeats, cpu)  # an untimed first call, then rotating repeats
    median = {name: statistics.median(s) for name, s in seconds.items()}
    print(f"{args.config} {args.task}, batch 32, {args.threads} threads, {args.repeats} repeats, {info['cpu']} "
          f"({info['cpu_vendor']}, ATen capability {info['cpu_capability']}), load {info['loadavg']} before, "
          f"{machine_info(cpu)['loadavg']} after")  # fmt: skip
    print("| ours-tanh's kernels | median s | per repeat | timm / this |\n|---|---:|---|---:|")
    for name, s in seconds.items():
        ratio = median["timm (erf)"] / median[name]
        print(f"| {name} | {median[name]:.3f} | {', '.join(f'{t:.2f}' for t in s)} | {ratio:.3f} |")


if __name__ == "__main__":
    main()
