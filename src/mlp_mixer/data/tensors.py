"""In-memory images: :class:`TensorImages`, one uint8 tensor (N, C, H, W) with its labels; what the MNIST and
CIFAR sources read their files into. Nothing to decode, so batches are indexed straight from the tensor
(:func:`.loader.iterate_batches`)."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset
from torchvision.transforms import v2

from .splits import share
from .transforms import sample_seed


class TensorImages(Dataset):
    """Images held in memory as one uint8 tensor (N, C, H, W), with integer labels.

    ``transform`` (optional) is a per-sample uint8 -> uint8 transform such as RandAugment, seeded per sample.
    """

    streamed, in_memory = False, True  # see mlp_mixer.data.splits

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: v2.Transform | None = None) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(labels):
            raise ValueError(f"expected uint8 images (N, C, H, W) and N labels, got {tuple(images.shape)}")
        self.images, self.labels, self.transform = images, labels.long(), transform
        self.epoch_seed = 0

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.images[index]
        if self.transform is not None:
            torch.default_generator.manual_seed(sample_seed(self.epoch_seed, index))
            image = self.transform(image)
        return image, int(self.labels[index])

    @property
    def targets(self) -> list[int]:
        return self.labels.tolist()

    def split(self, rank: int, world: int) -> TensorImages:
        """Process ``rank``'s contiguous share of ``world``."""
        start, stop = share(len(self), rank, world)
        return TensorImages(self.images[start:stop], self.labels[start:stop], self.transform)
