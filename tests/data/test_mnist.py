"""data.mnist: the embedded default's fixed split."""

import torch

from mlp_mixer.data.mnist import embedded_mnist


def test_embedded_mnist_split():
    train_x, train_y, val_x, val_y = embedded_mnist()
    assert train_x.shape == (4000, 1, 28, 28) and val_x.shape == (1000, 1, 28, 28) and train_x.dtype == torch.uint8
    assert sorted(set(train_y.tolist())) == list(range(10))
    again = embedded_mnist()
    assert torch.equal(again[3], val_y) and torch.equal(again[2], val_x)
