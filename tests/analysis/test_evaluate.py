"""evaluate: metrics against a direct computation, class matching by name, and the eval command."""

import json

import pytest
import torch
import torch.nn.functional as F
from helpers import PREPROCESSING, make_folder

from mlp_mixer import data as D
from mlp_mixer.analysis.evaluate import EvalResult, evaluate, evaluate_model
from mlp_mixer.commands import main
from mlp_mixer.utils.files import atomic_save
from mlp_mixer.weights.checkpoint import save_checkpoint


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
    labels = torch.randint(0, 10, (37,))
    result = evaluate_model(model, D.TensorImages(images, labels), PREPROCESSING, torch.device("cpu"), batch_size=8)
    mean, std = (torch.tensor(v)[:, None, None] for v in (PREPROCESSING.mean, PREPROCESSING.std))
    with torch.no_grad():
        logits = model((images.float() / 255 - mean) / std)
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
    labels = torch.tensor([0, 1] * 5)  # the data's classes: the model's "c2" (0) and "c5" (1)
    result = evaluate_model(model, D.TensorImages(images, labels), PREPROCESSING, torch.device("cpu"), label_map=[2, 5])
    assert result.confusion.shape == (10, 10)
    assert result.confusion.sum(1).tolist() == [0, 0, 5, 0, 0, 5, 0, 0, 0, 0]


def test_eval_command_on_a_folder(tmp_path, checkpoint, capsys):
    root = tmp_path / "data"
    make_folder(root, classes=("c1", "c5"), n=3, size=(24, 20))  # two of the checkpoint's ten classes, by name
    (root / "c5" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    (root / "c5" / "notes.txt").write_text("not an image")
    assert main(["eval", "--checkpoint", str(checkpoint), "--data", str(root), "--output", str(tmp_path / "ev")]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    report = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert report["images"] == 6 and set(report["per_class"]) == {"c1", "c5"}
    assert len(report["skipped_images"]) == 1 and "broken.png" in report["skipped_images"][0]
    assert (tmp_path / "ev" / "confusion_matrix.png").stat().st_size > 1000
    assert out[-1].startswith(f"top-1 {100 * report['top1']:.2f}%") and "on 6 images" in out[-1]
    assert any(line.startswith("c5") for line in out)


def test_eval_uses_val_of_an_imagefolder_root(tmp_path, checkpoint):
    make_folder(tmp_path / "train", classes=("c0", "c2"), n=4)
    make_folder(tmp_path / "val", classes=("c0", "c2"), n=2)
    report = evaluate(checkpoint, data=tmp_path, output=tmp_path / "ev")
    assert report["images"] == 4 and report["split"].endswith("val")


def test_eval_needs_data_for_a_pretrained_directory(checkpoint, capsys):
    assert main(["eval", "--checkpoint", str(checkpoint)]) == 2
    assert "pass --data" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["truncated", "wrong-shapes"])
def test_a_damaged_checkpoint_is_one_line(tmp_path, model, capsys, damage):
    path = tmp_path / "bad.pt"  # a training checkpoint: the file `train --init-from` also reads
    if damage == "truncated":
        path.write_bytes(save_checkpoint(model, tmp_path / "best.pt").read_bytes()[:1000])
    else:
        state = {k: v[..., :1] if k == "head.weight" else v for k, v in model.state_dict().items()}
        atomic_save({"model": state, "model_config": model.config(), "classes": model.classes}, path)
    for argv in (["eval", "--checkpoint", str(path)], ["train", "--init-from", str(path), "--output", str(tmp_path)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert str(path) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
