"""Start-up cost of the command line against ``python -c "import torch"`` (issue #25 items 1 and 2).

CPU seconds (user + sys of the child, so a busy machine's waiting is not counted), median of ``--repeats`` runs,
taken in rounds (each command once per round) so that a drifting load hits them alike:

- ``import torch``: the yardstick;
- ``mlp-mixer --help`` and ``mlp-mixer predict --help`` (bound: 0.5 CPU-s);
- ``predict d.png --checkpoint nowhere/best.pt``: a path error (bound: 0.5 CPU-s);
- ``predict`` of one 28x28 PNG with a tiny checkpoint (bound: 1.5x ``import torch``).

    .venv/bin/python benchmarks/startup.py              # ~1 min on a 2-core CPU
    .venv/bin/python benchmarks/startup.py --repeats 5

Prints one line per command and writes ``benchmarks/results/startup.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def cpu_seconds(argv: list[str], cwd: str) -> float:
    """user + sys CPU seconds of one run of ``argv`` (its children included)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(argv, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", default=str(Path(__file__).parent / "results" / "startup.json"))
    args = parser.parse_args()

    import numpy as np
    import torch
    from PIL import Image

    from mlp_mixer.model.mixer import MLPMixer
    from mlp_mixer.utils.devices import cpu_model
    from mlp_mixer.weights.checkpoint import save_checkpoint

    work = tempfile.mkdtemp(prefix="startup-")
    torch.manual_seed(0)
    tiny = MLPMixer(in_channels=1, dim=32, num_classes=10, patch_size=4, image_size=28, depth=2, token_dim=16,
                    channel_dim=64)  # fmt: skip
    save_checkpoint(tiny, Path(work) / "tiny.pt")
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)).save(Path(work) / "d.png")
    cli = [sys.executable, "-m", "mlp_mixer"]
    commands = {
        "import torch": [sys.executable, "-c", "import torch"],
        "mlp-mixer --help": [*cli, "--help"],
        "mlp-mixer predict --help": [*cli, "predict", "--help"],
        "predict d.png --checkpoint nowhere/best.pt": [*cli, "predict", "d.png", "--checkpoint", "nowhere/best.pt"],
        "predict d.png --checkpoint tiny.pt": [*cli, "predict", "d.png", "--checkpoint", "tiny.pt"],
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    loads = []
    for _ in range(args.repeats):
        loads.append(os.getloadavg()[0])
        for name, argv in commands.items():
            times[name].append(cpu_seconds(argv, work))
    median = {name: statistics.median(values) for name, values in times.items()}
    torch_s = median["import torch"]
    for name, seconds in median.items():
        print(f"{name:<45} {seconds:6.2f} CPU-s  {seconds / torch_s:5.2f}x import torch")
    result = {"cpu": cpu_model(), "cores": os.cpu_count(), "load_1min": loads, "cpu_seconds": times,
              "median": median, "ratio_to_import_torch": {k: v / torch_s for k, v in median.items()}}  # fmt: skip
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['cpu']}, {os.cpu_count()} cores, 1-min load {', '.join(f'{x:.2f}' for x in loads)}")


if __name__ == "__main__":
    main()
