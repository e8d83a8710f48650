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
    return v2.Compose([
        v2.Resize(min(resize) if h == w else resize, interpolation=interpolation, antialias=True),
        v2.CenterCrop((h, w)),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean=list(preprocessing.mean), std=list(preprocessing.std)),
    ])
