"""BatchNorm folding for inference: the same outputs with fewer layers, only where the fold is exact."""

from __future__ import annotations

import copy

import pytest
import torch

import audiokit as ak
from audiokit.inference import load_model
from audiokit.layers import fold_batchnorm_, is_batchnorm_folded
from tests._calibration import informative


def _norm_names(model: torch.nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


# What must stay unfolded: PANNs' bn0 normalises the log-mel before any conv; MobileNetV1 pools between its depthwise
# conv and the norm (features.k.2); DyMN's norms after its dynamic convolutions and context generator; BC-ResNet's
# SubSpectralNorm is not a plain BatchNorm.
@pytest.mark.parametrize(
    ("name", "folded", "kept"),
    [
        ("efficientat_mn01.audioset", 43, lambda n: False),
        ("efficientat_dymn04.audioset", 2, lambda n: n.startswith("layers.")),
        ("panns_cnn6.audioset", 4, lambda n: n == "bn0"),
        ("panns_cnn10.audioset", 8, lambda n: n == "bn0"),
        ("panns_mobilenetv1.audioset", 13, lambda n: n == "bn0" or n.endswith(".2")),
        ("bcresnet_1.speechcommands", 18, lambda n: n.endswith(".ssnorm")),
    ],
)
def test_folding_keeps_the_outputs_and_removes_exactly_the_foldable_norms(name, folded, kept):
    model = informative(name)
    before = _norm_names(model)
    fused = copy.deepcopy(model)
    assert fold_batchnorm_(fused) == folded and is_batchnorm_folded(fused) and not is_batchnorm_folded(model)
    assert _norm_names(fused) == [n for n in before if kept(n)]
    assert len(before) - len(_norm_names(fused)) == folded
    samples = model.max_samples or 2 * model.sample_rate
    wave = 0.1 * torch.randn(3, samples, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected, got = model(wave), fused(wave)
    assert expected.abs().max() > 0.05 and expected.std(0).max() > 1e-3  # informative, input-dependent logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * float(expected.abs().max()))


@pytest.mark.slow
def test_folding_the_wavegram_branch_keeps_the_outputs():
    model = informative("panns_wavegram_logmel_cnn14.audioset")
    fused = copy.deepcopy(model)
    assert fold_batchnorm_(fused) == 21 and _norm_names(fused) == ["bn0"]
    wave = 0.1 * torch.randn(2, 32000, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        torch.testing.assert_close(fused(wave), model(wave), rtol=1e-5, atol=1e-5)


def test_folding_needs_eval_mode_and_a_folded_model_cannot_be_saved(tmp_path):
    model = ak.create_model("efficientat_mn01.audioset")
    with pytest.raises(ValueError, match="eval mode"):
        fold_batchnorm_(model.train())
    assert _norm_names(model)  # nothing was folded
    fold_batchnorm_(model.eval())
    with pytest.raises(ValueError, match="folded"):
        model.save_pretrained(tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_models_built_for_inference_are_folded_and_given_instances_are_not(tmp_path):
    ak.create_model("panns_cnn6.audioset").save_pretrained(tmp_path / "cnn6")
    built = load_model(f"local-dir:{tmp_path / 'cnn6'}", None)
    assert is_batchnorm_folded(built) and _norm_names(built) == ["bn0"]
    given = ak.create_model("panns_cnn6.audioset")
    assert load_model(given, None) is given and not is_batchnorm_folded(given) and len(_norm_names(given)) == 5
