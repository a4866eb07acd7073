"""`audiokit evaluate`: metrics against a direct computation, the per-class CSV and readable plots."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import yaml

import audiokit as ak
from audiokit.cli import main
from tests.conftest import base_config, informative_model, write_manifest

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _png_ok(path):
    import matplotlib.image

    assert path.read_bytes()[:8] == PNG_MAGIC
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.std() > 0  # not a blank canvas


@pytest.fixture
def saved_model(tmp_path):
    # Informative weights: as created, mn01 gives every clip the probabilities (1/3, 1/3, 1/3).
    model = informative_model("efficientat_mn01.audioset", seed=1)
    model.reset_classifier(3, ["class0", "class1", "class2"])
    model.eval()
    model.pretrained_cfg = model.pretrained_cfg.replace(task="multiclass")
    model.output_activation = "softmax"
    model.save_pretrained(tmp_path / "model")
    return model


def test_evaluate_multiclass_report(tmp_path, saved_model, capsys):
    manifest = write_manifest(tmp_path, classes=3, per_class=8, seconds=1.0, rate=32000)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(base_config(tmp_path, manifest)))
    report = tmp_path / "report"
    code = main(["evaluate", "--model", f"local-dir:{tmp_path / 'model'}", "--data", str(config), "--report",
                 str(report)])  # fmt: skip
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    metrics = json.loads((report / "metrics.json").read_text())
    # Independent: the model's own probabilities on the validation rows of the manifest.
    rows = [r for r in csv.DictReader(manifest.open()) if r["split"] == "val"]
    probs = np.stack([
        saved_model.predict_proba(ak.load_audio(tmp_path / r["path"], sample_rate=32000)[None])[0].numpy() for r in rows
    ])  # fmt: skip
    truth = np.array([int(r["label"][-1]) for r in rows])
    assert metrics["n_samples"] == len(rows) == 6
    assert metrics["accuracy"] == pytest.approx(float((probs.argmax(1) == truth).mean()))
    assert printed["accuracy"] == metrics["accuracy"]
    matrix = np.asarray(metrics["confusion_matrix"])
    assert matrix.sum() == 6 and (matrix.sum(axis=1) == np.bincount(truth, minlength=3)).all()
    per_class = list(csv.DictReader((report / "per_class.csv").open()))
    assert [r["label"] for r in per_class] == ["class0", "class1", "class2"]
    _png_ok(report / "confusion_matrix.png")
    saved = np.load(report / "predictions.npz")
    np.testing.assert_allclose(saved["probs"], probs, atol=1e-5)


def test_evaluate_multilabel_writes_a_pr_curve(tmp_path):
    manifest = write_manifest(tmp_path, classes=3, per_class=4, seconds=0.5)
    text = manifest.read_text().replace(",class0,", ",class0;class1,")  # some clips carry two labels
    manifest.write_text(text)
    model = ak.create_model("efficientat_mn01.audioset", num_classes=3, label_names=["class0", "class1", "class2"])
    model.save_pretrained(tmp_path / "ml")
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(base_config(tmp_path, manifest)))
    assert main(["evaluate", "--model", f"local-dir:{tmp_path / 'ml'}", "--data", str(config), "--report",
                 str(tmp_path / "r")]) == 0  # fmt: skip
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    assert 0.0 <= metrics["map"] <= 1.0 and "d_prime" in metrics
    _png_ok(tmp_path / "r" / "pr_curve.png")


def test_evaluate_errors(tmp_path, saved_model, capsys):
    config = tmp_path / "esc.yaml"
    config.write_text(yaml.safe_dump({"data": {"kind": "esc50", "root": str(tmp_path / "nope")}}))
    args = ["evaluate", "--model", f"local-dir:{tmp_path / 'model'}", "--data", str(config), "--report", "r"]
    assert main(args) == 2 and "does not exist" in capsys.readouterr().err
    manifest = write_manifest(tmp_path, classes=2, per_class=4)
    config.write_text(yaml.safe_dump(base_config(tmp_path, manifest)))
    assert main(args) == 2 and "3 outputs but the dataset has 2 classes" in capsys.readouterr().err
