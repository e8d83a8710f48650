"""data: decoding odd image files, the three data sources, and batch augmentation."""

import io
import pickle

import numpy as np
import pytest
import torch
from helpers import make_folder, pixels, save, write_cifar
from PIL import Image

from mlp_mixer import data as D
from mlp_mixer.model.pretrained import Preprocessing


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


@pytest.mark.parametrize("in_channels", [1, 3])
def test_read_image_decodes_every_kind_or_names_the_file(odd_images, in_channels):
    for kind, (path, decodable) in odd_images.items():
        if decodable:
            image = D.read_image(path, in_channels)
            assert image.dtype == torch.uint8 and image.ndim == 3 and image.shape[0] == in_channels, kind
        else:
            with pytest.raises(D.ImageError, match=path.split("/")[-1]):
                D.read_image(path, in_channels)


def test_sixteen_bit_keeps_the_top_byte(odd_images):
    image = D.read_image(odd_images["sixteen_bit"][0], 1)
    expected = torch.from_numpy((np.arange(300, dtype=np.int64).reshape(15, 20) * 200) >> 8).to(torch.uint8)
    assert torch.equal(image[0], expected)


def test_folder_dataset_skips_unreadable_files(odd_images):
    samples = [(path, 0) for path, _ in odd_images.values()]
    dataset = D.FolderDataset(samples, 3, transform=D.eval_geometry(Preprocessing(image_size=(8, 8))))
    batch = D.collate([dataset[i] for i in range(len(dataset))])
    bad = [path for path, ok in odd_images.values() if not ok]
    assert len(batch.labels) == len(samples) - len(bad)
    assert batch.images.shape[1:] == (3, 8, 8)  # the 3x2 image too: upsampled
    assert sorted(reason.split(":")[0] for reason in batch.skipped) == sorted(bad)


def test_collate_of_only_bad_files_is_an_empty_batch():
    batch = D.collate([(None, "a: bad"), (None, "b: bad")])
    assert len(batch.labels) == 0 and batch.skipped == ["a: bad", "b: bad"]


# --- folders ------------------------------------------------------------------------------------------------------


def test_scan_ignores_non_images_and_hidden_files(tmp_path):
    make_folder(tmp_path, n=2)
    (tmp_path / "cat" / "notes.txt").write_text("x")
    (tmp_path / "cat" / ".DS_Store").write_bytes(b"\0")
    save(Image.fromarray(pixels(4, 4)), tmp_path / "dog" / ".ipynb_checkpoints" / "x.png")
    save(Image.fromarray(pixels(4, 4)), tmp_path / "owl" / "nested" / "deep.PNG")
    (tmp_path / "empty").mkdir()
    scan = D.scan_image_folder(tmp_path)
    assert scan.classes == ["cat", "dog", "empty", "owl"]
    assert len(scan.samples) == 7 and scan.empty_classes == ["empty"]
    assert [p.split("/")[-1] for p in scan.ignored] == ["notes.txt"]
    assert (str(tmp_path / "owl" / "nested" / "deep.PNG"), 3) in scan.samples


def test_train_and_val_folders(tmp_path):
    make_folder(tmp_path / "train", n=4)
    make_folder(tmp_path / "val", classes=("cat", "owl"), n=2)
    splits = D.load_splits(tmp_path)
    assert splits.classes == ["cat", "dog", "owl"] and splits.kind == "folder" and splits.in_channels == 3
    assert len(splits.train) == 12 and len(splits.val) == 4
    assert sorted(set(splits.val.targets)) == [0, 2]  # labels follow train/'s classes
    assert any("no held-out images for class(es) dog" in note for note in splits.notes)


def test_one_folder_is_split_per_class_with_a_fixed_seed(tmp_path):
    make_folder(tmp_path, n=10)
    a, b = D.load_splits(tmp_path, val_fraction=0.2), D.load_splits(tmp_path, val_fraction=0.2)
    assert len(a.train) == 24 and len(a.val) == 6
    assert sorted(a.val.targets) == [0, 0, 1, 1, 2, 2]
    assert a.val.samples == b.val.samples
    assert not set(a.val.samples) & set(a.train.samples)


def test_grayscale_folders_are_inferred_as_one_channel(tmp_path):
    make_folder(tmp_path, n=3, mode="L")
    assert D.load_splits(tmp_path).in_channels == 1
    assert D.load_splits(tmp_path, in_channels=3).in_channels == 3


@pytest.mark.parametrize(
    "setup,error,message",
    [
        (lambda root: None, FileNotFoundError, "does not exist"),
        (lambda root: root.mkdir(), ValueError, "no images found under"),
        (lambda root: (root / "a").mkdir(parents=True), ValueError, "no images found under"),
        (lambda root: (make_folder(root, n=2), (root / "bird").mkdir()), ValueError, "without images in .*: bird"),
        (lambda root: make_folder(root, classes=("solo",), n=3), ValueError, "a classifier needs at least two"),
        (lambda root: (make_folder(root / "train", n=2), (root / "val").mkdir()), ValueError, "val holds no images"),
        (
            lambda root: (make_folder(root / "train", n=2), make_folder(root / "val", classes=("cow",), n=1)),
            ValueError,
            "class folders the training data does not have: cow",
        ),
    ],
    ids=["missing", "empty", "empty-class-only", "empty-class", "one-class", "empty-val", "unknown-val-class"],
)
def test_unusable_folders_fail_with_one_line(tmp_path, setup, error, message):
    root = tmp_path / "data"
    setup(root)
    with pytest.raises(error, match=message) as info:
        D.load_splits(root)
    assert "\n" not in str(info.value)


# --- CIFAR --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
def test_cifar_folders(tmp_path, kind):
    images, labels = write_cifar(tmp_path, kind)
    splits = D.load_splits(tmp_path)
    assert splits.kind == kind and splits.native_size == (32, 32) and splits.in_channels == 3
    assert len(splits.classes) == (10 if kind == "cifar10" else 100) and splits.classes[3] == "class3"
    assert splits.train.labels.tolist() == labels
    assert torch.equal(splits.train.images, torch.from_numpy(images).reshape(-1, 3, 32, 32))
    assert len(splits.val) == 6


def test_cifar_pickles_cannot_run_code(tmp_path):
    write_cifar(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(ValueError, match="refusing to load builtins.print"):
        D.load_splits(tmp_path)


def test_embedded_mnist_split():
    train_x, train_y, val_x, val_y = D.embedded_mnist()
    assert train_x.shape == (4000, 1, 28, 28) and val_x.shape == (1000, 1, 28, 28) and train_x.dtype == torch.uint8
    assert sorted(set(train_y.tolist())) == list(range(10))
    again = D.embedded_mnist()
    assert torch.equal(again[3], val_y) and torch.equal(again[2], val_x)


# --- batches ------------------------------------------------------------------------------------------------------


def test_to_input_is_eval_transform_batched(odd_images):
    """What evaluation feeds the model is bitwise what predict's per-image transform gives."""
    preprocessing = Preprocessing(image_size=(16, 16), mean=(0.2, 0.4, 0.6), std=(0.3, 0.2, 0.1), crop_pct=0.8)
    paths = [p for p, ok in odd_images.values() if ok]
    geometry = D.eval_geometry(preprocessing)
    batch = torch.stack([geometry(D.read_image(p, 3)) for p in paths])
    got = D.to_input(batch, preprocessing, 3, torch.device("cpu"))
    expected = torch.stack([D.eval_transform(preprocessing)(D.read_image(p, 3)) for p in paths])
    assert torch.equal(got, expected)


def test_to_input_matches_channels_and_size():
    gray = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    x = D.to_input(gray, Preprocessing(image_size=(56, 56), mean=(0.5,) * 3, std=(0.5,) * 3), 3, torch.device("cpu"))
    assert x.shape == (2, 3, 56, 56) and torch.equal(x[:, 0], x[:, 2])
    assert x.min() >= -1 and x.max() <= 1


def test_random_affine_identity_and_determinism():
    images = torch.rand(4, 1, 28, 28)
    g = torch.Generator().manual_seed(0)
    assert D.random_affine(images, g) is images
    # A pure shift by a whole number of pixels moves the image by that many pixels.
    shifted = D.random_affine(images, torch.Generator().manual_seed(1), translate=0.1)
    assert shifted.shape == images.shape and not torch.equal(shifted, images)
    again = D.random_affine(images, torch.Generator().manual_seed(1), translate=0.1)
    assert torch.equal(shifted, again)
    # Zero rotation, zoom and shift is the identity up to bilinear rounding.
    theta_free = D.random_affine(images, torch.Generator().manual_seed(2), degrees=1e-9)
    torch.testing.assert_close(theta_free, images, atol=1e-5, rtol=0)


def test_random_hflip_flips_the_drawn_images():
    images = torch.arange(2 * 1 * 2 * 3, dtype=torch.float32).reshape(2, 1, 2, 3)
    flipped = D.random_hflip(images, torch.Generator().manual_seed(0), p=1.0)
    assert torch.equal(flipped, images.flip(-1))
    assert D.random_hflip(images, torch.Generator(), p=0.0) is images


def test_per_sample_augmentation_depends_on_epoch_and_index_only(tmp_path):
    make_folder(tmp_path, n=4, size=(20, 20))
    scan = D.scan_image_folder(tmp_path)
    dataset = D.FolderDataset(scan.samples, 3, D.train_geometry((8, 8), 0.3, (2, 9)))
    dataset.epoch_seed = 7
    first = [dataset[i][0] for i in range(len(dataset))]
    reversed_order = [dataset[i][0] for i in reversed(range(len(dataset)))][::-1]
    assert all(torch.equal(a, b) for a, b in zip(first, reversed_order, strict=True))
    dataset.epoch_seed = 8
    assert not all(torch.equal(a, dataset[i][0]) for i, a in enumerate(first))
