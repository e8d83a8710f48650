"""Training images/s of one process against two (DDP over gloo) on this CPU, with the same global batch.

Both run the real command on the embedded MNIST default (its model and recipe): ``mlp-mixer train`` as one
process with 2 torch threads, and ``torchrun --nproc_per_node 2 -m mlp_mixer train`` as two processes with 1
thread each (each process computes half of every global batch, then the gradients are averaged); one process with
1 thread is the control. The speed is the ``images_per_second`` that the run logs per epoch (global images over
the main process's training time, evaluation excluded); the first epoch (warm-up) is dropped and the median of the
others taken. The settings alternate for ``--rounds`` rounds so that a busy shared machine slows them alike; the
load average is recorded, not subtracted.

    .venv/bin/python benchmarks/ddp_speedup.py                 # ~5 min on a quiet 2-core CPU
    .venv/bin/python benchmarks/ddp_speedup.py --rounds 3 --epochs 4

Writes ``benchmarks/ddp_speedup.json`` (every run, medians, the ratio, CPU model, load).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from mlp_mixer.utils.devices import cpu_model


def run(processes: int, threads: int, flags: list[str], output: Path) -> dict:
    """One training run; its per-epoch images/s (from log.csv) and the threads each process used."""
    train = ["-m", "mlp_mixer", "train", *flags, "--output", str(output)]
    if processes == 1:
        command = [sys.executable, *train]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
        command += train
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    with open(output / "log.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    speeds = [float(row["images_per_second"]) for row in rows]
    # Global images per CPU-second of the main process: with one thread per process, the speed the setting would
    # reach with a core of its own per process (the processes do equal work, and waiting costs no CPU time). A busy
    # machine lowers the wall-clock speeds, much less this estimate; with 2 threads it means nothing (they spin).
    cpu = [float(row["epoch_cpu_seconds"]) for row in rows if row.get("epoch_cpu_seconds")]
    per_cpu_second = [s * float(row["epoch_seconds"]) / c for s, row, c in zip(speeds, rows, cpu, strict=False) if c]
    metrics = json.loads((output / "metrics.json").read_text())
    return {
        "processes": processes,
        "threads_per_process": metrics["machine"]["torch_threads"],
        "images_per_second": speeds,
        "median_after_first_epoch": statistics.median(speeds[1:] or speeds),
        "images_per_cpu_second_of_rank0": [round(v, 1) for v in per_cpu_second],
        "quiet_estimate": statistics.median(per_cpu_second[1:] or per_cpu_second)
        if per_cpu_second and threads == 1
        else None,
        "val_top1": metrics.get("val_top1"),
        "loadavg": metrics["machine"].get("loadavg"),
        "loadavg_end": metrics["machine"].get("loadavg_end"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (the first is dropped)")
    parser.add_argument("--rounds", type=int, default=2, help="alternations of 1 and 2 processes")
    parser.add_argument("--batch-size", type=int, default=128, help="the global batch of both settings")
    parser.add_argument("--result", default=str(Path(__file__).with_suffix(".json")))
    args = parser.parse_args()

    # The schedule follows --epochs; both settings share it, so the speed is compared on identical work.
    flags = ["--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--device", "cpu", "--workers", "0"]
    # (processes, threads per process): the comparison asked for uses 2 cores either way; 1 x 1 is the control that
    # separates what DDP gains from what 2 threads lose on a busy machine (they wait for each other at every op).
    settings = [(1, 2), (2, 1), (1, 1)]
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for processes, threads in settings:
                result = run(processes, threads, flags, Path(tmp) / f"r{round_}_p{processes}")
                runs.append(result)
                print(
                    f"round {round_ + 1}: {processes} process(es) x {result['threads_per_process']} thread(s): "
                    f"{result['median_after_first_epoch']:.0f} img/s  (epochs: "
                    f"{', '.join(f'{s:.0f}' for s in result['images_per_second'])}; load {result['loadavg']})",
                    flush=True,
                )

    def median_of(processes: int, threads: int) -> float:
        return statistics.median(
            r["median_after_first_epoch"]
            for r in runs
            if (r["processes"], r["threads_per_process"]) == (processes, threads)
        )

    median = {1: median_of(1, 2), 2: median_of(2, 1)}
    median_1x1 = median_of(1, 1)
    quiet = {
        p: statistics.median(r["quiet_estimate"] for r in runs if r["processes"] == p and r["quiet_estimate"])
        for p in (1, 2)
        if any(r["processes"] == p and r["quiet_estimate"] for r in runs)
    }
    summary = {
        "command": "python benchmarks/ddp_speedup.py " + " ".join(sys.argv[1:]),
        "what": "training images/s of the embedded MNIST default, same global batch; 1 process x 2 threads vs "
        "torchrun 2 processes (DDP, gloo) x 1 thread, and 1 process x 1 thread as a control",
        "train_flags": flags,
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "images_per_second_1_process": round(median[1], 1),
        "images_per_second_2_processes": round(median[2], 1),
        "images_per_second_1_process_1_thread": round(median_1x1, 1),
        "speedup_2_over_1": round(median[2] / median[1], 3),
        "speedup_2_over_1_thread": round(median[2] / median_1x1, 3),
        "quiet_estimate_images_per_second": {f"{p}x1": round(v, 1) for p, v in quiet.items()},
        "quiet_estimate_speedup_2_over_1": round(quiet[2] / quiet[1], 3) if len(quiet) == 2 else None,
        "runs": runs,
    }
    Path(args.result).write_text(json.dumps(summary, indent=2) + "\n")
    print(
        f"1 process x 2 threads: {median[1]:.0f} img/s; 2 processes x 1 thread: {median[2]:.0f} img/s; "
        f"speed-up {median[2] / median[1]:.2f}x (over 1 process x 1 thread, {median_1x1:.0f} img/s: "
        f"{median[2] / median_1x1:.2f}x)  ({cpu_model()}, {os.cpu_count()} cores) -> {args.result}"
    )
    if len(quiet) == 2:
        print(
            f"from CPU time (a core per process): 1 x 1 {quiet[1]:.0f} img/s, 2 x 1 {quiet[2]:.0f} img/s, "
            f"{quiet[2] / quiet[1]:.2f}x"
        )


if __name__ == "__main__":
    main()
