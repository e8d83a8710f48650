"""train/optim.py: the learning-rate schedule, SGD with linear decay, the EMA of the weights and SAM."""

import pytest
import torch

from mlp_mixer.analysis.plots import read_log
from mlp_mixer.train import TrainConfig, lr_factor, train
from mlp_mixer.train.optim import SAM, sam_gradient
from mlp_mixer.weights.checkpoint import load_checkpoint


def test_lr_schedule_shape():
    factors = [lr_factor(s, total=100, warmup=10, sched="cosine", floor=0.01) for s in range(100)]
    assert factors[0] == pytest.approx(1 / 11) and factors[9] == pytest.approx(10 / 11) and factors[10] == 1.0
    assert factors[55] == pytest.approx(0.01 + 0.99 * 0.5, abs=0.02) and factors[-1] > 0.01
    assert all(a >= b for a, b in zip(factors[10:], factors[11:], strict=False))
    linear = [lr_factor(s, total=100, warmup=0, sched="linear", floor=0.0) for s in range(101)]
    assert linear[50] == pytest.approx(0.5) and linear[100] == 0.0


def test_sgd_linear_schedule_and_every_augmentation(tmp_path, folder, fast, every_augmentation):
    config = TrainConfig(
        data=folder,
        epochs=2,
        output=str(tmp_path / "run"),
        **every_augmentation,
        **fast,
    )
    metrics = train(config)
    rows = read_log(tmp_path / "run" / "log.csv")
    assert metrics["status"] == "completed" and rows[-1]["lr"] == pytest.approx(1e-5)  # linear decay to min_lr
    checkpoint = load_checkpoint(tmp_path / "run" / "last.pt")
    ema, raw = checkpoint["model"], checkpoint["train_model"]  # EMA weights are the model; the raw ones kept
    assert any(not torch.equal(ema[k], raw[k]) for k in ema)


def test_sam_gradient_is_the_gradient_at_the_ascended_weights():
    """On f(w) = sum(a * w^3) (gradient 3 a w^2, closed form): SAM's gradient at w is f's gradient at
    w + rho g / ||g||, the weights are put back, and it differs from the plain gradient."""
    torch.manual_seed(0)
    a = [torch.randn(3, 4), torch.randn(5)]
    params = [torch.nn.Parameter(torch.randn(3, 4)), torch.nn.Parameter(torch.randn(5))]
    before = [p.detach().clone() for p in params]

    def backward():
        for p in params:
            p.grad = None
        sum((ai * p**3).sum() for ai, p in zip(a, params, strict=True)).backward()

    backward()
    g = [p.grad.clone() for p in params]
    norm = torch.cat([x.flatten() for x in g]).norm()
    sam_gradient(params, 0.1, backward)
    for p, w, ai, gi in zip(params, before, a, g, strict=True):
        assert torch.equal(p.detach(), w)  # the weights are back where they were
        ascended = w + 0.1 * gi / norm
        torch.testing.assert_close(p.grad, 3 * ai * ascended**2)
        assert not torch.allclose(p.grad, gi)


def test_looksam_reuses_the_flat_direction_between_its_sam_steps():
    """LookSAM (--sam-every 3): at step 0 the gradient is SAM's and v (what is kept) is its part orthogonal to the
    plain gradient; at steps 1 and 2 the plain gradient plus alpha ||g|| / ||v|| v, without a second pass; at step
    3 SAM's again. On f(w) = sum(a * w^3), whose gradient is known in closed form."""
    torch.manual_seed(0)
    a = [torch.randn(3, 4), torch.randn(5)]
    params = [torch.nn.Parameter(torch.randn(3, 4)), torch.nn.Parameter(torch.randn(5))]
    passes = []

    def backward():
        passes.append(1)
        for p in params:
            p.grad = None
        sum((ai * p**3).sum() for ai, p in zip(a, params, strict=True)).backward()

    def flat(tensors):
        return torch.cat([t.flatten() for t in tensors])

    sam = SAM(0.1, every=3, alpha=0.2)
    for step in range(4):
        backward()
        plain = flat([p.grad for p in params])
        w = flat([p.detach() for p in params])
        passes.clear()
        sam(params, step, backward)
        got = flat([p.grad for p in params])
        if step % 3 == 0:
            assert len(passes) == 1
            ascended = w + 0.1 * plain / plain.norm()
            torch.testing.assert_close(got, 3 * flat(a) * ascended**2)  # SAM's gradient
            v = flat(sam.flat)
            assert abs(v @ plain) < 1e-5 * v.norm() * plain.norm()  # orthogonal to g
            torch.testing.assert_close(v + (got @ plain) / plain.norm() ** 2 * plain, got)  # g_s = its parts
        else:
            assert passes == []  # no second pass
            torch.testing.assert_close(got, plain + 0.2 * plain.norm() / v.norm() * v)
        with torch.no_grad():  # move, so the next step's gradient differs
            for p in params:
                p -= 0.05 * p.grad


def test_sam_trains_and_is_refused_below_zero(tmp_path, folder, fast):
    metrics = train(TrainConfig(data=folder, epochs=1, sam=0.1, output=str(tmp_path / "sam"), **fast))
    train(TrainConfig(data=folder, epochs=1, output=str(tmp_path / "plain"), **fast))
    assert metrics["status"] == "completed"
    sam_w, plain_w = (load_checkpoint(tmp_path / d / "last.pt")["model"] for d in ("sam", "plain"))
    assert any(not torch.equal(sam_w[k], plain_w[k]) for k in sam_w)
    with pytest.raises(ValueError, match="--sam must be a non-negative number"):
        train(TrainConfig(data=folder, sam=-0.1, output=str(tmp_path / "bad"), **fast))
    with pytest.raises(ValueError, match="--sam-every must be a whole number of steps, 1 or more, got 0"):
        train(TrainConfig(data=folder, sam=0.1, sam_every=0, output=str(tmp_path / "bad"), **fast))
