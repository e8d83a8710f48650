"""evaluate: metrics against a direct computation, class matching by name, and the eval command."""

import json

import pytest
import torch
import torch.nn.functional as F
from helpers import make_folder, save_pretrained

from mlp_mixer import MLPMixer
from mlp_mixer import data as D
from mlp_mixer.analysis.evaluate import EvalResult, evaluate, evaluate_model
from mlp_mixer.commands import main
from mlp_mixer.model.pretrained import Preprocessing
from mlp_mixer.utils.files import atomic_save

TINY = dict(in_channels=3, dim=16, num_classes=6, patch_size=4, image_size=16, depth=2, token_dim=8, channel_dim=32)
CLASSES = ["ant", "bee", "cat", "dog", "eel", "owl"]
PREPROCESSING = Preprocessing(image_size=(16, 16), mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=1.0)


@pytest.fixture(scope="module")
def model() -> MLPMixer:
    torch.manual_seed(0)
    model = MLPMixer(**TINY).eval()
    torch.nn.init.normal_(model.head.weight, std=1.0)  # a zero head would make every class tie
    return model


def test_metrics_follow_from_the_confusion_matrix():
    result = EvalResult(torch.tensor([[3, 1, 0], [0, 4, 0], [0, 0, 0]]), loss_sum=4.0, top5_correct=8)
    assert result.count == 8 and result.top1 == 7 / 8 and result.top5 == 1.0 and result.loss == 0.5
    assert result.per_class(["a", "b", "c"]) == {
        "a": {"accuracy": 0.75, "images": 4},
        "b": {"accuracy": 1.0, "images": 4},
    }


def test_evaluate_model_matches_a_direct_computation(model):
    torch.manual_seed(1)
    images = torch.randint(0, 256, (37, 3, 16, 16), dtype=torch.uint8)
    labels = torch.randint(0, 6, (37,))
    result = evaluate_model(model, D.TensorImages(images, labels), PREPROCESSING, torch.device("cpu"), batch_size=8)
    with torch.no_grad():
        logits = model((images.float() / 255 - 0.5) / 0.5)
    predicted = logits.argmax(1)
    assert result.count == 37
    assert result.top1 == pytest.approx((predicted == labels).float().mean().item())
    top5 = (logits.topk(5).indices == labels[:, None]).any(1).float().mean().item()
    assert result.top5 == pytest.approx(top5)
    assert result.loss == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
    for t, p in zip(labels.tolist(), predicted.tolist(), strict=True):
        result.confusion[t, p] -= 1
    assert not result.confusion.any()


def test_label_map_puts_a_subset_of_classes_in_place(model):
    images = torch.randint(0, 256, (10, 3, 16, 16), dtype=torch.uint8)
    labels = torch.tensor([0, 1] * 5)  # the data's classes: "cat" (0) and "owl" (1)
    result = evaluate_model(model, D.TensorImages(images, labels), PREPROCESSING, torch.device("cpu"), label_map=[2, 5])
    assert result.confusion.shape == (6, 6)
    assert result.confusion.sum(1).tolist() == [0, 0, 5, 0, 0, 5]


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "best.pt"
    atomic_save(
        {
            "model": model.state_dict(),
            "model_config": model.config(),
            "classes": CLASSES,
            "preprocessing": PREPROCESSING.to_dict(),
        },
        path,
    )
    return path


def test_eval_command_on_a_folder(tmp_path, checkpoint, capsys):
    root = tmp_path / "data"
    make_folder(root, classes=("bee", "owl"), n=3, size=(24, 20))
    (root / "owl" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (root / "owl" / "notes.txt").write_text("not an image")
    assert main(["eval", "--checkpoint", str(checkpoint), "--data", str(root), "--output", str(tmp_path / "ev")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    report = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert report["images"] == 6 and set(report["per_class"]) == {"bee", "owl"}
    assert len(report["skipped_images"]) == 1 and "broken.png" in report["skipped_images"][0]
    assert (tmp_path / "ev" / "confusion_matrix.png").stat().st_size > 1000
    assert out[-1].startswith(f"top-1 {100 * report['top1']:.2f}%") and "on 6 images" in out[-1]
    assert any(line.startswith("owl") for line in out)


def test_eval_uses_val_of_an_imagefolder_root(tmp_path, checkpoint):
    make_folder(tmp_path / "train", classes=("ant", "cat"), n=4)
    make_folder(tmp_path / "val", classes=("ant", "cat"), n=2)
    report = evaluate(checkpoint, data=tmp_path, output=tmp_path / "ev")
    assert report["images"] == 4 and report["split"].endswith("val")


def test_eval_needs_data_for_a_pretrained_directory(tmp_path, model, capsys):
    directory = save_pretrained(model, tmp_path / "pretrained", CLASSES, PREPROCESSING)
    assert main(["eval", "--checkpoint", str(directory)]) == 2
    assert "pass --data" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncated", "wrong-shapes"])
def test_a_damaged_checkpoint_is_one_line(tmp_path, checkpoint, model, capsys, damage):
    path = tmp_path / "bad.pt"
    if damage == "truncated":
        path.write_bytes(checkpoint.read_bytes()[:1000])
    else:
        state = {k: v[..., :1] if k == "head.weight" else v for k, v in model.state_dict().items()}
        atomic_save({"model": state, "model_config": model.config(), "classes": CLASSES}, path)
    for argv in (["eval", "--checkpoint", str(path)], ["train", "--init-from", str(path), "--output", str(tmp_path)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert str(path) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
