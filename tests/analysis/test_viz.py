"""Weight pictures: the patch-grid orientation, pairing and frequency sort, and the viz command end to end."""

import numpy as np
import pytest
import torch
from helpers import save_pretrained

from mlp_mixer import MLPMixer
from mlp_mixer.analysis.viz import mosaic, pair_units, select_blocks, spatial_frequency, token_mixing_units, viz
from mlp_mixer.commands import main

# A non-square patch grid (2 x 4) catches a transposed reshape
GRID_CONFIG = dict(
    in_channels=3, dim=8, num_classes=4, patch_size=4, image_size=(8, 16), depth=3, token_dim=6, channel_dim=8
)


def test_token_mixing_units_sit_on_the_patch_grid():
    torch.manual_seed(0)
    model = MLPMixer(**GRID_CONFIG)
    units = token_mixing_units(model, 1)
    assert units.shape == (6, 2, 4)
    fc1 = model.blocks[1].token_mixing.fc1
    with torch.no_grad():
        for r in range(2):
            for c in range(4):
                # an image that is non-zero only in patch (r, c) changes only that patch's token
                image = torch.zeros(1, 3, 8, 16)
                image[:, :, 4 * r : 4 * r + 4, 4 * c : 4 * c + 4] = 1.0
                tokens = model.stem(image).flatten(2).transpose(1, 2) - model.stem.bias  # (1, S, C)
                (s,) = tokens[0].abs().sum(1).nonzero()[:, 0].tolist()
                # the unit's response to a lone token s is the weight drawn at (r, c)
                one_hot = torch.zeros(1, 8, 1)
                one_hot[0, s] = 1.0
                response = (fc1(one_hot) - fc1.bias[:, None])[0, :, 0]
                np.testing.assert_allclose(units[:, r, c], response.numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="block 3 is out of range"):
        token_mixing_units(model, 3)


def _wave(n: int, fy: int, fx: int, phase: float = 0.0) -> np.ndarray:
    y, x = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    return np.cos(2 * np.pi * (fy * y + fx * x) / n + phase)


def test_spatial_frequency_of_pure_waves():
    waves = np.stack([_wave(14, 0, 1), _wave(14, 3, 0), _wave(14, 3, 4, 0.5)])
    np.testing.assert_allclose(spatial_frequency(waves), [1 / 14, 3 / 14, 5 / 14])
    assert spatial_frequency(3.0 + waves[:1])[0] == pytest.approx(1 / 14)  # the mean does not count


def test_pairs_are_opposite_phase_and_sorted_by_frequency():
    rng = np.random.default_rng(0)
    freqs = [(1, 0), (0, 2), (3, 1), (2, 4), (5, 5)]
    planted = []
    for fy, fx in freqs:
        wave = _wave(14, fy, fx, rng.uniform(0, np.pi))
        planted += [wave, -wave + 0.05 * rng.normal(size=wave.shape)]
    order = rng.permutation(len(planted))
    units = np.stack(planted)[order]
    pairs = pair_units(np.concatenate([units, _wave(14, 1, 1)[None]]))  # plus one odd unit out
    assert sorted(len(p) for p in pairs) == [1] + [2] * 5
    where = {i: int(k) for i, k in enumerate(order)}  # unit index -> planted index
    found = [sorted(where[a] // 2 for a in p) for p in pairs if len(p) == 2]
    assert all(a == b for a, b in found)  # each unit is paired with its negative
    two = [p for p in pairs if len(p) == 2]
    assert [where[p[0]] // 2 for p in two] == [0, 1, 2, 3, 4]  # by frequency, as planted (1, 2, 3.2, 4.5, 7.1)


def test_mosaic_places_groups_with_gaps():
    groups = [np.full((2, 3, 3), k, dtype=float) for k in range(3)]
    canvas = mosaic(groups, columns=2, gap=1)
    group_w = 2 * 3 + 1
    assert canvas.shape == (3 + 3 + 3, 2 * group_w + 3)
    assert (canvas[:3, :3] == 0).all() and np.isnan(canvas[:3, 3]).all() and (canvas[:3, 4:7] == 0).all()
    assert (canvas[:3, 10:13] == 1).all() and (canvas[6:, :3] == 2).all() and np.isnan(canvas[3:6]).all()
    assert np.isnan(canvas[6:, group_w + 3 :]).all()  # no fourth group


def test_select_blocks():
    assert select_blocks(None, 8) == [0, 4, 7]
    assert select_blocks(None, 1) == [0]
    assert select_blocks([0, 1, -1], 3) == [0, 1, 2]
    with pytest.raises(ValueError, match="the model has 3 blocks"):
        select_blocks([3], 3)


@pytest.fixture
def run_dir(tmp_path):
    # A run directory as training leaves it: a checkpoint and its figures
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mlp_mixer.utils.files import atomic_save

    torch.manual_seed(0)
    model = MLPMixer(**GRID_CONFIG)
    run = tmp_path / "run"
    atomic_save({"model": model.state_dict(), "model_config": model.config(), "classes": list("abcd")}, run / "best.pt")
    fig = plt.figure()
    fig.savefig(run / "curves.png")
    plt.close(fig)
    return run


def test_viz_command_end_to_end(run_dir, tmp_path, capsys):
    import matplotlib.image

    out = tmp_path / "figures"
    assert main(["viz", "--checkpoint", str(run_dir / "best.pt"), str(out), "--blocks", "0,-1"]) == 0
    printed = capsys.readouterr().out
    names = ["token_mixing_block0.png", "token_mixing_block2.png", "stem_filters.png", "curves.png"]
    index = (out / "index.md").read_text()
    for name in names:
        assert (out / name).is_file() and f"]({name})" in index and name in printed
        assert matplotlib.image.imread(out / name).ndim == 3  # a readable PNG
        assert (out / name).stat().st_mode & 0o044 == 0o044  # readable by others, despite the atomic write
    assert sorted(p.name for p in out.iterdir()) == sorted([*names, "index.md"])  # no temporary files left

    # a save_pretrained directory works too, with the default first/middle/last blocks
    loaded = MLPMixer(**GRID_CONFIG)
    pretrained = save_pretrained(loaded, tmp_path / "pretrained")
    written = viz(pretrained, tmp_path / "figures2", max_units=0)
    assert [p.name for p in written] == [
        "token_mixing_block0.png",
        "token_mixing_block1.png",
        "token_mixing_block2.png",
        "stem_filters.png",
    ]


def test_viz_errors_are_one_line(run_dir, tmp_path, capsys):
    ckpt = str(run_dir / "best.pt")
    assert main(["viz", "--checkpoint", ckpt, str(tmp_path / "o"), "--blocks", "0,5"]) == 2
    assert "the model has 3 blocks" in capsys.readouterr().err
    assert main(["viz", "--checkpoint", ckpt, str(tmp_path / "o"), "--blocks", "first"]) == 2
    assert "--blocks expects comma-separated integers" in capsys.readouterr().err
    assert main(["viz", "--checkpoint", str(tmp_path / "missing.pt"), str(tmp_path / "o")]) == 2
    assert "missing.pt does not exist" in capsys.readouterr().err


def test_run_figures_are_redrawn_from_the_logs(run_dir, tmp_path):
    # A run whose PNGs are gone: curves come back from log.csv, the confusion matrix from eval.json
    import json

    (run_dir / "curves.png").unlink()
    rows = ["epoch,train_loss,train_top1,val_loss,val_top1"] + [
        f"{e},{2 / e:.3f},{1 - 1 / (e + 1):.3f},{2.2 / e:.3f},{1 - 1.2 / (e + 1):.3f}" for e in range(1, 4)
    ]
    (run_dir / "log.csv").write_text("\n".join(rows) + "\n")
    confusion = [[5, 1, 0, 0], [0, 6, 0, 0], [0, 0, 4, 2], [1, 0, 0, 5]]
    report = {
        "split": "held-out",
        "top1": 20 / 24,
        "images": 24,
        "classes": list("abcd"),
        "confusion_matrix": confusion,
    }
    (run_dir / "eval.json").write_text(json.dumps(report))
    (run_dir / "metrics.json").write_text(json.dumps({"best_val_top1": 0.875, "best_epoch": 3}))

    written = viz(run_dir, tmp_path / "out", blocks=[0])  # a run directory stands for its best.pt
    names = [p.name for p in written]
    assert names == ["token_mixing_block0.png", "stem_filters.png", "curves.png", "confusion_matrix.png"]
    index = (tmp_path / "out" / "index.md").read_text()
    assert "redrawn from log.csv" in index and "top-1 83.33% (redrawn from eval.json)" in index
    assert "best held-out top-1 87.50% at epoch 3" in index and "[log.csv](log.csv)" in index
    assert (tmp_path / "out" / "log.csv").read_text() == (run_dir / "log.csv").read_text()
