"""predict: files, folders and globs classified with the checkpoint's own classes and preprocessing."""

import json
import re

import numpy as np
import pytest
import torch
from helpers import CLASSES, PREPROCESSING
from PIL import Image

from mlp_mixer import MLPMixer
from mlp_mixer.commands import main
from mlp_mixer.data import eval_transform, read_image
from mlp_mixer.inference.predict import Predictor, expand_paths
from mlp_mixer.model.pretrained import Preprocessing
from mlp_mixer.utils.files import atomic_save
from mlp_mixer.weights.checkpoint import save_checkpoint


@pytest.fixture
def training_checkpoint(model, tmp_path):
    """The shared model as a training checkpoint (``best.pt``), the other file predict reads."""
    return save_checkpoint(model, tmp_path / "best.pt", epoch=3)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """Five real images of different sizes and modes, two in a nested folder, plus a non-image file."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    (root / "sub" / "deeper").mkdir(parents=True)
    specs = [
        ("a.png", "RGB", (20, 24)),
        ("b.jpg", "L", (40, 18)),
        ("c.png", "RGBA", (16, 16)),
        ("sub/d.png", "P", (33, 21)),
        ("sub/deeper/e.gif", "RGB", (9, 12)),
    ]
    for name, mode, (w, h) in specs:
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        image = Image.fromarray(pixels).convert(mode)
        image.save(root / name)
    (root / "sub" / "notes.txt").write_text("not an image, and not an image extension")
    return root


def expected_probabilities(model: MLPMixer, path, preprocessing: Preprocessing = PREPROCESSING) -> torch.Tensor:
    """The oracle: one direct forward pass of the preprocessed image, batch of one."""
    x = eval_transform(preprocessing)(read_image(path, in_channels=3))
    with torch.no_grad():
        return model(x[None]).softmax(-1)[0]


def test_predictions_match_a_direct_forward(model, checkpoint, images):
    files = sorted(p for p in images.rglob("*") if p.suffix in (".png", ".jpg", ".gif"))
    results = Predictor(checkpoint, device="cpu").predict([images], topk=3, batch_size=2, progress=False)
    assert [r.path for r in results] == [str(p) for p in files]  # notes.txt is not picked up from a folder
    for result, path in zip(results, files, strict=True):
        probs = expected_probabilities(model, path)
        values, indices = probs.topk(3)
        assert result.error is None
        assert result.indices == indices.tolist()
        assert result.classes == [CLASSES[i] for i in indices]
        torch.testing.assert_close(torch.tensor(result.probabilities), values, atol=1e-5, rtol=1e-5)


def test_stored_preprocessing_is_used_not_the_default(model, checkpoint, images):
    result = Predictor(checkpoint, device="cpu").predict([images / "a.png"], topk=10)[0]
    stored = expected_probabilities(model, images / "a.png")
    default = expected_probabilities(model, images / "a.png", Preprocessing(image_size=(16, 16)))
    got = torch.zeros(10).index_put_((torch.tensor(result.indices),), torch.tensor(result.probabilities))
    torch.testing.assert_close(got, stored, atol=1e-5, rtol=1e-5)
    assert (got - default).abs().max() > 1e-3  # the oracle can tell the two apart


def test_training_checkpoint_and_pretrained_folder_agree(checkpoint, training_checkpoint, images):
    a = Predictor(checkpoint, device="cpu").predict([images], batch_size=4)
    b = Predictor(training_checkpoint, device="cpu").predict([images], batch_size=1)  # batching changes nothing
    assert [(r.path, r.classes) for r in a] == [(r.path, r.classes) for r in b]
    np.testing.assert_allclose([r.probabilities for r in a], [r.probabilities for r in b], atol=1e-6)


def test_bad_files_get_their_own_error_and_the_rest_are_predicted(checkpoint, images, tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not really a png")
    good = tmp_path / "good.png"
    Image.open(images / "a.png").save(good)
    (tmp_path / "truncated.jpg").write_bytes((images / "b.jpg").read_bytes()[:100])
    inputs = [tmp_path / "broken.png", good, tmp_path / "missing.png", tmp_path / "truncated.jpg"]
    results = {r.path: r for r in Predictor(checkpoint, device="cpu").predict(inputs, batch_size=8)}
    assert results[str(good)].error is None and len(results[str(good)].classes) == 5
    for name in ("broken.png", "truncated.jpg"):
        assert str(tmp_path / name) in results[str(tmp_path / name)].error  # the message names the file
    assert results[str(tmp_path / "missing.png")].error == "no such file or directory"


def test_globs_folders_and_missing_inputs(images):
    files, failures = expand_paths([str(images / "**" / "*.png"), images / "sub", str(images / "*.gif"), "nope"])
    names = [p.name for p in files]
    assert names == ["a.png", "c.png", "d.png", "e.gif"]  # glob (recursive), then the folder; d.png once
    assert [(f.path, f.error) for f in failures] == [
        (str(images / "*.gif"), "no files match this pattern"),
        ("nope", "no such file or directory"),
    ]


def test_cli_json_output_and_exit_code(checkpoint, images, tmp_path, capsys):
    assert main(["predict", str(images / "a.png"), "--checkpoint", str(checkpoint), "--json", "--topk", "2"]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    assert entry["error"] is None and len(entry["predictions"]) == 2
    assert entry["predictions"][0]["class"] == CLASSES[entry["predictions"][0]["index"]]

    bad = tmp_path / "bad.jpg"
    bad.write_text("plain text")
    assert main(["predict", str(images / "a.png"), str(bad), "--checkpoint", str(checkpoint)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{images / 'a.png'}: c") and lines[0].count("(") == 5
    assert lines[1].startswith(f"{bad}: error: ")


@pytest.mark.parametrize(
    "flags,message",
    [(["--topk", "0"], "--topk must be at least 1"), (["--batch-size", "0"], "--batch-size must be at least 1")],
)
def test_cli_rejects_bad_options(checkpoint, images, flags, message, capsys):
    assert main(["predict", str(images), "--checkpoint", str(checkpoint), *flags]) == 2
    assert message in capsys.readouterr().err


def test_checkpoint_with_wrong_number_of_classes(model, tmp_path):
    path = atomic_save(  # by hand: save_checkpoint stores the model's own (matching) class names
        {"model": model.state_dict(), "model_config": model.config(), "classes": ["a", "b"]}, tmp_path / "c.pt"
    )
    with pytest.raises(ValueError, match="stores 2 class names for a head of 10 classes"):
        Predictor(path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_unavailable_device_is_one_line(checkpoint, images, capsys):
    assert main(["predict", str(images), "--checkpoint", str(checkpoint), "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_agrees_with_cpu(checkpoint, images):
    cpu = Predictor(checkpoint, device="cpu").predict([images], topk=10)
    gpu = Predictor(checkpoint, device="cuda").predict([images], topk=10)
    for a, b in zip(cpu, gpu, strict=True):  # per class: bf16 may reorder near-ties, not move probabilities far
        by_class = dict(zip(b.indices, b.probabilities, strict=True))
        np.testing.assert_allclose(a.probabilities, [by_class[i] for i in a.indices], atol=2e-2)


# --- issue 25: upright photos, one line per file whatever the names, progress in a log ------------------------------


def test_a_sideways_stored_photo_is_predicted_upright(model, checkpoint, tmp_path):
    """A phone's portrait photo (stored sideways, EXIF Orientation 6) gets the prediction of the upright picture."""
    pixels = np.random.default_rng(3).integers(0, 256, (24, 16, 3), dtype=np.uint8)  # the picture, upright
    exif = Image.Exif()
    exif[0x0112] = 6  # "turn 90° clockwise to show": the sensor's pixels are the picture turned the other way
    Image.fromarray(np.rot90(pixels, 1).copy()).save(tmp_path / "phone.png", exif=exif)
    Image.fromarray(pixels).save(tmp_path / "upright.png")
    predictor = Predictor(checkpoint, device="cpu")
    phone, upright = predictor.predict([tmp_path / "phone.png", tmp_path / "upright.png"], topk=10, progress=False)
    assert phone.probabilities == pytest.approx(upright.probabilities, abs=1e-6) and phone.indices == upright.indices
    torch.testing.assert_close(
        torch.tensor(upright.probabilities)[torch.tensor(upright.indices).argsort()],
        expected_probabilities(model, tmp_path / "upright.png"),
    )


def test_names_with_newlines_keep_one_line_per_file(model, tmp_path):
    from mlp_mixer.inference.predict import Prediction, format_predictions

    weird = tmp_path / "two\nlines.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(weird)
    text = format_predictions(
        [Prediction(str(weird), ["cat\nNOT-A-FILE: dog (1.0000)", "owl\u2028"], [0, 1], [0.9, 0.1])]
    )
    assert text == f"{tmp_path}/two\\nlines.png: cat\\nNOT-A-FILE: dog (1.0000) (0.9000), owl\\u2028 (0.1000)"
    assert len(text.splitlines()) == 1


def test_progress_is_a_line_every_few_seconds_when_stderr_is_not_a_terminal(checkpoint, images, capsys, monkeypatch):
    """predict on 100k files printed nothing for 6 minutes with its output in a file: a tqdm bar hides itself
    there. Now a plain line comes every PROGRESS_SECONDS (0 here: one per batch) on stderr, none on stdout."""
    monkeypatch.setattr("mlp_mixer.utils.progress.PROGRESS_SECONDS", 0.0)
    assert main(["predict", str(images), "--checkpoint", str(checkpoint), "--batch-size", "2", "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert [line.split(" files")[0] for line in lines] == ["predict: 2/5", "predict: 4/5", "predict: 5/5"], err
    assert all(re.search(r"files \(\d+%\), [\d,.]+ files/s, \d+ s", line) for line in lines), err
    assert "predict:" not in out and len(out.strip().splitlines()) == 5
    monkeypatch.setattr("mlp_mixer.utils.progress.PROGRESS_SECONDS", 3600.0)  # a short run in a log: silent
    assert main(["predict", str(images), "--checkpoint", str(checkpoint), "--device", "cpu"]) == 0
    assert capsys.readouterr().err == ""
