"""data.folder: the ImageFolder source (scanning, the splits, unusable folders, per-sample decoding)."""

import pytest
import torch
from helpers import make_folder, pixels, save
from PIL import Image

from mlp_mixer.data.folder import FolderDataset, scan_image_folder
from mlp_mixer.data.loader import collate
from mlp_mixer.data.sources import load_splits
from mlp_mixer.data.transforms import eval_geometry, train_geometry
from mlp_mixer.model.pretrained import Preprocessing


def test_folder_dataset_skips_unreadable_files(odd_images):
    samples = [(path, 0) for path, _ in odd_images.values()]
    dataset = FolderDataset(samples, 3, transform=eval_geometry(Preprocessing(image_size=(8, 8))))
    batch = collate([dataset[i] for i in range(len(dataset))])
    bad = [path for path, ok in odd_images.values() if not ok]
    assert len(batch.labels) == len(samples) - len(bad)
    assert batch.images.shape[1:] == (3, 8, 8)  # the 3x2 image too: upsampled
    assert sorted(reason.split(":")[0] for reason in batch.skipped) == sorted(bad)


def test_scan_ignores_non_images_and_hidden_files(tmp_path):
    make_folder(tmp_path, n=2)
    (tmp_path / "cat" / "notes.txt").write_text("x")
    (tmp_path / "cat" / ".DS_Store").write_bytes(b"\0")
    save(Image.fromarray(pixels(4, 4)), tmp_path / "dog" / ".ipynb_checkpoints" / "x.png")
    save(Image.fromarray(pixels(4, 4)), tmp_path / "owl" / "nested" / "deep.PNG")
    (tmp_path / "empty").mkdir()
    scan = scan_image_folder(tmp_path)
    assert scan.classes == ["cat", "dog", "empty", "owl"]
    assert len(scan.samples) == 7 and scan.empty_classes == ["empty"]
    assert [p.split("/")[-1] for p in scan.ignored] == ["notes.txt"]
    assert (str(tmp_path / "owl" / "nested" / "deep.PNG"), 3) in scan.samples


def test_train_and_val_folders(tmp_path):
    make_folder(tmp_path / "train", n=4)
    make_folder(tmp_path / "val", classes=("cat", "owl"), n=2)
    splits = load_splits(tmp_path)
    assert splits.classes == ["cat", "dog", "owl"] and splits.kind == "folder" and splits.in_channels == 3
    assert len(splits.train) == 12 and len(splits.val) == 4
    assert sorted(set(splits.val.targets)) == [0, 2]  # labels follow train/'s classes
    assert any("no held-out images for class(es) dog" in note for note in splits.notes)


def test_one_folder_is_split_per_class_with_a_fixed_seed(tmp_path):
    make_folder(tmp_path, n=10)
    a, b = load_splits(tmp_path, val_fraction=0.2), load_splits(tmp_path, val_fraction=0.2)
    assert len(a.train) == 24 and len(a.val) == 6
    assert sorted(a.val.targets) == [0, 0, 1, 1, 2, 2]
    assert a.val.samples == b.val.samples
    assert not set(a.val.samples) & set(a.train.samples)


def test_grayscale_folders_are_inferred_as_one_channel(tmp_path):
    make_folder(tmp_path, n=3, mode="L")
    assert load_splits(tmp_path).in_channels == 1
    assert load_splits(tmp_path, in_channels=3).in_channels == 3


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
        load_splits(root)
    assert "\n" not in str(info.value)


def test_per_sample_augmentation_depends_on_epoch_and_index_only(tmp_path):
    make_folder(tmp_path, n=4, size=(20, 20))
    scan = scan_image_folder(tmp_path)
    dataset = FolderDataset(scan.samples, 3, train_geometry((8, 8), 0.3, (2, 9)))
    dataset.epoch_seed = 7
    first = [dataset[i][0] for i in range(len(dataset))]
    reversed_order = [dataset[i][0] for i in reversed(range(len(dataset)))][::-1]
    assert all(torch.equal(a, b) for a, b in zip(first, reversed_order, strict=True))
    dataset.epoch_seed = 8
    assert not all(torch.equal(a, dataset[i][0]) for i, a in enumerate(first))
