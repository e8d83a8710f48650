"""data.geometry: the evaluation resize and crop in plain torch, bitwise torchvision's v2 (the peer)."""

import pytest
import torch
from torchvision.transforms import v2

from mlp_mixer.data.geometry import EvalGeometry, EvalTransform, center_crop, resize
from mlp_mixer.model.pretrained import Preprocessing

MODES = ("nearest", "nearest-exact", "bilinear", "bicubic", "lanczos")
SHAPES = [(3, 30, 40), (1, 41, 17), (3, 7, 7), (3, 224, 300)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_resize_is_torchvisions(mode, dtype):
    gen = torch.Generator().manual_seed(0)
    for shape in SHAPES:
        image = torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8).to(dtype)
        for size in (16, 19, (12, 33), 64):
            expected = v2.functional.resize(image, size if isinstance(size, tuple) else [size],
                                            interpolation=v2.InterpolationMode(mode), antialias=True)  # fmt: skip
            got = resize(image, size, mode)
            assert got.dtype == expected.dtype and torch.equal(got, expected), (mode, shape, size)


def test_center_crop_is_torchvisions_also_when_padding():
    image = torch.randint(0, 256, (3, 9, 14), dtype=torch.uint8)
    for size in ((4, 4), (9, 14), (5, 8), (12, 12), (11, 20), (3, 17)):
        assert torch.equal(center_crop(image, size), v2.functional.center_crop(image, list(size))), size


@pytest.mark.parametrize("image_size,crop_pct,mode", [((16, 16), 0.875, "bilinear"), ((12, 20), 0.8, "bicubic"),
                                                      ((28, 28), 1.0, "nearest")])  # fmt: skip
def test_eval_transform_is_torchvisions_compose(image_size, crop_pct, mode):
    p = Preprocessing(image_size=image_size, mean=(0.2, 0.4, 0.6), std=(0.3, 0.2, 0.1), crop_pct=crop_pct,
                      interpolation=mode)  # fmt: skip
    h, w = image_size
    resize_to = [round(h / crop_pct), round(w / crop_pct)]
    geometry = v2.Compose([v2.Resize(min(resize_to) if h == w else resize_to, interpolation=v2.InterpolationMode(mode),
                                     antialias=True), v2.CenterCrop((h, w))])  # fmt: skip
    full = v2.Compose([geometry, v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(p.mean), list(p.std))])
    for shape in SHAPES:
        image = torch.randint(0, 256, shape, dtype=torch.uint8).expand(3, -1, -1)
        assert torch.equal(EvalGeometry(p)(image), geometry(image))
        got, expected = EvalTransform(p)(image), full(image)
        assert got.shape == (3, h, w) and torch.equal(got, expected)
