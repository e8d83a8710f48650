"""train/inputs.py: every augmentation, drawn from (seed, epoch, step), and the clean last --no-aug-epochs."""

import pytest
import torch
from torchvision.transforms import v2

from mlp_mixer.train import TrainConfig, open_data, resolve_config, train
from mlp_mixer.train.build import build_model
from mlp_mixer.train.inputs import BatchAugment, attach_transforms, augments, mixing
from mlp_mixer.weights.checkpoint import load_checkpoint


def test_every_augmentation_is_drawn_from_the_seed(tmp_path, folder, fast, every_augmentation):
    """What each augmentation does, built by the same functions from the settings of
    ``test_optim.py::test_sgd_linear_schedule_and_every_augmentation`` (the ``every_augmentation`` fixture)."""
    config = TrainConfig(
        data=folder,
        epochs=2,
        output=str(tmp_path / "run"),
        **every_augmentation,
        **fast,
    )

    resolved = resolve_config(config)
    splits = open_data(resolved)
    model, preprocessing, _ = build_model(resolved, splits)
    attach_transforms(splits, resolved, preprocessing)
    (randaugment,) = [t for t in splits.train.transform.transforms if isinstance(t, v2.RandAugment)]
    assert (randaugment.num_ops, randaugment.magnitude) == (2, 9)
    first, _ = splits.train[0]
    splits.train.epoch_seed = 1
    assert not torch.equal(first, splits.train[0][0])  # another epoch, another draw ...
    splits.train.epoch_seed = 0
    assert torch.equal(first, splits.train[0][0])  # ... and the same draw again for the same epoch
    images = torch.rand(8, 3, 16, 16)
    labels = torch.arange(8) % 3
    augment = BatchAugment(resolved)
    moved = augment(images, torch.Generator().manual_seed(0))
    assert not torch.allclose(moved, images)
    assert torch.equal(moved, augment(images, torch.Generator().manual_seed(0)))
    torch.manual_seed(0)
    mixed, targets = mixing(resolved, 3)(images, labels)
    assert targets.shape == (8, 3) and torch.allclose(targets.sum(1), torch.ones(8))
    assert targets.max() < 1 and not torch.equal(mixed, images)  # soft labels, blended images
    assert model.blocks[-1].drop_path.p == pytest.approx(0.1)  # stochastic depth: 0 .. rate over the blocks
    assert model.blocks[0].drop_path.p == 0 and model.blocks[0].token_mixing.drop1.p == pytest.approx(0.1)
    model.train()
    x = torch.randn(2, 3, 16, 16)
    assert not torch.equal(model.forward_features(x), model.forward_features(x))  # dropout draws differ
    model.eval()
    assert torch.equal(model.forward_features(x), model.forward_features(x))


def test_no_aug_epochs_train_the_last_epochs_as_if_unaugmented(tmp_path, cifar, folder, fast):
    """With every augmentation on and --no-aug-epochs equal to --epochs, training equals a run with none, bit for
    bit; with the last epoch clean, it differs from both; image files then get the held-out geometry."""
    augmented = dict(affine=[15, 0.1, 0.2], hflip=0.5, mixup=0.8, cutmix=1.0)
    plain = dict(affine=[0, 0, 0], hflip=0.0, mixup=0.0, cutmix=0.0)

    def weights(name: str, **settings) -> dict:
        train(TrainConfig(data=cifar, epochs=2, output=str(tmp_path / name), **fast, **settings))
        return load_checkpoint(tmp_path / name / "last.pt")["model"]

    def same(a: dict, b: dict) -> bool:
        return all(torch.equal(a[k], b[k]) for k in a)

    none, clean = weights("none", **plain), weights("clean", **augmented, no_aug_epochs=2)
    assert same(none, clean)
    last = weights("last", **augmented, no_aug_epochs=1)
    assert not same(last, none) and not same(last, weights("all", **augmented))

    resolved = resolve_config(TrainConfig(data=folder, randaugment=[2, 9], no_aug_epochs=1, **fast))
    splits = open_data(resolved)
    _, preprocessing, _ = build_model(resolved, splits)
    attach_transforms(splits, resolved, preprocessing, augment=False)
    assert splits.train.transform is splits.val.transform and splits.val.transform is not None
    assert [augments(resolved, epoch) for epoch in range(resolved.epochs)][-2:] == [True, False]
    with pytest.raises(ValueError, match="--no-aug-epochs"):
        resolve_config(TrainConfig(epochs=3, no_aug_epochs=-1))
    assert not augments(resolve_config(TrainConfig(epochs=2, no_aug_epochs=3)), 0)  # all clean, not an error
