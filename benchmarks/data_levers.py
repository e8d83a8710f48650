"""The levers of docs/data.md's throughput section, one image at a time in one process (one thread), interleaved:
decoding a 500x375 JPEG with Pillow and with simplejpeg at full size and at libjpeg-turbo's M/8 DCT scales, and a
training sample (decode, RandomResizedCrop(224, scale 0.08-1), RandAugment(2, 15)) as it was before the
(H, W, C) pipeline, as it is now, and as timm's transform does it. The minimum over rounds, in ms an image.

    flock /tmp/cpu.lock ./run.sh python benchmarks/data_levers.py    # writes benchmarks/results/data_levers.md
"""

from __future__ import annotations

import io
import os
import time
from functools import partial
from pathlib import Path

import numpy as np
import simplejpeg
import torch
from data_throughput import photo
from PIL import Image
from torchvision.io import encode_jpeg
from torchvision.transforms import v2

from mlp_mixer.data.decode import decode_image_bytes
from mlp_mixer.data.transforms import PILRandAugment, train_geometry
from mlp_mixer.utils.devices import machine_info
from mlp_mixer.utils.files import write_text

RESULTS = Path(__file__).parent / "results"


def scaled(data: bytes, m: int, height: int, width: int) -> np.ndarray:
    """simplejpeg's decode at libjpeg-turbo's DCT scale m/8 (the smallest whose size covers these bounds)."""
    return simplejpeg.decode_jpeg(data, min_height=-(-height * m // 8), min_width=-(-width * m // 8))


def main(images: int = 40, rounds: int = 7) -> None:
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    data = [encode_jpeg(photo(generator), quality=90).numpy().tobytes() for _ in range(images)]
    height, width = 375, 500
    before = v2.Compose(  # the pipeline before: a contiguous (C, H, W) copy, torchvision's crop, to_pil_image
        [v2.RandomResizedCrop((224, 224), scale=(0.08, 1.0), antialias=True), PILRandAugment(2, 15)]
    )
    now = train_geometry((224, 224), 0.08, (2, 15))
    from timm.data import create_transform

    timm = create_transform(224, is_training=True, scale=(0.08, 1.0), auto_augment="rand-m15-n2",
                            interpolation="bilinear", use_prefetcher=True)  # fmt: skip
    cases = {
        "decode: Pillow (open, RGB, array)": lambda d: np.asarray(Image.open(io.BytesIO(d)).convert("RGB")),
        "decode: simplejpeg 8/8": lambda d: simplejpeg.decode_jpeg(d),
        **{f"decode: simplejpeg {m}/8": partial(scaled, m=m, height=height, width=width) for m in (7, 6, 5, 4)},
        "sample: before (Pillow decode, CHW copy, v2 crop, to_pil_image)": lambda d: before(
            torch.from_numpy(np.array(Image.open(io.BytesIO(d)).convert("RGB"))).permute(2, 0, 1).contiguous()
        ),
        "sample: now (simplejpeg, HWC from decoder to batch)": lambda d: now(decode_image_bytes(d)),
        "sample: timm (Pillow decode, its transform)": lambda d: timm(Image.open(io.BytesIO(d)).convert("RGB")),
    }
    best = {name: float("inf") for name in cases}
    load_before = os.getloadavg()
    for r in range(rounds):
        for name, fn in cases.items():
            torch.manual_seed(r)
            start = time.perf_counter()
            for d in data:
                fn(d)
            best[name] = min(best[name], (time.perf_counter() - start) / images * 1e3)
    load_after = os.getloadavg()
    cpu = machine_info().get("cpu", "this CPU")
    lines = [
        f"# Data levers, one image at a time ({cpu}, one thread)",
        "",
        f"{images} synthetic 500x375 JPEGs (quality 90), the minimum of {rounds} interleaved rounds. Load average "
        f"{[round(v, 2) for v in load_before]} before, {[round(v, 2) for v in load_after]} after.",
        "",
        "| what | ms an image |",
        "|---|---:|",
        *[f"| {name} | {ms:.2f} |" for name, ms in best.items()],
        "",
        "Reproduce: `flock /tmp/cpu.lock ./run.sh python benchmarks/data_levers.py`",
    ]
    write_text(RESULTS / "data_levers.md", "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
