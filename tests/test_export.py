"""Export (audiokit.export): the graph from the raw waveform to logits, frontend inside, checked against the eager model
here with onnxruntime / the reloaded program at shapes other than the export's example, plus the ONNX metadata and the
refusals. Small or tiny configurations in the default run; the full-size and slow exports are marked slow."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import audiokit as ak
from audiokit.export import ExportError, export
from audiokit.layers.fusion import is_batchnorm_folded
from tests._calibration import informative

onnx = pytest.importorskip("onnx", reason="the onnx extra is not installed")
onnxruntime = pytest.importorskip("onnxruntime", reason="the onnx extra is not installed")

PASST_TINY = {"embed_dim": 64, "depth": 2, "num_heads": 4}
AST_TINY = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 128}


def _session(path):
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _eager(model, x):
    with torch.no_grad():
        return model(x).numpy()


def test_onnx_with_dynamic_batch_and_length_and_its_metadata(tmp_path):
    model = informative("efficientat_mn01.audioset").train()  # exported as in eval; its own mode is left alone
    path = export(model, tmp_path / "mn01.onnx")
    assert model.training
    model.eval()
    session = _session(path)
    assert [i.name for i in session.get_inputs()] == ["waveform"]
    assert [o.name for o in session.get_outputs()] == ["logits"]
    gen = torch.Generator().manual_seed(3)
    for batch, seconds in ((2, 1.5), (5, 0.7), (1, 6.0)):  # none of them the export's example (2 x 2 s)
        x = 0.1 * torch.randn(batch, int(seconds * 32000), generator=gen)
        got = session.run(None, {"waveform": x.numpy()})[0]
        expected = _eager(model, x)
        assert got.shape == expected.shape == (batch, 527)
        assert np.abs(got - expected).max() < 1e-4
    assert np.abs(expected[0]).max() > 0.1  # informative logits: the comparison can fail
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["audiokit_model"] == "efficientat_mn01.audioset" and meta["sample_rate"] == "32000"
    assert meta["task"] == "multilabel" and meta["output"] == "logits"
    assert json.loads(meta["labels"]) == list(model.label_names) and len(json.loads(meta["labels"])) == 527
    assert int(meta["min_samples"]) == model.min_samples
    assert not is_batchnorm_folded(model)  # the export folds a copy; the instance given is left as it was


def test_fixed_input_model_exports_at_its_input_length(tmp_path):
    """BC-ResNet takes exactly 1 s: the graph's length is fixed there, the batch stays dynamic."""
    model = informative("bcresnet_1.speechcommands")
    path = export(model, tmp_path / "bcresnet.onnx")
    session = _session(path)
    x = 0.1 * torch.randn(4, 16000, generator=torch.Generator().manual_seed(1))
    assert np.abs(session.run(None, {"waveform": x.numpy()})[0] - _eager(model, x)).max() < 1e-4
    assert session.get_inputs()[0].shape[1] == 16000
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["min_samples"] == meta["max_samples"] == "16000" and meta["task"] == "multiclass"
    with pytest.raises(Exception, match=r"(?i)dimension"):
        session.run(None, {"waveform": np.zeros((1, 8000), np.float32)})


def test_ast_onnx_needs_a_fixed_batch_and_then_matches(tmp_path):
    torch.manual_seed(0)
    model = ak.create_model("ast_base.audioset", **AST_TINY).eval()
    with pytest.raises(ExportError, match=r"Kaldi filterbank.*batch_size=N"):
        export(model, tmp_path / "ast.onnx")
    assert not (tmp_path / "ast.onnx").exists()
    path = export(model, tmp_path / "ast.onnx", batch_size=2)
    x = 0.1 * torch.randn(2, model.max_samples, generator=torch.Generator().manual_seed(2))
    got = _session(path).run(None, {"waveform": x.numpy()})[0]
    assert np.abs(got - _eager(model, x)).max() < 1e-4 and np.abs(got[0] - got[1]).max() > 1e-3


def test_exported_program(tmp_path):
    torch.manual_seed(0)
    passt = ak.create_model("passt_s.audioset", **PASST_TINY).eval()
    path = export(passt, tmp_path / "passt.pt2", format="exported-program")
    program = torch.export.load(str(path)).module()
    x = 0.1 * torch.randn(3, passt.max_samples, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert (program(x) - passt(x)).abs().max() < 1e-4


@pytest.mark.slow
def test_torchscript(tmp_path):
    model = informative("efficientat_mn01.audioset")
    path = export(model, tmp_path / "mn01.ts", format="torchscript")
    scripted = torch.jit.load(str(path))
    x = 0.1 * torch.randn(3, 40000, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert (scripted(x) - model(x)).abs().max() < 1e-4


def test_refusals(tmp_path):
    with pytest.raises(ValueError, match="format must be one of"):
        export(informative("bcresnet_1.speechcommands"), tmp_path / "x", format="tflite")
    dymn = ak.create_model("efficientat_dymn04.audioset").eval()
    with pytest.raises(ExportError, match=r"dynamic convolutions.*grouped convolution.*batch_size=N"):
        export(dymn, tmp_path / "dymn.onnx")
    with pytest.raises(ValueError, match="batch_size must be"):
        export(dymn, tmp_path / "dymn.onnx", batch_size=0)
    with pytest.raises(ValueError, match="checkpoint_path applies to a model name"):
        export(dymn, tmp_path / "dymn.onnx", checkpoint_path=tmp_path / "w.pt")
    assert list(tmp_path.iterdir()) == []  # nothing written by a refused export


@pytest.mark.slow
# wav2vec2 exports too (1.3e-6 from eager, measured) but takes ~25 s here; the suite keeps the CNN and VGGish paths.
@pytest.mark.parametrize("name", ["vggish.audioset", "panns_cnn14.audioset"])
def test_full_size_onnx(name, tmp_path):
    model = informative(name) if name.startswith("panns") else ak.create_model(name).eval()
    path = export(model, tmp_path / "m.onnx")
    x = 0.1 * torch.randn(2, 3 * model.sample_rate, generator=torch.Generator().manual_seed(6))
    got = _session(path).run(None, {"waveform": x.numpy()})[0]
    expected = _eager(model, x)
    assert np.abs(got - expected).max() < 1e-4 * max(1.0, np.abs(expected).max())


@pytest.mark.slow
def test_dymn_exports_with_a_fixed_batch(tmp_path):
    model = informative("efficientat_dymn04.audioset")
    path = export(model, tmp_path / "dymn.onnx", batch_size=2)
    x = 0.1 * torch.randn(2, 48000, generator=torch.Generator().manual_seed(7))
    assert np.abs(_session(path).run(None, {"waveform": x.numpy()})[0] - _eager(model, x)).max() < 1e-4


def test_cli_export(tmp_path, capsys):
    from audiokit.cli import main

    model = informative("bcresnet_1.speechcommands")
    weights = tmp_path / "bcresnet.pt"
    torch.save(model.state_dict(), weights)
    out = tmp_path / "bcresnet.onnx"
    assert main(["export", "bcresnet_1.speechcommands", "--checkpoint", str(weights), "--output", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    x = 0.1 * torch.randn(2, 16000, generator=torch.Generator().manual_seed(8))
    assert np.abs(_session(out).run(None, {"waveform": x.numpy()})[0] - _eager(model, x)).max() < 1e-4
    # Usage errors exit 2 with one line: the weights as the output, stdout, DyMN's dynamic batch.
    assert main(["export", "bcresnet_1.speechcommands", "--checkpoint", str(weights), "--output", str(weights)]) == 2
    assert "is also an input" in capsys.readouterr().err
    assert main(["export", "bcresnet_1.speechcommands", "--checkpoint", str(weights), "--output", "-"]) == 2
    assert "must be a file" in capsys.readouterr().err
    missing = tmp_path / "missing.pt"
    assert main(["export", "bcresnet_1.speechcommands", "--checkpoint", str(missing), "-o", str(tmp_path / "m")]) == 2
    assert "missing.pt" in capsys.readouterr().err  # a usage error naming the file, not a failed write (exit 3)
    dymn = tmp_path / "dymn.pt"
    torch.save(ak.create_model("efficientat_dymn04.audioset").state_dict(), dymn)
    assert main(["export", "efficientat_dymn04.audioset", "--checkpoint", str(dymn), "-o", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "dynamic convolutions" in err and "--batch-size" in err
    assert not (tmp_path / "d").exists()
