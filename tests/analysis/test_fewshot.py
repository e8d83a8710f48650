"""Few-shot linear evaluation: the ridge solver against independent solvers, shot sampling, the command."""

import json

import numpy as np
import pytest
import torch
from helpers import save_pretrained

from mlp_mixer import MLPMixer
from mlp_mixer.analysis.fewshot import (
    BIAS_CONSTANT,
    STD_EPS,
    extract_features,
    fewshot,
    fit_ridge,
    pooled_features,
    sample_shots,
)
from mlp_mixer.commands import main
from mlp_mixer.model.pretrained import Preprocessing


def _whitened_design(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return np.hstack([(x - mean) / std, np.full((len(x), 1), BIAS_CONSTANT)])


@pytest.mark.parametrize("n, d", [(200, 16), (12, 40)])  # both closed forms: N >= D and D > N
def test_ridge_matches_sklearn_and_lstsq(n, d):
    from sklearn.linear_model import Ridge

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)) * rng.uniform(0.1, 10, size=d) + rng.normal(size=d)
    y = rng.integers(0, 4, size=n)
    l2 = 3.0
    clf = fit_ridge(torch.from_numpy(x), torch.from_numpy(y), 4, l2)

    mean, std = x.mean(0), x.std(0) + STD_EPS
    np.testing.assert_allclose(clf.mean.numpy(), mean)
    np.testing.assert_allclose(clf.std.numpy(), std)
    design = _whitened_design(x, mean, std)
    targets = 2.0 * np.eye(4)[y] - 1.0
    sk = Ridge(alpha=l2, fit_intercept=False, solver="svd").fit(design, targets)
    np.testing.assert_allclose(clf.weight.numpy(), sk.coef_.T, rtol=1e-7, atol=1e-9)
    # Ridge as ordinary least squares on the augmented system [X; sqrt(l2) I] w = [Y; 0]
    augmented = np.vstack([design, np.sqrt(l2) * np.eye(d + 1)])
    lstsq = np.linalg.lstsq(augmented, np.vstack([targets, np.zeros((d + 1, 4))]), rcond=None)[0]
    np.testing.assert_allclose(clf.weight.numpy(), lstsq, rtol=1e-6, atol=1e-9)

    x_test = rng.normal(size=(30, d))
    expected = _whitened_design(x_test, mean, std) @ sk.coef_.T
    torch.testing.assert_close(clf.decision_function(torch.from_numpy(x_test)), torch.from_numpy(expected))
    assert (clf.predict(torch.from_numpy(x_test)).numpy() == expected.argmax(1)).all()


def test_ridge_separates_linearly_separable_features():
    # 10 classes around well separated centres in 64-d, 5 shots each: the held-out points are all classified right
    gen = torch.Generator().manual_seed(0)
    centres = 4 * torch.randn(10, 64, generator=gen)
    labels = torch.arange(10).repeat_interleave(100)
    features = centres[labels] + torch.randn(1000, 64, generator=gen)
    index = sample_shots(labels, 5, seed=0, num_classes=10)
    clf = fit_ridge(features[index], labels[index], 10, l2_reg=1.0)
    accuracy = (clf.predict(features) == labels).float().mean().item()
    assert accuracy > 0.99
    # ...while on shuffled labels it is near chance: the classifier is fitted, not memorising the test set
    shuffled = labels[torch.randperm(1000, generator=gen)]
    clf = fit_ridge(features[index], shuffled[index], 10, l2_reg=1.0)
    assert (clf.predict(features) == shuffled).float().mean().item() < 0.3


def test_sample_shots_is_nested_balanced_and_seeded():
    labels = torch.tensor([0] * 25 + [1] * 20 + [2] * 25)[
        torch.randperm(70, generator=torch.Generator().manual_seed(1))
    ]
    five = sample_shots(labels, 5, seed=3, num_classes=3)
    assert torch.bincount(labels[five], minlength=3).tolist() == [5, 5, 5]
    one = sample_shots(labels, 1, seed=3, num_classes=3)
    assert set(one.tolist()) <= set(five.tolist())  # big_vision's nesting: 1-shot is inside 5-shot
    assert torch.equal(five, sample_shots(labels, 5, seed=3, num_classes=3))
    assert not torch.equal(five, sample_shots(labels, 5, seed=4, num_classes=3))
    with pytest.raises(ValueError, match="class 'cat' has 20 training images, fewer than 21 shots"):
        sample_shots(labels, 21, seed=0, num_classes=3, classes=["dog", "cat", "bird"])


def _randomize(model: MLPMixer) -> MLPMixer:
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)  # non-trivial LayerNorm and head
    return model.eval()


def _manual_block_tokens(model: MLPMixer, images: torch.Tensor) -> list[torch.Tensor]:
    """Each block's output tokens, computed with the paper's equations on explicitly transposed tokens."""
    linear, gelu = torch.nn.functional.linear, torch.nn.functional.gelu
    x = model.stem(images).flatten(2).transpose(1, 2)  # (B, C, h, w) -> (B, S, C)
    tokens = []
    for block in model.blocks:
        tm, cm = block.token_mixing, block.channel_mixing
        u = block.norm1(x).transpose(1, 2)  # (B, S, C) -> (B, C, S)
        x = x + linear(
            gelu(linear(u, tm.fc1.weight, tm.fc1.bias), approximate="tanh"), tm.fc2.weight, tm.fc2.bias
        ).transpose(1, 2)
        v = block.norm2(x)
        x = x + linear(gelu(linear(v, cm.fc1.weight, cm.fc1.bias), approximate="tanh"), cm.fc2.weight, cm.fc2.bias)
        tokens.append(x)
    return tokens


def test_per_block_features_match_a_manual_loop(tiny_config):
    model = _randomize(MLPMixer(**{**tiny_config, "depth": 3}))
    images = torch.randn(5, 3, 16, 16)
    with torch.no_grad():
        manual = _manual_block_tokens(model, images)
        for block in (0, 1, 2, -1, -3):
            expected = model.pre_head_layer_norm(manual[block]).mean(1)
            torch.testing.assert_close(pooled_features(model, images, block), expected)
        torch.testing.assert_close(pooled_features(model, images), model.pre_head_layer_norm(manual[-1]).mean(1))
        torch.testing.assert_close(
            pooled_features(model, images), model.forward_head(model.forward_features(images), True)
        )

        # the model API underneath: norm= and stop_early= as timm offers them
        final, raw = model.forward_intermediates(images, [0, 2], output_fmt="NLC")
        torch.testing.assert_close(raw, [manual[0], manual[2]])
        _, normed = model.forward_intermediates(images, [0, 2], norm=True, output_fmt="NLC")
        torch.testing.assert_close(normed, [model.pre_head_layer_norm(t) for t in (manual[0], manual[2])])
        early, (first,) = model.forward_intermediates(images, [0], stop_early=True, output_fmt="NLC")
        torch.testing.assert_close(first, manual[0])
        torch.testing.assert_close(early, model.pre_head_layer_norm(manual[0]))
        torch.testing.assert_close(final, model.forward_features(images))
    with pytest.raises(ValueError, match="out of range for a model with depth 3"):
        model.forward_intermediates(images, [3])


def test_extract_features_batches_like_one_pass(tiny_model):
    from mlp_mixer.data import TensorImages, to_input

    model = _randomize(tiny_model)
    images = torch.randint(0, 256, (7, 1, 12, 12), dtype=torch.uint8)  # grayscale at another size: matched, resized
    prep = Preprocessing(image_size=(16, 16), mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.4))
    feats, labels, skipped = extract_features(model, TensorImages(images, torch.arange(7)), prep, batch_size=3, block=0)
    expected = pooled_features(model, to_input(images, prep, 3, torch.device("cpu")), 0)
    torch.testing.assert_close(feats, expected, rtol=1e-5, atol=1e-6)
    assert labels.tolist() == list(range(7)) and skipped == []


@pytest.fixture
def mnist_checkpoint(tmp_path):
    # Not the shared TINY: the embedded MNIST is 28x28 grayscale. A random Mixer for it, saved as a user would
    torch.manual_seed(0)
    config = dict(
        in_channels=1, dim=16, num_classes=10, patch_size=7, image_size=28, depth=1, token_dim=8, channel_dim=32
    )
    model = _randomize(MLPMixer(**config))
    prep = Preprocessing(image_size=(28, 28), mean=(0.5,), std=(0.5,), crop_pct=1.0)
    return save_pretrained(model, tmp_path / "tiny", classes=[str(i) for i in range(10)], preprocessing=prep)


@pytest.fixture(scope="module")
def mnist_split():
    from mlp_mixer.data import embedded_mnist

    return embedded_mnist()  # parsing the CSV takes seconds: once per module


@pytest.mark.slow
def test_fewshot_command_end_to_end(mnist_checkpoint, mnist_split, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("mlp_mixer.data.mnist.embedded_mnist", lambda: mnist_split)
    out = tmp_path / "fewshot.json"
    argv = ["fewshot", "--checkpoint", str(mnist_checkpoint), "--shots", "1,10", "--seeds", "3", "--json", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["train_images"] == 4000 and report["test_images"] == 1000 and report["num_classes"] == 10
    assert set(report["results"]) == {"1", "10"}
    for r in report["results"].values():
        acc = np.array(r["accuracies"])
        assert (
            len(acc) == 3
            and np.isclose(r["mean"], acc.mean(), atol=1e-4)
            and np.isclose(r["std"], acc.std(ddof=1), atol=1e-4)
        )
        assert r["min"] <= r["mean"] <= r["max"] and r["max"] > r["min"]  # seeds draw different shots
        assert f"{r['mean']:.2f} ± {r['std']:.2f}" in printed
    # Even random features carry digit identity: far above chance (10%), and 10 shots beat 1
    assert report["results"]["10"]["mean"] > report["results"]["1"]["mean"] > 15
    # Deterministic: the same call gives the same numbers
    again = fewshot(mnist_checkpoint, shots=[1], seeds=3, progress=False)
    assert again["results"]["1"]["accuracies"] == report["results"]["1"]["accuracies"]


def test_fewshot_on_an_image_folder(tiny_config, tmp_path, capsys):
    from torchvision.io import write_png

    model = _randomize(MLPMixer(**{**tiny_config, "num_classes": 2}))  # a head for the two named classes
    ckpt = save_pretrained(
        model, tmp_path / "m", classes=["dark", "light"], preprocessing=Preprocessing(image_size=(16, 16), crop_pct=1.0)
    )
    for split, count in (("train", 3), ("val", 4)):
        for label, level in (("dark", 30), ("light", 220)):
            folder = tmp_path / "data" / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                image = (level + 20 * torch.rand(3, 8, 8)).to(torch.uint8)
                write_png(image, str(folder / f"{i}.png"))
    report = fewshot(ckpt, tmp_path / "data", shots=[1, 3], seeds=2, progress=False, workers=0)
    assert report["num_classes"] == 2 and report["train_images"] == 6 and report["test_images"] == 8
    assert report["results"]["3"]["mean"] == 100.0  # dark vs light is linearly separable in any features

    (tmp_path / "data" / "val" / "light" / "broken.png").write_bytes(b"not a png")
    report = fewshot(ckpt, tmp_path / "data", shots=[3], seeds=1, progress=False, workers=0)
    assert report["test_images"] == 8 and "broken.png: not an image" in report["skipped_images"][0]
    with pytest.raises(ValueError, match="fewer than 4 shots"):
        fewshot(ckpt, tmp_path / "data", shots=[4], seeds=1, progress=False, workers=0)
    with pytest.raises(ValueError, match="--block 2 is out of range"):
        fewshot(ckpt, tmp_path / "data", block=2, progress=False, workers=0)
    capsys.readouterr()
    assert main(["fewshot", "--checkpoint", str(ckpt), "--data", str(tmp_path / "data"), "--shots", "1,x"]) == 2
    assert "--shots expects comma-separated integers like 1,5,10, got '1,x'" in capsys.readouterr().err
    assert main(["fewshot", "--checkpoint", str(ckpt), "--data", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mlp-mixer fewshot: error:") and "nowhere" in err and "\n" not in err
