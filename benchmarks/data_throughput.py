"""Data throughput, ours against timm's: decoded and augmented images per second per core, from loose files and
from WebDataset shards, at 1 and 2 DataLoader workers, in one interleaved run; and what Mixer-B/16 consumes.

    ./run.sh python benchmarks/data_throughput.py            # writes benchmarks/results/data_throughput.{json,md}

The images are synthetic photographs of ImageNet's typical size and weight (500x375 JPEGs, smooth shapes plus
grain, ~100 KB at quality 90); the transform is the ImageNet training recipe's (configs/imagenet_b16_scratch.yaml):
RandomResizedCrop to 224 (area 8-100%) and RandAugment(2, 15), per image in the workers, as training does. Each
figure is one full pass over the images, worker start-up included, ending in normalised float batches in the main
process (timm's prefetcher normalises there; ours runs ``to_input``, what training runs on its device); each is
taken ``--rounds`` times, interleaved (ours, timm, ours, timm, ...: a change of load on a shared machine hits both),
and reported as the median with the lowest and highest. Two per-core figures: images a second of wall time divided
by the workers (what a worker that has a core to itself delivers), and images per CPU second of all the processes
together, the workers and the main process (collating, handing batches over and normalising included; a busy
machine stretches the first, hardly the second). An extra row reads shards written with ``mlp-mixer shard
--max-size 256`` (images stored with the shorter side 256): ours only, since timm reads other files there (its
ratio is against timm on the originals).
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import statistics
import tempfile
import time
from pathlib import Path

import torch
from torchvision.io import encode_jpeg

from mlp_mixer.data.loader import iterate_batches, iterate_stream
from mlp_mixer.data.shard_reader import ShardImages
from mlp_mixer.data.shard_writer import write_shards
from mlp_mixer.data.shards import open_shards
from mlp_mixer.data.sources import load_splits
from mlp_mixer.data.transforms import to_input, train_geometry
from mlp_mixer.model import create_model
from mlp_mixer.model.pretrained import Preprocessing
from mlp_mixer.utils.devices import machine_info
from mlp_mixer.utils.files import write_json, write_text

# timm's published training throughput of mixer_b16_224 (AMP, batch 256, RTX 3090, PyTorch 1.12 / CUDA 11.3):
# huggingface/pytorch-image-models results/benchmark-train-amp-nchw-pt112-cu113-rtx3090.csv
TIMM_B16_TRAIN = {"gpu": "RTX 3090 (AMP, batch 256)", "images_per_second": 528.02}
RESULTS = Path(__file__).parent / "results"
MAX_SIZE_ROW = "shards, --max-size 256"
TIMM_SOURCE = {MAX_SIZE_ROW: "shards"}  # the row ours on --max-size shards is compared with


def photo(generator: torch.Generator, height: int = 375, width: int = 500) -> torch.Tensor:
    """A uint8 (3, H, W) image with a photograph's compressibility: low-frequency colour fields plus grain."""
    coarse = torch.rand(3, 6, 8, generator=generator) * 255
    image = torch.nn.functional.interpolate(coarse[None], size=(height, width), mode="bicubic", align_corners=False)[0]
    image += torch.randn(3, height, width, generator=generator) * 12
    return image.clamp(0, 255).to(torch.uint8)


def make_images(root: Path, count: int) -> Path:
    generator = torch.Generator().manual_seed(0)
    for i in range(count):
        folder = root / "train" / f"c{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i}.jpg").write_bytes(encode_jpeg(photo(generator), quality=90).numpy().tobytes())
    for c in range(4):  # a val/ so the folder reads as train/ + val/
        (root / "val" / f"c{c}").mkdir(parents=True, exist_ok=True)
        (root / "val" / f"c{c}" / "0.jpg").write_bytes((root / "train" / f"c{c}" / f"{c}.jpg").read_bytes())
    return root


def cpu_seconds() -> float:
    """CPU seconds used so far by this process and by its children that have ended (DataLoader workers are joined
    at the end of each pass, so a pass's workers are counted once it is over)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(batches) -> tuple[float, float]:
    """(images a second of wall time, images per CPU second of all processes) of one pass over ``batches``."""
    start, cpu, count = time.perf_counter(), cpu_seconds(), 0
    for n in batches:
        count += n
    wall = time.perf_counter() - start
    return count / wall, count / (cpu_seconds() - cpu)


PREPROCESSING = Preprocessing(image_size=(224, 224), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))


def one_pass(dataset, workers: int, batch: int = 32) -> tuple[float, float]:
    """One full pass of our loader (every image decoded and transformed in the workers), each batch normalised to
    float in the main process by ``to_input`` (as timm's prefetcher does)."""
    device = torch.device("cpu")
    if dataset.streamed:
        batches = iterate_stream(dataset, batch, workers, device)
    else:
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0)).tolist()
        index = [order[i : i + batch] for i in range(0, len(order), batch)]
        batches = iterate_batches(dataset, index, workers, device)
    return timed(len(to_input(b.images, PREPROCESSING, 3, device)) for b in batches)


def timm_loader(source: str, root: Path, workers: int, batch: int = 32, auto_augment: str = "rand-m15-n2"):
    """timm's training loader on the same files: ``create_dataset`` (an ImageFolder, or its ``wds/`` reader of the
    same shards) and ``create_loader`` with the paper's augmentation: RandomResizedCrop(224, scale 0.08-1),
    RandAugment(2, 15) (``rand-m15-n2``), flips, its prefetcher normalising after the workers as ours does."""
    from timm.data import create_dataset, create_loader

    if source == "shards":
        dataset = create_dataset("wds/bench", root=str(root), split="train", is_training=True, batch_size=batch)
    else:
        dataset = create_dataset("", root=str(root / "train"), split="train", is_training=True)
    return create_loader(dataset, input_size=(3, 224, 224), batch_size=batch, is_training=True,
                         scale=(0.08, 1.0), auto_augment=auto_augment, interpolation="bilinear",
                         num_workers=workers, device=torch.device("cpu"), persistent_workers=False)  # fmt: skip


def timm_pass(source: str, root: Path, workers: int, auto_augment: str) -> tuple[float, float]:
    """One full pass of timm's loader (worker start-up included, as for ours)."""
    return timed(len(images) for images, _ in timm_loader(source, root, workers, auto_augment=auto_augment))


def timm_info(shards: Path) -> None:
    """The ``_info.json`` timm's wds reader needs beside the shards (ours are WebDataset shards already)."""
    found = open_shards(shards)
    train = found.splits["train"]
    split = {"name": "train", "num_samples": sum(s.images for s in train),
             "filenames": [s.path.name for s in train], "shard_lengths": [s.images for s in train]}  # fmt: skip
    write_json(shards / "_info.json", {"name": "bench", "splits": {"train": split}})


def model_rate(steps: int = 3, batch: int = 8) -> float:
    """Training images per second of Mixer-B/16 at 224 on this CPU: forward, backward and an AdamW step."""
    model = create_model("B/16", num_classes=1000)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = torch.randn(batch, 3, 224, 224), torch.randint(0, 1000, (batch,))
    times = []
    for _ in range(steps + 1):
        start = time.perf_counter()
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
        times.append(time.perf_counter() - start)
    return batch / min(times[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=320, help="synthetic JPEGs (default: 320)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (median, min and max reported)")
    parser.add_argument("--workers", default="1,2", help="worker counts (default: 1,2)")
    parser.add_argument("--output", default=str(RESULTS / "data_throughput"), help="results path without suffix")
    parser.add_argument(
        "--timm-auto-augment",
        default="rand-m15-n2",
        help="timm's RandAugment config (default: rand-m15-n2, each of its 2 ops drawn with probability 0.5; "
        "rand-m15-n2-p1 applies both, as torchvision's RandAugment does)",
    )
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    worker_counts = [int(w) for w in args.workers.split(",")]
    transform = train_geometry((224, 224), 0.08, (2, 15))
    # One thread in the main process while the loaders run: its work (normalising, for both) is small, and idle
    # OpenMP threads spinning between batches would bill CPU time to whichever loader they happened to wait for.
    torch.set_num_threads(1)
    rates: dict[tuple[str, str, int], list[float]] = {}  # images a second of wall time
    cpu_rates: dict[tuple[str, str, int], list[float]] = {}  # images per CPU second, all processes
    loadavg_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_images(Path(tmp) / "folder", args.images)
        mean_kb = sum(p.stat().st_size for p in (folder / "train").rglob("*.jpg")) / args.images / 1e3
        write_shards(folder, Path(tmp) / "wds", "train", 16, progress=False)  # 16 shards: whole ones per reader
        write_shards(folder, Path(tmp) / "wds256", "train", 16, progress=False, max_size=256)
        timm_info(Path(tmp) / "wds")
        found, small = open_shards(Path(tmp) / "wds"), open_shards(Path(tmp) / "wds256")
        ours = {"loose files": load_splits(folder).train,
                "shards": ShardImages(found.splits["train"], found.classes, 3, shuffle=True),
                MAX_SIZE_ROW: ShardImages(small.splits["train"], small.classes, 3, shuffle=True)}  # fmt: skip
        roots = {"loose files": folder, "shards": Path(tmp) / "wds"}
        for dataset in ours.values():
            dataset.transform = transform
        for _ in range(args.rounds):  # interleaved: ours, timm, ours, timm ... so load drifts hit both alike
            for workers in worker_counts:
                for source in ours:
                    for who in ("ours", "timm") if source in roots else ("ours",):
                        if who == "ours":
                            wall, cpu = one_pass(ours[source], workers)
                        else:
                            wall, cpu = timm_pass(source, roots[source], workers, args.timm_auto_augment)
                        rates.setdefault((who, source, workers), []).append(wall)
                        cpu_rates.setdefault((who, source, workers), []).append(cpu)
                        print(
                            f"{who} {source:12s} {workers} worker(s): {wall:7.1f} img/s, {wall / workers:6.1f} a "
                            f"worker, {cpu:6.1f} a CPU second"
                        )
    loadavg_after = os.getloadavg()
    median = {key: statistics.median(values) for key, values in rates.items()}
    cpu_median = {key: statistics.median(values) for key, values in cpu_rates.items()}
    order = {"loose files": 0, "shards": 1, MAX_SIZE_ROW: 2}

    def versus(table: dict, who: str, source: str, workers: int) -> float:  # --max-size: timm on the originals
        return round(table[(who, source, workers)] / table[("timm", TIMM_SOURCE.get(source, source), workers)], 2)

    rows = [
        {
            "loader": who,
            "source": source,
            "workers": workers,
            "images_per_second": round(median[(who, source, workers)], 1),
            "per_core": round(median[(who, source, workers)] / workers, 1),
            "per_core_min_max": [round(min(values) / workers, 1), round(max(values) / workers, 1)],
            "vs_timm": versus(median, who, source, workers),
            "per_cpu_second": round(cpu_median[(who, source, workers)], 1),
            "per_cpu_second_min_max": [
                round(min(cpu_rates[(who, source, workers)]), 1),
                round(max(cpu_rates[(who, source, workers)]), 1),
            ],
            "cpu_vs_timm": versus(cpu_median, who, source, workers),
        }  # fmt: skip
        for (who, source, workers), values in sorted(
            rates.items(), key=lambda kv: (order[kv[0][1]], kv[0][2], kv[0][0])
        )
    ]
    torch.set_num_threads(cores)
    consumed = model_rate()
    print(f"Mixer-B/16 training on this CPU ({cores} threads): {consumed:.2f} img/s")
    per_core = max(r["per_cpu_second"] for r in rows if r["loader"] == "ours" and r["workers"] == 1
                   and r["source"] != MAX_SIZE_ROW)  # fmt: skip
    gpu = TIMM_B16_TRAIN["images_per_second"]
    needed = math.ceil(gpu / per_core)
    result = {
        "machine": machine_info(),
        "images": args.images,
        "rounds": args.rounds,
        "loadavg_before": [round(v, 2) for v in loadavg_before],
        "loadavg_after": [round(v, 2) for v in loadavg_after],
        "mean_jpeg_kb": round(mean_kb, 1),
        "transform": "RandomResizedCrop(224, scale=(0.08, 1)) + RandAugment(2, 15), per image in the workers",
        "rows": rows,
        "b16_cpu_train_images_per_second": round(consumed, 2),
        "timm_b16_gpu_train": TIMM_B16_TRAIN,
        "cores_per_gpu_needed": needed,
        "timm_auto_augment": args.timm_auto_augment,
        "command": f"./run.sh python benchmarks/data_throughput.py --images {args.images} --rounds {args.rounds}"
        + (f" --timm-auto-augment {args.timm_auto_augment}" if args.timm_auto_augment != "rand-m15-n2" else ""),
    }
    write_json(f"{args.output}.json", result)
    cpu = result["machine"].get("cpu", "this CPU")
    lines = [
        f"# Data throughput: ours against timm ({cpu}, {cores} cores)",
        "",
        f"{args.images} synthetic 500x375 JPEGs ({mean_kb:.0f} KB each), decoded, RandomResizedCrop(224, scale "
        "0.08-1) and RandAugment(2, 15) per image in DataLoader workers (timm: `create_dataset` + `create_loader`, "
        f"`{args.timm_auto_augment}`, its prefetcher), one full pass each, worker start-up included, ending in "
        "normalised float batches in the main process (timm's prefetcher; ours `to_input`), the median "
        f"(lowest-highest) of {args.rounds} interleaved rounds. Load average {result['loadavg_before']} before, "
        f"{result['loadavg_after']} after. The --max-size row is ours on shards of the same images stored at 256 on "
        "the shorter side, against timm on the original shards. 'A worker' is images a second of wall time divided by "
        "the workers; 'per CPU second' counts the CPU time of every process (workers and main) of the pass.",
        "",
        "| source | workers | loader | images/s | a worker (min-max) | vs timm | per CPU second, all processes "
        "(min-max) | vs timm |",
        "|---|---|---|---|---|---|---|---|",
        *[
            f"| {r['source']} | {r['workers']} | {r['loader']} | {r['images_per_second']} | {r['per_core']} "
            f"({r['per_core_min_max'][0]}-{r['per_core_min_max'][1]}) | {r['vs_timm']}x | {r['per_cpu_second']} "
            f"({r['per_cpu_second_min_max'][0]}-{r['per_cpu_second_min_max'][1]}) | {r['cpu_vs_timm']}x |"
            for r in rows
        ],  # fmt: skip
        "",
        f"Mixer-B/16 training (forward, backward, AdamW; batch 8, 224) consumes {consumed:.2f} images/s on this CPU.",
        "",
        f"On a GPU: timm publishes {gpu} images/s for mixer_b16_224 training ({TIMM_B16_TRAIN['gpu']}). At "
        f"{per_core} images per CPU second (ours, one worker, every process counted) a B/16 job needs {needed} cores "
        "per GPU for data alone.",
        "",
        f"Reproduce: `{result['command']}`",
    ]
    write_text(f"{args.output}.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
