"""data.transforms: the batched input is the per-image eval transform; batch augmentation."""

import pytest
import torch

from mlp_mixer.data.decode import read_image
from mlp_mixer.data.transforms import eval_geometry, eval_transform, random_affine, random_hflip, to_input
from mlp_mixer.model.pretrained import Preprocessing


def test_to_input_is_eval_transform_batched(odd_images):
    """What evaluation feeds the model is bitwise what predict's per-image transform gives."""
    preprocessing = Preprocessing(image_size=(16, 16), mean=(0.2, 0.4, 0.6), std=(0.3, 0.2, 0.1), crop_pct=0.8)
    paths = [p for p, ok in odd_images.values() if ok]
    geometry = eval_geometry(preprocessing)
    batch = torch.stack([geometry(read_image(p, 3)) for p in paths])
    got = to_input(batch, preprocessing, 3, torch.device("cpu"))
    expected = torch.stack([eval_transform(preprocessing)(read_image(p, 3)) for p in paths])
    assert torch.equal(got, expected)


def test_to_input_matches_channels_and_size():
    gray = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    x = to_input(gray, Preprocessing(image_size=(56, 56), mean=(0.5,) * 3, std=(0.5,) * 3), 3, torch.device("cpu"))
    assert x.shape == (2, 3, 56, 56) and torch.equal(x[:, 0], x[:, 2])
    assert x.min() >= -1 and x.max() <= 1


def test_random_affine_identity_and_determinism():
    images = torch.rand(4, 1, 28, 28)
    g = torch.Generator().manual_seed(0)
    assert random_affine(images, g) is images
    # A pure shift by a whole number of pixels moves the image by that many pixels.
    shifted = random_affine(images, torch.Generator().manual_seed(1), translate=0.1)
    assert shifted.shape == images.shape and not torch.equal(shifted, images)
    again = random_affine(images, torch.Generator().manual_seed(1), translate=0.1)
    assert torch.equal(shifted, again)
    # Zero rotation, zoom and shift is the identity up to bilinear rounding.
    theta_free = random_affine(images, torch.Generator().manual_seed(2), degrees=1e-9)
    torch.testing.assert_close(theta_free, images, atol=1e-5, rtol=0)


def test_random_hflip_flips_the_drawn_images():
    images = torch.arange(2 * 1 * 2 * 3, dtype=torch.float32).reshape(2, 1, 2, 3)
    flipped = random_hflip(images, torch.Generator().manual_seed(0), p=1.0)
    assert torch.equal(flipped, images.flip(-1))
    assert random_hflip(images, torch.Generator(), p=0.0) is images


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("randaugment", [(2, 9), None])
def test_train_geometry_is_torchvisions_crop_then_randaugment(channels, layout, randaugment):
    """The same draws, boxes and pixels as v2.Compose([v2.RandomResizedCrop, PILRandAugment]) from the same seed,
    whatever the input's memory layout; the output is a view of (H, W, C) memory, the crop's own without
    RandAugment (a one-image channels_last batch must stay one through the resize)."""
    from torchvision.transforms import v2

    from mlp_mixer.data.transforms import PILRandAugment, train_geometry

    crop = v2.RandomResizedCrop((24, 24), scale=(0.08, 1.0), antialias=True)
    reference = v2.Compose([crop] + ([PILRandAugment(*randaugment)] if randaugment else []))
    ours = train_geometry((24, 24), 0.08, randaugment)
    for seed in range(12):
        image = torch.randint(0, 256, (channels, 37 + seed, 51), dtype=torch.uint8)
        given = image if layout == "contiguous" else image.permute(1, 2, 0).contiguous().permute(2, 0, 1)
        torch.manual_seed(seed)
        expected = reference(image)
        torch.manual_seed(seed)
        got = ours(given)
        assert torch.equal(got, expected), seed
        assert got.shape == (channels, 24, 24) and got.permute(1, 2, 0).is_contiguous(), got.stride()
    assert train_geometry(None, 0.08, None) is None


def test_the_eval_geometry_of_hwc_memory_is_torchvisions_and_stays_hwc():
    """The held-out resize and crop of a decoded image ((C, H, W) view of (H, W, C) memory): torchvision's pixels,
    as a view of (H, W, C) memory, which collate stacks without transposing."""
    from torchvision.transforms import v2

    preprocessing = Preprocessing(image_size=(24, 24), crop_pct=0.875)
    reference = v2.Compose([v2.Resize(27, antialias=True), v2.CenterCrop(24)])
    image = torch.randint(0, 256, (40, 53, 3), dtype=torch.uint8).permute(2, 0, 1)
    got = eval_geometry(preprocessing)(image)
    assert torch.equal(got, reference(image.contiguous()))
    assert got.stride()[0] == 1 and got.stride()[2] == 3, got.stride()  # a view of (H, W, C) memory


def test_to_input_of_a_channels_last_batch_is_that_of_a_contiguous_one():
    preprocessing = Preprocessing(image_size=(16, 16), mean=(0.2, 0.4, 0.6), std=(0.3, 0.2, 0.1))
    hwc = torch.randint(0, 256, (4, 16, 16, 3), dtype=torch.uint8)
    got = to_input(hwc.permute(0, 3, 1, 2), preprocessing, 3, torch.device("cpu"))
    expected = to_input(hwc.permute(0, 3, 1, 2).contiguous(), preprocessing, 3, torch.device("cpu"))
    assert torch.equal(got, expected) and got.is_contiguous()
