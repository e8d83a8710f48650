"""Data throughput: decoded and augmented images per second per DataLoader worker, from loose files and from
WebDataset shards, against what Mixer-B/16 consumes per second here and on a GPU.

    ./run.sh python benchmarks/data_throughput.py            # writes benchmarks/results/data_throughput.{json,md}

The images are synthetic photographs of ImageNet's typical size and weight (500x375 JPEGs, smooth shapes plus
grain, ~100 KB at quality 90); the transform is the ImageNet training recipe's (configs/imagenet_b16_scratch.yaml):
RandomResizedCrop to 224 (area 8-100%) and RandAugment(2, 15), per image in the workers, as training does. Each
figure is one full pass over the images, worker start-up included, the best of ``--repeats``.
"""

from __future__ import annotations

import argparse
import math
import os
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
from mlp_mixer.data.transforms import train_geometry
from mlp_mixer.model import create_model
from mlp_mixer.utils.devices import machine_info
from mlp_mixer.utils.files import write_json, write_text

# timm's published training throughput of mixer_b16_224 (AMP, batch 256, RTX 3090, PyTorch 1.12 / CUDA 11.3):
# huggingface/pytorch-image-models results/benchmark-train-amp-nchw-pt112-cu113-rtx3090.csv
TIMM_B16_TRAIN = {"gpu": "RTX 3090 (AMP, batch 256)", "images_per_second": 528.02}
RESULTS = Path(__file__).parent / "results"


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


def one_pass(dataset, workers: int, batch: int = 32) -> float:
    """Images per second of one full pass (every image decoded and transformed in the workers)."""
    start, count = time.perf_counter(), 0
    if dataset.streamed:
        batches = iterate_stream(dataset, batch, workers, torch.device("cpu"))
    else:
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0)).tolist()
        index = [order[i : i + batch] for i in range(0, len(order), batch)]
        batches = iterate_batches(dataset, index, workers, torch.device("cpu"))
    for b in batches:
        count += len(b.labels)
    return count / (time.perf_counter() - start)


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
    parser.add_argument("--images", type=int, default=256, help="synthetic JPEGs (default: 256)")
    parser.add_argument("--repeats", type=int, default=2, help="passes per figure, the best kept (default: 2)")
    parser.add_argument("--output", default=str(RESULTS / "data_throughput"), help="results path without suffix")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    worker_counts = [w for w in (1, 2, 4) if w <= max(2, cores)]
    transform = train_geometry((224, 224), 0.08, (2, 15))
    with tempfile.TemporaryDirectory() as tmp:
        folder = make_images(Path(tmp) / "folder", args.images)
        mean_kb = sum(p.stat().st_size for p in (folder / "train").rglob("*.jpg")) / args.images / 1e3
        write_shards(folder, Path(tmp) / "wds", "train", 16, progress=False)  # 16 shards: >= 4 readers
        files = load_splits(folder).train
        found = open_shards(Path(tmp) / "wds")
        shards = ShardImages(found.splits["train"], found.classes, 3, shuffle=True)
        rows = []
        for source, dataset in (("loose files", files), ("shards", shards)):
            dataset.transform = transform
            for workers in worker_counts:
                rate = max(one_pass(dataset, workers) for _ in range(args.repeats))
                rows.append({"source": source, "workers": workers, "images_per_second": round(rate, 1),
                             "per_worker": round(rate / workers, 1)})  # fmt: skip
                print(f"{source:12s} {workers} worker(s): {rate:7.1f} img/s, {rate / workers:6.1f} per worker")
    torch.set_num_threads(cores)
    consumed = model_rate()
    print(f"Mixer-B/16 training on this CPU ({cores} threads): {consumed:.2f} img/s")
    per_worker = max(r["per_worker"] for r in rows if r["source"] == "shards" and r["workers"] == 1)
    gpu = TIMM_B16_TRAIN["images_per_second"]
    needed = math.ceil(gpu / per_worker)
    result = {
        "machine": machine_info(),
        "images": args.images,
        "mean_jpeg_kb": round(mean_kb, 1),
        "transform": "RandomResizedCrop(224, scale=(0.08, 1)) + RandAugment(2, 15), per image in the workers",
        "rows": rows,
        "b16_cpu_train_images_per_second": round(consumed, 2),
        "timm_b16_gpu_train": TIMM_B16_TRAIN,
        "workers_per_gpu_needed": needed,
        "command": "./run.sh python benchmarks/data_throughput.py",
    }
    write_json(f"{args.output}.json", result)
    cpu = result["machine"].get("cpu", "this CPU")
    lines = [
        f"# Data throughput ({cpu}, {cores} cores)",
        "",
        f"{args.images} synthetic 500x375 JPEGs ({mean_kb:.0f} KB each), decoded, RandomResizedCrop(224) and "
        "RandAugment(2, 15) per image in DataLoader workers; one full pass, worker start-up included. Load average "
        f"{result['machine'].get('loadavg')} when measured: where it exceeds the cores, other jobs share them and "
        "more workers cannot add throughput.",
        "",
        "| source | workers | images/s | per worker |",
        "|---|---|---|---|",
        *[f"| {r['source']} | {r['workers']} | {r['images_per_second']} | {r['per_worker']} |" for r in rows],
        "",
        f"Mixer-B/16 training (forward, backward, AdamW; batch 8, 224) consumes {consumed:.2f} images/s on this CPU: "
        "one worker feeds it many times over.",
        "",
        f"On a GPU: timm publishes {gpu} images/s for mixer_b16_224 training ({TIMM_B16_TRAIN['gpu']}). At "
        f"{per_worker} images/s per worker (shards, this CPU) a B/16 job needs {needed} workers (cores) per GPU "
        "to keep it busy; an 8-GPU node therefore needs ~{} cores for data alone.".format(8 * needed),
        "",
        f"Reproduce: `{result['command']}`",
    ]
    write_text(f"{args.output}.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
