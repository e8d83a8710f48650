"""Transforms: what turns a uint8 image into the model's input, per sample (in data workers) and per batch.

Per sample, uint8 -> uint8: the evaluation resize and crop that every set of weights carries
(:func:`eval_geometry`, and :func:`eval_transform` for one image as ``predict`` does; both live in
:mod:`.geometry`, in plain torch), the training crop and
RandAugment (:func:`train_geometry`), seeded per sample (:func:`sample_seed`). Per batch, on the training device:
:func:`to_input` (channels, scale, resize, normalise) and the batch augmentations (:func:`random_affine`,
:func:`random_hflip`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from ..model.pretrained import Preprocessing
from .decode import ImageError
from .geometry import eval_geometry as eval_geometry  # in plain torch there, so that predict loads no torchvision
from .geometry import eval_transform as eval_transform
from .geometry import resize


def train_geometry(
    image_size: tuple[int, int] | None, crop_scale: float, randaugment: tuple[int, int] | None
) -> TrainGeometry | None:
    """Per-sample training transform (uint8 -> uint8): a random resized crop to ``image_size`` (image files; None
    for in-memory images, which are resized as a batch), then RandAugment; None when there is nothing to do.

    Flips and affine jitter are done on whole batches instead (:func:`random_hflip`, :func:`random_affine`).
    """
    if image_size is None and randaugment is None:
        return None
    return TrainGeometry(image_size, crop_scale, randaugment)


class TrainGeometry:
    """torchvision's ``RandomResizedCrop(image_size, scale=(crop_scale, 1), antialias=True)`` then RandAugment:
    the same draws from the global generator, the same boxes and bitwise the same pixels as
    ``v2.Compose([v2.RandomResizedCrop(...), PILRandAugment(...)])`` (``tests/data/test_transforms.py``), on images
    kept in (H, W, C) memory from the decoder to the batch.

    The crop is copied out as a compact (H, W, C) block and resized by torch's uint8 antialiased kernel, which
    works in that layout (0.36 ms from a 500x375 photo against 0.6 for the strided crop torchvision hands it), and
    its (H, W, C) output goes to Pillow for RandAugment without a transposing copy (0.07 ms against 0.63). Out:
    uint8 (C, H, W), a view of (H, W, C) memory (channels_last strides), which :func:`.loader.collate` stacks as is.
    """

    def __init__(
        self, image_size: tuple[int, int] | None, crop_scale: float, randaugment: tuple[int, int] | None
    ) -> None:
        self.crop = (
            None if image_size is None else v2.RandomResizedCrop(image_size, scale=(crop_scale, 1.0), antialias=True)
        )
        self.randaugment = None if randaugment is None else PILRandAugment(*randaugment)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        if self.crop is not None:
            box = self.crop.make_params([image])  # torchvision's own draws
            top, left, height, width = box["top"], box["left"], box["height"], box["width"]
            region = image[None, :, top : top + height, left : left + width]
            image = resize(region.contiguous(memory_format=torch.channels_last), tuple(self.crop.size))[0]
        if self.randaugment is not None:
            image = self.randaugment(image)
        return image

    @property
    def transforms(self) -> list[v2.Transform]:
        """The steps, as ``v2.Compose.transforms`` lists them."""
        return [t for t in (self.crop, self.randaugment) if t is not None]

    def __repr__(self) -> str:
        return f"TrainGeometry({', '.join(map(repr, self.transforms))})"


class PILRandAugment(v2.RandAugment):
    """torchvision's RandAugment (the same ops, magnitudes and draws from the global generator), run by its Pillow
    kernels on a uint8 tensor in and out. On a 224x224 crop they take 0.5 ms where its tensor kernels take 2.6
    (shear, translate, rotate: 0.1 ms against 1.1; sharpness: 0.9 against 5.8; docs/data.md, Throughput): the
    largest part of a training worker's time per image, after decoding. The image is handed to Pillow as
    (H, W, C) memory and comes back as a (C, H, W) view of it: an input in that layout (:class:`TrainGeometry`'s
    crop) costs no transposing copy on either side."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        import numpy as np
        from PIL import Image

        hwc = image.permute(1, 2, 0).numpy()  # no copy when the image is a view of (H, W, C) memory
        # Image.fromarray reads a C-contiguous array without a copy; torchvision's to_pil_image always copies it
        picture = Image.fromarray(np.ascontiguousarray(hwc[..., 0] if hwc.shape[2] == 1 else hwc))
        out = np.array(super().forward(picture))  # (H, W) or (H, W, C) uint8
        return torch.from_numpy(out.reshape(*out.shape[:2], -1)).permute(2, 0, 1)


def sample_seed(epoch_seed: int, index: int) -> int:
    """The seed of one sample's random transform: a function of (epoch, index) only, so augmentation does not
    depend on the number of workers, on which worker loads the sample, or on where a resumed epoch restarts."""
    return (epoch_seed * 1_000_003 + index) % (2**63 - 1)


def seeded_sample(
    read: Callable[[], torch.Tensor], transform: Callable | None, seed: int, name: str
) -> torch.Tensor | str:
    """One sample as every source loads it: ``read()`` (decode), then ``transform`` with its random draws seeded
    by ``seed``; or the reason it is skipped (a string: the loaders count it), for an unreadable image or a
    transform failing on an odd one (then prefixed with ``name``)."""
    try:
        image = read()
        if transform is not None:
            torch.default_generator.manual_seed(seed)
            image = transform(image)
    except ImageError as err:
        return str(err)
    except (RuntimeError, ValueError, OSError) as err:
        return f"{name}: {err}"
    return image


# ---------------------------------------------------------------------------------------------------------------
# Augmentation on whole batches (float, on the training device)


def _uniform(generator: torch.Generator, n: int, *shape: int, rows: tuple[int, int] | None = None) -> torch.Tensor:
    """U(0, 1) draws (n, *shape) for a batch of ``n`` images. ``rows=(first, total)``: these images are rows
    ``first...`` of a batch of ``total`` split over processes; the whole batch's draws are made and these rows kept,
    so each image is augmented as it would be on one process."""
    first, total = rows or (0, n)
    return torch.rand(total, *shape, generator=generator, device=generator.device)[first : first + n]


def random_affine(
    images: torch.Tensor,
    generator: torch.Generator,
    degrees: float = 0.0,
    translate: float = 0.0,
    scale: float = 0.0,
    rows: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Rotate by U(-degrees, degrees), shift by U(-translate, translate) of the size, zoom by 1 + U(-scale, scale),
    each drawn per image from ``generator``; pixels from outside the image are 0 (black before normalising).

    One ``grid_sample`` on the whole batch: the cost is negligible next to a training step. ``rows``: see
    :func:`_uniform`.
    """
    if degrees == 0 and translate == 0 and scale == 0:
        return images
    u = _uniform(generator, images.shape[0], 4, rows=rows).to(images.device) * 2 - 1
    angle = u[:, 0] * math.radians(degrees)
    zoom = 1 + u[:, 1] * scale
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack(
        [torch.stack([cos, -sin, u[:, 2] * 2 * translate], 1), torch.stack([sin, cos, u[:, 3] * 2 * translate], 1)], 1
    ).to(images.dtype)  # output -> input sampling grid in [-1, 1] coordinates
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_hflip(
    images: torch.Tensor, generator: torch.Generator, p: float, rows: tuple[int, int] | None = None
) -> torch.Tensor:
    """Flip each image left-right with probability ``p`` (drawn from ``generator``; ``rows``: see :func:`_uniform`)."""
    if p <= 0:
        return images
    flip = (_uniform(generator, images.shape[0], rows=rows) < p).to(images.device)
    return torch.where(flip[:, None, None, None], images.flip(-1), images)


def resize_batch(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear (antialiased) resize of a float batch to ``size``; a no-op when it already has that size."""
    if tuple(images.shape[-2:]) == tuple(size):
        return images
    return F.interpolate(images, size=size, mode="bilinear", antialias=True, align_corners=False)


def match_channels(images: torch.Tensor, in_channels: int) -> torch.Tensor:
    """Grayscale -> RGB by repeating the channel, RGB -> grayscale by luminance (as :func:`read_image`)."""
    if images.shape[-3] == in_channels:
        return images
    if images.shape[-3] == 1:
        return images.expand(*images.shape[:-3], in_channels, *images.shape[-2:])
    if in_channels == 1 and images.shape[-3] == 3:
        return v2.functional.rgb_to_grayscale(images)
    raise ValueError(f"images with {images.shape[-3]} channels cannot be fed to a model with {in_channels}")


def to_input(
    images: torch.Tensor,
    preprocessing: Preprocessing,
    in_channels: int,
    device: torch.device,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """A uint8 batch (B, C, H, W) -> the model's input on ``device``: channels matched, scaled to [0, 1], resized
    to the model's size (in-memory images; files arrive at that size), augmented (training), normalised.

    For files this is bitwise what :func:`eval_transform` does per image: the same ops, batched.
    """
    x = match_channels(images.to(device, non_blocking=True), in_channels)
    if x.dtype == torch.uint8:  # v2.functional.to_dtype(scale=True) into a contiguous batch in one pass: the
        # workers' batches are channels_last views (.loader.stack); the model sees the layout it always saw
        x = x.to(torch.float32, memory_format=torch.contiguous_format).mul_(1.0 / 255)
    else:
        x = v2.functional.to_dtype(x.contiguous(), torch.float32, scale=True)
    x = resize_batch(x, tuple(preprocessing.image_size))
    if augment is not None:
        x = augment(x)
    # in place on the batch made above (not on a caller's float tensor): the same values without another 4 bytes a
    # pixel of fresh memory (on a CPU the allocating sub cost as much as the conversion)
    inplace = images.dtype == torch.uint8
    return v2.functional.normalize(x, list(preprocessing.mean), list(preprocessing.std), inplace=inplace)
