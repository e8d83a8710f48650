"""The evaluation resize and center crop every set of weights carries, in plain torch: what ``predict`` runs.

Importing torchvision costs about as much CPU as importing torch (its package ``__init__`` loads
``torchvision.models`` -> ``torchvision.ops`` -> all of ``torch._dynamo``), so the path that classifies one file
stays off it: these are torchvision's ``v2.Resize(antialias=True)`` and ``v2.CenterCrop`` on tensors, op for op
(the same ``interpolate`` calls, the same uint8-or-float choice, the same output size and crop anchor), and
``tests/data/test_geometry.py`` holds them bitwise equal to torchvision's. Training's random geometry and
RandAugment stay torchvision's (:mod:`.transforms`).
"""

from __future__ import annotations

import platform

import torch
import torch.nn.functional as F

from ..model.pretrained import Preprocessing

# torchvision's rule (transforms/v2/functional/_geometry.py): on CPU these modes resize uint8 natively; bilinear
# only where the kernel is vectorised, otherwise through float32 and back.
_NATIVE_UINT8 = ("nearest", "nearest-exact", "bicubic", "lanczos")


def resized_size(height: int, width: int, size: int | tuple[int, int]) -> tuple[int, int]:
    """Output (H, W): an int resizes the shorter side to it and keeps the aspect ratio (the longer side truncated,
    as torchvision), a pair is the size itself."""
    if not isinstance(size, int):
        return int(size[0]), int(size[1])
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    return (new_long, new_short) if width <= height else (new_short, new_long)


def resize(image: torch.Tensor, size: int | tuple[int, int], interpolation: str = "bilinear") -> torch.Tensor:
    """``v2.functional.resize(image, size, interpolation, antialias=True)`` for a (..., C, H, W) tensor."""
    *lead, channels, height, width = image.shape
    new = resized_size(height, width, size)
    if new == (height, width):
        return image
    antialias = interpolation in ("bilinear", "bicubic", "lanczos")  # torchvision ignores it for the others
    native = interpolation in _NATIVE_UINT8 or (
        interpolation == "bilinear"
        and (
            torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512") or platform.machine() in ("aarch64", "arm64")
        )
    )
    cast = image.dtype not in (torch.float32, torch.float64) and not (
        image.dtype == torch.uint8 and image.device.type == "cpu" and native
    )
    x = image.reshape(-1, channels, height, width)
    if x.shape[0] == 1:  # one image of (H, W, C) memory: reshape gives it a batch stride of C, which does not read as
        # channels_last, and interpolate would return (C, H, W) memory (a transposing copy downstream); a size-1
        # dimension's stride is free, so give it the whole image's
        x = x.as_strided(x.shape, (x.numel(), *x.stride()[1:]))
    x = x.float() if cast else x
    x = F.interpolate(x, size=list(new), mode=interpolation, align_corners=False if antialias else None,
                      antialias=antialias)  # fmt: skip
    if cast:
        if interpolation in ("bicubic", "lanczos") and image.dtype == torch.uint8:
            x = x.clamp_(0, 255)
        x = x.round_().to(image.dtype) if not image.dtype.is_floating_point else x.to(image.dtype)
    return x.reshape(*lead, channels, *new)


def center_crop(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``v2.functional.center_crop``: the middle ``size`` (H, W), zero-padded first where the image is smaller."""
    crop_h, crop_w = size
    height, width = image.shape[-2:]
    if crop_h > height or crop_w > width:
        pad_w, pad_h = max(crop_w - width, 0), max(crop_h - height, 0)
        image = F.pad(image, [pad_w // 2, (pad_w + 1) // 2, pad_h // 2, (pad_h + 1) // 2], value=0.0)
        height, width = image.shape[-2:]
    top, left = int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0))
    return image[..., top : top + crop_h, left : left + crop_w]


class EvalGeometry:
    """Resize the shorter side to image_size / crop_pct (both sides when the input is not square), center-crop to
    image_size: uint8 (C, H, W) in and out, as a data worker runs it."""

    def __init__(self, preprocessing: Preprocessing) -> None:
        h, w = preprocessing.image_size
        resize_to = (round(h / preprocessing.crop_pct), round(w / preprocessing.crop_pct))
        self.size: int | tuple[int, int] = min(resize_to) if h == w else resize_to
        self.crop = (h, w)
        self.interpolation = preprocessing.interpolation

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        return center_crop(resize(image, self.size, self.interpolation), self.crop)


class EvalTransform(EvalGeometry):
    """:class:`EvalGeometry`, then scale to [0, 1] and normalise: uint8 (C, H, W) in, the model's float input out."""

    def __init__(self, preprocessing: Preprocessing) -> None:
        super().__init__(preprocessing)
        self.mean = torch.tensor(preprocessing.mean, dtype=torch.float32)[:, None, None]
        self.std = torch.tensor(preprocessing.std, dtype=torch.float32)[:, None, None]

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        x = super().__call__(image)
        x = x.to(torch.float32).mul_(1.0 / 255) if x.dtype == torch.uint8 else x.to(torch.float32)  # v2.ToDtype
        return x.sub(self.mean).div_(self.std)  # v2.Normalize


def eval_geometry(preprocessing: Preprocessing) -> EvalGeometry:
    """The resize and center crop of :func:`eval_transform`, on uint8 images (what a data worker does)."""
    return EvalGeometry(preprocessing)


def eval_transform(preprocessing: Preprocessing) -> EvalTransform:
    """Resize the shorter side to image_size / crop_pct, center-crop to image_size, scale, normalize."""
    return EvalTransform(preprocessing)
