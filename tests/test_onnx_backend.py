"""``--backend onnxruntime``: the same pipeline (decode, windows, aggregation, sinks) with the forward run by
onnxruntime on the model's exported graph, cached once per weights; scores equal the eager backend's."""

from __future__ import annotations

import json

import pytest
import torch

from audiokit.cli import main
from audiokit.inference import InferenceRunner
from tests.conftest import informative_model

pytest.importorskip("onnxruntime")

MODEL = "efficientat_mn01.audioset"


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()[1:]]


def test_tag_with_onnxruntime_equals_eager_and_exports_once(tmp_path, make_wav, monkeypatch, capsys):
    monkeypatch.setenv("AUDIOKIT_HOME", str(tmp_path / "home"))
    checkpoint = tmp_path / "mn01.pt"
    torch.save(informative_model(MODEL, seed=4).state_dict(), checkpoint)
    files = [make_wav("a.wav", 2.0, rate=44100, channels=2), make_wav("b.wav", 1.3, rate=16000, kind="tone"),
             tmp_path / "missing.wav", make_wav("c.wav", 3.1, rate=32000)]  # fmt: skip
    common = ["tag", *map(str, files), "--model", MODEL, "--checkpoint-path", str(checkpoint), "--format", "jsonl",
              "--num-workers", "0", "--top-k", "5", "--window", "1", "-q"]  # fmt: skip
    assert main([*common, "-o", str(tmp_path / "eager.jsonl")]) == 1  # the missing file
    assert main([*common, "--backend", "onnxruntime", "-o", str(tmp_path / "ort.jsonl")]) == 1
    eager, ort = _records(tmp_path / "eager.jsonl"), _records(tmp_path / "ort.jsonl")
    assert [r["path"] for r in ort] == [r["path"] for r in eager] and bool(ort[2]["error"]) and bool(eager[2]["error"])
    for a, b in zip(eager, ort):
        assert [x["label"] for x in a["labels"]] == [x["label"] for x in b["labels"]]
        for x, y in zip(a["labels"], b["labels"]):
            assert x["score"] == pytest.approx(y["score"], abs=1e-4)
        assert len(a["windows"]) == len(b["windows"])
    header = json.loads((tmp_path / "ort.jsonl").read_text().splitlines()[0])["header"]
    assert header["settings"]["backend"] == "onnxruntime"
    (graph,) = (tmp_path / "home" / "onnx").glob("*.onnx")
    stamp = graph.stat().st_mtime_ns
    assert main([*common, "--backend", "onnxruntime", "-o", str(tmp_path / "again.jsonl")]) == 1
    assert graph.stat().st_mtime_ns == stamp and len(list(graph.parent.glob("*.onnx"))) == 1  # reused
    assert _records(tmp_path / "again.jsonl") == ort
    capsys.readouterr()
    assert main(["embed", str(files[0]), "--model", MODEL, "--checkpoint-path", str(checkpoint), "--backend",
                 "onnxruntime", "-o", str(tmp_path / "e.npz")]) == 2  # fmt: skip
    assert "tag with it, embed with eager" in capsys.readouterr().err


def test_models_the_backend_cannot_run_are_refused_before_any_export(tmp_path, monkeypatch):
    monkeypatch.setenv("AUDIOKIT_HOME", str(tmp_path))
    import audiokit as ak

    ast = ak.create_model("ast_base.speechcommands_v2", hidden_size=32, num_layers=1, num_heads=2,
                          intermediate_size=64)  # fmt: skip
    with pytest.raises(ValueError, match=r"takes a fixed input .* use --backend eager"):
        InferenceRunner(ast, mode="scores", device="cpu", num_workers=0, backend="onnxruntime")
    mn01 = informative_model(MODEL)
    with pytest.raises(ValueError, match="fp32 graph as exported"):
        InferenceRunner(mn01, mode="scores", device="cpu", backend="onnxruntime", precision="bf16")
    with pytest.raises(ValueError, match="backend must be one of"):
        InferenceRunner(mn01, mode="scores", device="cpu", backend="tensorrt")
    assert not (tmp_path / "onnx").exists()
