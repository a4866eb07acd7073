"""Activation studies: a tiny real study end to end, reuse of finished cells, and the verdict over several seeds."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import yaml

import audiokit.study as study
from audiokit.study import compare_activations
from tests.conftest import base_config, write_manifest

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write_config(tmp_path: Path) -> Path:
    """Tones of 0.5-1 s (varied lengths exercise the padding path), 3 classes x 6 clips, mn01, 2 epochs on CPU."""
    manifest = write_manifest(tmp_path / "data", classes=3, per_class=6, seconds=1.0, min_seconds=0.5)
    config = base_config(tmp_path, manifest, device="cpu")
    del config["output_dir"], config["run_name"]  # the study decides where each cell runs
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _assert_png(path: Path) -> None:

    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == PNG_MAGIC, path
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 50 and image.shape[1] > 50 and image.shape[2] in (3, 4)


def test_tiny_study_end_to_end_and_reuse(tmp_path, monkeypatch):
    config = _write_config(tmp_path)
    out = tmp_path / "study"
    table = compare_activations(config, ["relu", "gelu"], [0], out, overrides=["train.optimizer.lr=2e-3"])

    for name in ("results.csv", "results.md", "curves.png", "bars.png", "study.json", "README.md"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))
    _assert_png(out / "curves.png")
    _assert_png(out / "bars.png")

    # The head had no hidden layer: [256] was used, and every cell really ran with it.
    assert table["hidden_defaulted"] and table["hidden"] == [256]
    assert table["metric"] == "accuracy"
    for act in ("relu", "gelu"):
        saved = yaml.safe_load((out / "runs" / f"{act}_seed0" / "config.yaml").read_text())
        assert saved["head"] == {**saved["head"], "activation": act, "hidden": [256]}
        assert saved["train"]["seed"] == 0 and saved["train"]["optimizer"]["lr"] == 2e-3

    # results.csv holds exactly the cells' finals (1 seed: the mean is the cell's value; no std).
    rows = {r["activation"]: r for r in csv.DictReader((out / "results.csv").open())}
    assert list(rows) == ["relu", "gelu"]
    for act, row in rows.items():
        run = out / "runs" / f"{act}_seed0"
        summary = json.loads((run / "summary.json").read_text())
        last = [json.loads(x) for x in (run / "holdout" / "metrics.jsonl").read_text().splitlines()][-1]
        assert last["epoch"] == 2
        assert float(row["final_accuracy_mean"]) == summary["final"]["mean"] == last["val_accuracy"]
        assert float(row["best_epoch_accuracy_mean"]) == summary["best_epoch"]["mean"]
        assert float(row["final_val_loss_mean"]) == pytest.approx(last["val_loss"], rel=1e-12)
        assert float(row["train_seconds_mean"]) > 0
        assert row["final_accuracy_std"] == "nan" and row["seeds"] == "1"
        for key, value in study.layer_diagnostics(last).items():  # whatever diagnostics the loop records
            assert float(row[f"{key}_mean"]) == pytest.approx(value)

    data = json.loads((out / "study.json").read_text())
    assert set(data["cells"]) == {"relu_seed0", "gelu_seed0"}
    assert [r["epoch"] for r in data["cells"]["gelu_seed0"]["histories"]["holdout"]] == [1, 2]
    assert data["table"]["winner"] == table["winner"]

    readme = (out / "README.md").read_text()
    assert table["winner"] in readme and table["runner_up"] in readme
    assert "single seed no standard deviation is available" in readme
    assert "audiokit compare-activations" in readme and "--set train.optimizer.lr=2e-3" in readme
    assert "```yaml" in readme and "efficientat_mn01.audioset" in readme
    if not table["tie"]:
        assert f"Winner: **{table['winner']}**" in readme and f"{table['margin_pp']:.2f} percentage points" in readme
    assert "| relu |" in (out / "results.md").read_text()

    # A second run reuses every finished cell: no training, the runs untouched, the same table.
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("metrics.jsonl")}
    assert len(mtimes) == 2

    def fail(*args, **kwargs):
        raise AssertionError("a finished cell was recomputed")

    monkeypatch.setattr(study, "finetune", fail)
    again = compare_activations(config, ["relu", "gelu"], [0], out, overrides=["train.optimizer.lr=2e-3"])
    assert json.dumps(again, sort_keys=True) == json.dumps(table, sort_keys=True)  # nan std: compare as text
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes
    assert {c["status"] for c in json.loads((out / "study.json").read_text())["cells"].values()} == {"reused"}

    # Reusing a cell that was run with another configuration is refused, not silently mixed in.
    with pytest.raises(ValueError, match=r"different configuration.*train\.optimizer\.lr"):
        compare_activations(config, ["relu"], [0], out)


def _fake_finetune(scores: dict[tuple[str, int], float], calls: list):
    """Writes what ``finetune`` writes (config.yaml, metrics.jsonl, summary.json) with chosen scores, instantly."""

    def finetune(cfg, run_dir, *, folds=None, resume=False, progress=True):
        run_dir = Path(run_dir)
        calls.append((cfg.head.activation, cfg.train.seed, resume))
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
        score = scores[(cfg.head.activation, cfg.train.seed)]
        (run_dir / "holdout").mkdir(exist_ok=True)
        records = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 2.0 - score, "val_accuracy": score * e / 2,
                    "train_seconds": 1.5, "head.layer0.dead_fraction": 0.1 * e, "head.layer1.dead_fraction": 0.3}
                   for e in (1, 2)]  # fmt: skip
        (run_dir / "holdout" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        final = {"mean": score, "std": 0.0}
        summary = {"metric": "accuracy", "final": final, "best_epoch": final, "splits": {"holdout": {"final": score}}}
        (run_dir / "summary.json").write_text(json.dumps(summary))
        return summary

    return finetune


@pytest.mark.parametrize(
    ("gelu_scores", "exceeds"),
    [((0.80, 0.82), True), ((0.60, 0.95), False)],  # relu: 0.70, 0.72 -> margin 10 pp; pooled std small / large
)
def test_verdict_over_seeds_and_partial_cells(tmp_path, monkeypatch, gelu_scores, exceeds):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"model": {"name": "efficientat_mn01.audioset", "pretrained": False},
                                      "head": {"hidden": [32, 16]},
                                      "data": {"kind": "manifest", "manifest": str(tmp_path / "m.csv")}}))  # fmt: skip
    scores = {("relu", 0): 0.70, ("relu", 1): 0.72, ("gelu", 0): gelu_scores[0], ("gelu", 1): gelu_scores[1]}
    calls: list = []
    monkeypatch.setattr(study, "finetune", _fake_finetune(scores, calls))
    out = tmp_path / "study"
    (out / "runs" / "gelu_seed1").mkdir(parents=True)  # an interrupted cell: resumed, not restarted
    table = compare_activations(config, ["relu", "gelu"], [0, 1], out, progress=False)

    assert sorted(calls) == [("gelu", 0, False), ("gelu", 1, True), ("relu", 0, False), ("relu", 1, False)]
    assert table["hidden"] == [32, 16] and not table["hidden_defaulted"]
    gelu, relu = table["rows"][1], table["rows"][0]
    assert gelu["final_accuracy_mean"] == pytest.approx(0.81 if exceeds else 0.775)
    assert relu["final_accuracy_std"] == pytest.approx(np.std([0.70, 0.72], ddof=1))
    assert relu["head.dead_fraction_mean"] == pytest.approx(0.25)  # last epoch: layers 0.2 and 0.3
    assert relu["train_seconds_mean"] == pytest.approx(3.0)
    assert table["winner"] == "gelu" and table["runner_up"] == "relu"
    assert table["margin_pp"] == pytest.approx(100 * (gelu["final_accuracy_mean"] - 0.71))
    assert table["margin_exceeds_pooled_std"] is exceeds
    readme = (out / "README.md").read_text()
    assert "Winner: **gelu**" in readme
    assert ("does **not** exceed" in readme) is (not exceeds)
    assert "--seeds 2" in readme


def test_cli_seed_parsing_and_argument_errors(capsys):
    import argparse

    from audiokit.cli import _parse_seeds, main

    assert _parse_seeds("3") == [0, 1, 2] and _parse_seeds("1,5,9") == [1, 5, 9] and _parse_seeds("5,") == [5]
    for bad in ("0", "x", "1,x"):
        with pytest.raises(argparse.ArgumentTypeError, match="--seeds"):
            _parse_seeds(bad)
    assert main(["compare-activations", "c.yaml", "--activations", "relu", "--output", "o"]) == 2
    assert "at least two" in capsys.readouterr().err


def test_undefined_metrics_are_strict_json_and_read_back_as_nan(tmp_path):
    """A metric that is undefined (mAP of a class without positives: NaN) is written as null, which strict JSON
    parsers accept, and the study reads it back as NaN rather than failing on ``float(None)``."""
    from audiokit.train.loop import _append_jsonl

    split = tmp_path / "fold1"
    split.mkdir()
    _append_jsonl(split / "metrics.jsonl", {"epoch": 1, "val_loss": float("nan"), "val_map": 0.5, "train_seconds": 2.0})

    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    line = (split / "metrics.jsonl").read_text()
    assert json.loads(line, parse_constant=refuse)["val_loss"] is None
    summary = {"metric": "val_map", "splits": ["fold1"], "final": {"mean": None, "std": None},
               "best_epoch": {"mean": 0.5, "std": 0.0}}  # fmt: skip
    cell = study._load_cell(tmp_path, summary)
    assert np.isnan(cell["final"]) and cell["best"] == 0.5 and np.isnan(cell["final_val_loss"])
    assert cell["train_seconds"] == 2.0
