"""Train the embedded MNIST default with recipe changes, several seeds each, and append one JSON line per run
(held-out top-1 of the final weights, training seconds, the held-out curve) to a results file; runs already in the
file are skipped, so a stopped search continues where it was.

Each run is ``mlp_mixer.train.train(TrainConfig(**overrides, seed=s, threads=t))`` in its own process. ``--parallel 2``
runs two at once on one thread each (on 2 cores, ~1.4x the runs an hour of one run on two threads): their accuracy
is what one thread gives (the sums' order differs from two threads' by the last digits, and by a few tenths of a
percent at the end), their seconds are not a quiet machine's.

    python benchmarks/recipe_search.py recipes.json --seeds 0,1,2 --parallel 2 --output search.jsonl
    # recipes.json: {"base": {}, "sam15": {"sam": 0.15}, "e17": {"epochs": 17}}
"""

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CHILD = (
    "import json, sys\n"
    "from mlp_mixer.train import TrainConfig, train\n"
    "print('METRICS' + json.dumps(train(TrainConfig(**json.loads(sys.argv[1])))))\n"
)


def run_one(name: str, overrides: dict, seed: int, threads: int, root: Path) -> dict | str:
    """One training run in a child process: its result row, or the end of its stderr when it failed."""
    output = root / f"{name}_s{seed}_t{threads}"
    config = dict(overrides, seed=seed, threads=threads, output=str(output), overwrite=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(config)], capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("METRICS")]
    if done.returncode or not lines:
        return done.stderr[-2000:]
    metrics = json.loads(lines[-1][len("METRICS") :])
    with open(output / "log.csv") as log:
        curve = [float(row["val_top1"]) for row in csv.DictReader(log)]
    return dict(
        name=name, seed=seed, threads=threads, overrides=overrides, top1=metrics["val_top1"],
        best=metrics["best_val_top1"], train_seconds=metrics["train_seconds"],
        cpu_seconds=metrics["train_cpu_seconds"], load=os.getloadavg()[0], cpu=metrics["machine"]["cpu"], curve=curve,
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipes", type=Path, help="a JSON object: name -> TrainConfig overrides")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--parallel", type=int, default=1, help="runs at once (one thread each when above 1)")
    parser.add_argument("--output", type=Path, default=Path("recipe_search.jsonl"))
    args = parser.parse_args()
    recipes = json.loads(args.recipes.read_text())
    threads = 1 if args.parallel > 1 else (os.cpu_count() or 1)
    done = set()
    if args.output.exists():
        done = {(r["name"], r["seed"], r["threads"]) for r in map(json.loads, args.output.read_text().splitlines())}
    todo = [
        (name, overrides, int(seed))
        for seed in args.seeds.split(",")
        for name, overrides in recipes.items()
        if (name, int(seed), threads) not in done
    ]
    with tempfile.TemporaryDirectory() as root, ThreadPoolExecutor(args.parallel) as pool:

        def one(item: tuple[str, dict, int]) -> None:
            name, overrides, seed = item
            row = run_one(name, overrides, seed, threads, Path(root))
            if isinstance(row, str):
                print(f"{name} seed {seed} failed:\n{row}", file=sys.stderr, flush=True)
                return
            with open(args.output, "a") as out:  # one short line per write: safe from two threads
                out.write(json.dumps(row) + "\n")
            print(f"{name:24s} seed {seed}  {100 * row['top1']:.2f}%  {row['train_seconds']:.0f} s", flush=True)

        list(pool.map(one, todo))


if __name__ == "__main__":
    main()
