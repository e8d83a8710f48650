"""The main job alone against two of it started at the same time, per thread setting: how gracefully a run
shares the machine (issue #26 item 3).

Each setting runs ``mlp-mixer train`` on the embedded default (its model and recipe, ``--epochs`` epochs) once alone
and then twice at once; the figure is the pair's ``train_seconds`` over the lone run's (2.0 is a fair share of a
machine whose cores were all in use; one thread per free core on 2 cores gives about 2 x (2-thread speed over
1-thread speed)). Settings, in rounds so that a drifting load hits them alike:

- ``pinned``: ``--threads`` = cores, libgomp's default wait policy (what every run did before the governor);
- ``governor``: the default (:class:`mlp_mixer.utils.threads.ThreadGovernor` follows the free cores);
- ``pinned-passive`` / ``governor-passive``: the same with ``OMP_WAIT_POLICY=PASSIVE`` (no spinning at barriers).

    .venv/bin/python benchmarks/busy_machine.py                      # ~8 min on a quiet 2-core CPU
    .venv/bin/python benchmarks/busy_machine.py --epochs 4 --rounds 1 --settings pinned,governor

Writes ``benchmarks/results/busy_machine.json`` (every run, the ratios, CPU model, load before each run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlp_mixer.utils.devices import cpu_model

SETTINGS = {
    "pinned": (True, None),
    "governor": (False, None),
    "pinned-passive": (True, "PASSIVE"),
    "governor-passive": (False, "PASSIVE"),
}


def start(setting: str, epochs: int, output: Path) -> subprocess.Popen:
    pinned, policy = SETTINGS[setting]
    command = [sys.executable, "-m", "mlp_mixer", "train", "--epochs", str(epochs), "--output", str(output)]
    command += ["--no-aug-epochs", "1"] + (["--threads", str(os.cpu_count())] if pinned else [])
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = policy
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen, output: Path) -> dict:
    log, _ = process.communicate()
    if process.returncode != 0:
        raise SystemExit(f"a run into {output} failed:\n{log[-3000:]}")
    metrics = json.loads((output / "metrics.json").read_text())
    notes = [line for line in log.splitlines() if "thread(s) instead of" in line]
    return {"train_seconds": metrics["train_seconds"], "val_top1": metrics["val_top1"], "thread_notes": notes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--settings", default=",".join(SETTINGS))
    parser.add_argument("--output", default="benchmarks/results/busy_machine.json")
    args = parser.parse_args()
    settings = args.settings.split(",")
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for setting in settings:
                load = os.getloadavg()
                alone = finish(start(setting, args.epochs, Path(tmp, "a")), Path(tmp, "a"))
                t = time.perf_counter()
                pair = [start(setting, args.epochs, Path(tmp, f"p{i}")) for i in range(2)]
                pair = [finish(p, Path(tmp, f"p{i}")) for i, p in enumerate(pair)]
                row = {
                    "round": r,
                    "setting": setting,
                    "loadavg_before": [round(x, 2) for x in load],
                    "alone": alone,
                    "pair": pair,
                    "pair_wall_seconds": round(time.perf_counter() - t, 1),
                    "slowdown": [round(p["train_seconds"] / alone["train_seconds"], 2) for p in pair],
                }
                runs.append(row)
                print(
                    f"{setting:17s} alone {alone['train_seconds']:6.1f} s   pair {pair[0]['train_seconds']:6.1f} / "
                    f"{pair[1]['train_seconds']:6.1f} s   slowdown {row['slowdown']}   load {row['loadavg_before'][0]}",
                    flush=True,
                )
    result = {"cpu": cpu_model(), "cores": os.cpu_count(), "epochs": args.epochs, "runs": runs}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
