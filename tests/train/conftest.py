"""What the train tests share: the tiny training settings and a small CIFAR folder, and a run to fine-tune from."""

from pathlib import Path

import pytest
from helpers import write_cifar

from mlp_mixer.train import TrainConfig, train

# Not the suite's TINY (a model to load and run): sizes whose training step takes milliseconds, 2 blocks on 4x4 = 16
# patches of a 16x16 image.
TRAIN_SIZES = dict(dim=16, depth=2, token_dim=8, channel_dim=32, patch_size=4, image_size=16)
# One thread: as fast for these sizes, and many times faster when other processes share the cores.
FAST = dict(**TRAIN_SIZES, batch_size=8, warmup_epochs=1.0, workers=0, threads=1)


@pytest.fixture
def fast() -> dict:
    """The tiny model and fast settings as :class:`TrainConfig` fields (a fresh dict: a test may change it)."""
    return dict(FAST)


@pytest.fixture
def every_augmentation() -> dict:
    """SGD with a linear schedule and every augmentation and regulariser on: one run trains with them
    (test_optim.py), another checks what each does (test_inputs.py)."""
    return dict(
        opt="sgd", sched="linear", randaugment=[2, 9], mixup=0.8, cutmix=1.0, affine=[15, 0.1, 0.2],
        drop_path=0.1, dropout=0.1, smoothing=0.2, ema=0.5,
    )  # fmt: skip


@pytest.fixture
def tiny_flags() -> list[str]:
    """The tiny model's sizes as ``mlp-mixer train`` flags."""
    return [f"--{k.replace('_', '-')}={v}" for k, v in TRAIN_SIZES.items()]


@pytest.fixture(scope="module")
def cifar(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("cifar-10-batches-py")
    write_cifar(root, "cifar10", per_file=8)  # 40 training images, 8 test images
    return str(root)


@pytest.fixture(scope="module")
def source_run(tmp_path_factory, cifar) -> Path:
    """One epoch of the tiny model on :func:`cifar`: the checkpoint the fine-tuning tests start from."""
    out = tmp_path_factory.mktemp("source")
    train(TrainConfig(data=cifar, epochs=1, output=str(out), **FAST))
    return out / "last.pt"
