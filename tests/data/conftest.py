"""Fixtures of the data/ tests: a folder of odd image files, and small ImageFolders with their shards."""

import io
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import pixels, save
from PIL import Image
from torchvision.io import encode_jpeg, encode_png

from mlp_mixer.commands import main as cli

# tests/data/test_hf.py: the datasets library's cache (Arrow files of the Parquet it reads) in a temporary folder,
# and no network; set before the library is first imported (it reads them then).
os.environ.setdefault("HF_DATASETS_CACHE", tempfile.mkdtemp(prefix="hf-datasets-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def odd_images(tmp_path_factory):
    """One file per kind of image a user's folder may hold; values: (path, decodable)."""
    root = tmp_path_factory.mktemp("odd")
    rgb = Image.fromarray(pixels(20, 24))
    png = io.BytesIO()
    rgb.save(png, format="PNG")
    files = {
        "rgb_jpeg": (save(rgb, root / "rgb.jpg"), True),
        "gif_named_jpg": (save(rgb, root / "gif.jpg", fmt="GIF"), True),
        "png_named_jpg": (save(rgb, root / "png.jpg", fmt="PNG"), True),
        "palette": (save(rgb.convert("P"), root / "palette.png"), True),
        "cmyk": (save(rgb.convert("CMYK"), root / "cmyk.jpg"), True),
        "rgba": (save(Image.fromarray(pixels(12, 10, 4), "RGBA"), root / "rgba.png"), True),
        "gray": (save(rgb.convert("L"), root / "gray.png"), True),
        "gray_alpha": (save(rgb.convert("LA"), root / "la.png"), True),
        "sixteen_bit": (
            save(Image.fromarray(np.arange(300, dtype=np.uint16).reshape(15, 20) * 200), root / "16bit.png"),
            True,
        ),
        "bmp": (save(rgb, root / "img.bmp"), True),
        "tiff": (save(rgb, root / "img.tiff"), True),
        "tiny": (save(Image.fromarray(pixels(3, 2)), root / "tiny.png"), True),
    }
    truncated = root / "truncated.png"
    truncated.write_bytes(png.getvalue()[: len(png.getvalue()) // 2])
    files["truncated"] = (str(truncated), False)
    corrupt = root / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg" * 4)
    files["corrupt"] = (str(corrupt), False)
    text = root / "text.jpg"
    text.write_text("a text file with an image name")
    files["text_named_jpg"] = (str(text), False)
    return files


def make_shard_folder(root: Path, train: tuple[int, ...] = (17, 16, 17), val: tuple[int, ...] = (5, 4, 4)) -> Path:
    """``root/train/c{i}`` and ``root/val/c{i}`` of random 12x12..16x16 images (PNG and JPEG), and one file in train
    that is not an image at all (it must be skipped and counted)."""
    g = torch.Generator().manual_seed(0)
    for split, counts in (("train", train), ("val", val)):
        for c, n in enumerate(counts):
            folder = root / split / f"c{c}"
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                side = 12 + (i % 5)
                image = torch.randint(0, 256, (3, side, side), generator=g, dtype=torch.uint8)
                if i % 3:
                    (folder / f"{i}.png").write_bytes(encode_png(image).numpy().tobytes())
                else:
                    (folder / f"{i}.jpg").write_bytes(encode_jpeg(image).numpy().tobytes())
    (root / "train" / "c0" / "broken.png").write_bytes(b"not an image")
    return root


@pytest.fixture(scope="module")
def shard_source(tmp_path_factory) -> Path:
    """An ImageFolder with train/ and val/ of 50 and 13 images, and one file in train/ that is no image."""
    return make_shard_folder(tmp_path_factory.mktemp("folder"))


@pytest.fixture(scope="module")
def shards(shard_source, tmp_path_factory) -> Path:
    """50 training images in 9 shards of <= 6 (the last holds 2), 13 held out in 3."""
    out = tmp_path_factory.mktemp("shards") / "wds"
    assert cli(["shard", str(shard_source), str(out), "--shard-size", "6", "--workers", "0", "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def one_shard(shard_source, tmp_path_factory) -> Path:
    """The same 50 training images in one shard (``--shard-size auto`` chooses one for so few), 13 held out."""
    out = tmp_path_factory.mktemp("one") / "wds"
    assert cli(["shard", str(shard_source), str(out), "--workers", "0", "--no-progress"]) == 0
    return out


@pytest.fixture(scope="module")
def recipe_shards(tmp_path_factory) -> Path:
    """16 training images in 4 shards (2 processes × 2 workers read one each), 6 held out."""
    root = tmp_path_factory.mktemp("recipe")
    make_shard_folder(root / "folder", train=(6, 5, 5), val=(2, 2, 2))
    (root / "folder" / "train" / "c0" / "broken.png").unlink()
    out = root / "wds"
    assert cli(["shard", str(root / "folder"), str(out), "--shard-size", "4", "--workers", "0", "--no-progress"]) == 0
    return out
