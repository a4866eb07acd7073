"""torchaudio's Wav2Vec2 / HuBERT / WavLM bundle files: parity with torchaudio's own forward on tiny random models.

Each test builds a small model with ``torchaudio.models.wav2vec2_model`` / ``wavlm_model``, saves its state dict the
way a bundle file holds it (torchaudio 2.x writes the positional convolution's weight norm as
``parametrizations.weight.original0/1``; the published files, written by releases that used
``torch.nn.utils.weight_norm``, hold ``weight_g/v``, which are produced here by applying that function to the same
convolution), loads it with ``create_model(name, checkpoint_path=...)`` and compares every layer with torchaudio's
``extract_features`` and the last with its forward. The registered bundle facts (file, size, normalisation) are
checked against the installed torchaudio's own bundle objects.
"""

from __future__ import annotations

import importlib.metadata
import logging
import warnings

import pytest
import torch

import audiokit as ak
from audiokit._weights import CheckpointMismatchError
from audiokit.models import wav2vec2 as w2v

torchaudio = pytest.importorskip("torchaudio")

CONV = [(16, 10, 5), (16, 3, 2), (16, 2, 2)]  # hop 20 samples: 200 frames for 0.25 s
AK_SIZE = {"hidden_size": 32, "num_layers": 3, "num_heads": 4, "intermediate_size": 48, "conv_dim": (16, 16, 16),
           "conv_kernel": (10, 3, 2), "conv_stride": (5, 2, 2), "num_conv_pos_embeddings": 8,
           "num_conv_pos_embedding_groups": 4}  # fmt: skip
LAYERS = AK_SIZE["num_layers"]
TOL = 1e-4
TRANSFORMERS_MAJOR = int(importlib.metadata.version("transformers").split(".")[0])


def _ta_model(layer_norm: bool, conv_bias: bool | None = None, aux: int | None = None, wavlm: bool = False):
    """A tiny torchaudio model of the base (group norm, post-LN) or large (layer norm, pre-LN) layout, with
    non-trivial values everywhere (norm weights, biases, weight-norm magnitudes), in eval mode."""
    params = dict(
        extractor_mode="layer_norm" if layer_norm else "group_norm", extractor_conv_layer_config=CONV,
        extractor_conv_bias=layer_norm if conv_bias is None else conv_bias, encoder_embed_dim=32,
        encoder_projection_dropout=0.0, encoder_pos_conv_kernel=8, encoder_pos_conv_groups=4,
        encoder_num_layers=LAYERS, encoder_num_heads=4, encoder_attention_dropout=0.0,
        encoder_ff_interm_features=48, encoder_ff_interm_dropout=0.0, encoder_dropout=0.0,
        encoder_layer_norm_first=layer_norm, encoder_layer_drop=0.0, aux_num_out=aux,
    )  # fmt: skip
    torch.manual_seed(0)
    if wavlm:
        model = torchaudio.models.wavlm_model(encoder_num_buckets=16, encoder_max_distance=40, **params)
    else:
        model = torchaudio.models.wav2vec2_model(**params)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return model.eval()


def _weight_g_v(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The state dict as torchaudio releases before the parametrizations API wrote it (``weight_g``/``weight_v``).

    The positional convolution of ``model`` is switched to ``torch.nn.utils.weight_norm`` in place; it computes the
    same weight, so ``model`` stays the reference.
    """
    conv = model.encoder.transformer.pos_conv_embed.conv
    torch.nn.utils.parametrize.remove_parametrizations(conv, "weight")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # weight_norm is deprecated: that is the point here
        torch.nn.utils.weight_norm(conv, name="weight", dim=2)
    state = model.state_dict()
    prefix = "encoder.transformer.pos_conv_embed.conv."
    assert {prefix + "weight_g", prefix + "weight_v"} <= set(state)
    assert not any("parametrizations" in k for k in state)
    return state


def _save(tmp_path, state, name="bundle.pth"):
    path = tmp_path / name
    torch.save(state, path)
    return path


def _wave(batch: int = 2, seconds: float = 0.25) -> torch.Tensor:
    gen = torch.Generator().manual_seed(2)
    return torch.tensor([0.08, 0.5])[:batch, None] * torch.randn(batch, int(seconds * 16000), generator=gen) + 0.01


@torch.no_grad()
def _torchaudio_reference(model, wave: torch.Tensor, normalize: bool):
    """torchaudio's per-layer features and encoder output, one clip at a time (the bundles that normalise do it with
    layer_norm over the whole input tensor, so one clip at a time is their per-clip result)."""
    if normalize:
        from torchaudio.pipelines._wav2vec2.utils import _extend_model

        model = _extend_model(model, normalize_waveform=True)
    layers, outputs = [], []
    for clip in wave:
        features, _ = model.extract_features(clip[None])
        layers.append(torch.cat(features))
        out, _ = model(clip[None])
        outputs.append(out[0])
    return torch.stack(layers, dim=1), torch.stack(outputs)  # (layers, B, frames, D), (B, frames, D or aux)


def _assert_layers_match(model, ta_model, wave, normalize: bool, pre_ln: bool) -> None:
    """embed_frames(layer=k) is torchaudio's extract_features(...)[k - 1]; the frame features the pooled embedding
    is made of (forward_features) are torchaudio's encoder output (its forward without the CTC head)."""
    layers, output = _torchaudio_reference(ta_model, wave, normalize)
    assert model.do_normalize is normalize
    with torch.no_grad():
        ours = model.hidden_states(model.prepare_waveform(wave))[1:]  # what embed_frames(layer=k) indexes
        first, last = model.embed_frames(wave, layer=1).embeddings, model.embed_frames(wave).embeddings
        features = model.forward_features(model.prepare_waveform(wave))
    expected = list(layers)
    if pre_ln and TRANSFORMERS_MAJOR < 5:
        # transformers 4 numbered a pre-LN encoder's last hidden state after its final LayerNorm (torchaudio's
        # forward output); 5 takes every layer's own output, as torchaudio's extract_features.
        expected[-1] = output
    for k in range(LAYERS):
        assert (ours[k] - expected[k]).abs().max() <= TOL, f"layer {k + 1}"
    assert torch.equal(first, ours[0]) and torch.equal(last, ours[-1])
    if ta_model.aux is None:
        assert (features - output).abs().max() <= TOL
    else:  # the encoder output, under the CTC head torchaudio's forward applies
        assert (ta_model.aux(features) - output).abs().max() <= TOL
    assert (layers[0] - layers[-1]).abs().max() > 1e-2  # the layers differ: the comparisons could fail


@pytest.mark.parametrize("layout", ["parametrizations", "weight_g_v"])
def test_wav2vec2_base_bundle_matches_torchaudio_both_key_layouts(tmp_path, layout, caplog):
    ta = _ta_model(layer_norm=False)
    state = ta.state_dict() if layout == "parametrizations" else _weight_g_v(ta)
    path = _save(tmp_path, state)
    with caplog.at_level(logging.WARNING):
        model = ak.create_model("wav2vec2_base.torchaudio", checkpoint_path=path, **AK_SIZE).eval()
    assert not caplog.records  # no head, and the registered convention is the bundle's
    _assert_layers_match(model, ta, _wave(), normalize=False, pre_ln=False)


def test_hf_named_variant_takes_the_bundle_convention_with_a_warning(tmp_path, caplog):
    """wav2vec2_base.librispeech normalises (the Hugging Face extractor's convention); a torchaudio file loaded
    under that name is run as torchaudio runs it, and saving keeps that."""
    ta = _ta_model(layer_norm=False)
    path = _save(tmp_path, ta.state_dict())
    assert ak.get_pretrained_cfg("wav2vec2_base.librispeech").model_kwargs["do_normalize"] is True
    with caplog.at_level(logging.WARNING):
        model = ak.create_model("wav2vec2_base.librispeech", checkpoint_path=path, **AK_SIZE).eval()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "torchaudio bundle file" in lines[0] and "not normalised" in lines[0]
    assert "wav2vec2_base.torchaudio" in lines[0] and "\n" not in lines[0]
    _assert_layers_match(model, ta, _wave(), normalize=False, pre_ln=False)

    model.save_pretrained(tmp_path / "saved")
    again = ak.create_model(f"local-dir:{tmp_path / 'saved'}").eval()
    assert again.do_normalize is False
    wave = _wave()
    with torch.no_grad():
        expected = model.embed_frames(wave).embeddings
        torch.testing.assert_close(again.embed_frames(wave).embeddings, expected, rtol=0, atol=0)


def test_do_normalize_opts_in_with_torchaudio_layer_norm(tmp_path):
    ta = _ta_model(layer_norm=False)
    path = _save(tmp_path, ta.state_dict())
    model = ak.create_model("wav2vec2_base.torchaudio", checkpoint_path=path, do_normalize=True, **AK_SIZE).eval()
    _assert_layers_match(model, ta, _wave(), normalize=True, pre_ln=False)


def test_lv60k_bundle_normalises_and_matches_torchaudio(tmp_path):
    ta = _ta_model(layer_norm=True)
    path = _save(tmp_path, _weight_g_v(ta))
    model = ak.create_model("wav2vec2_large_lv60k.torchaudio", checkpoint_path=path, **AK_SIZE).eval()
    # Quiet clips: the variance floor (1e-5 for torchaudio, 1e-7 for transformers' extractor) shows.
    _assert_layers_match(model, ta, 0.02 * _wave(), normalize=True, pre_ln=True)


def test_asr_bundle_ctc_head_is_reported_not_used(tmp_path, caplog):
    ta = _ta_model(layer_norm=True, aux=29)
    path = _save(tmp_path, ta.state_dict())
    with caplog.at_level(logging.WARNING):
        model = ak.create_model("wav2vec2_large_lv60k.torchaudio_asr_960h", checkpoint_path=path, **AK_SIZE).eval()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert "aux.weight (29, 32)" in lines[0] and "aux.bias (29,)" in lines[0] and "CTC" in lines[0]
    assert "not used" in lines[0]
    assert not any(k.startswith("aux") for k in model.state_dict())
    _assert_layers_match(model, ta, _wave(), normalize=True, pre_ln=True)


def test_model_wrapped_by_bundle_get_model_loads(tmp_path):
    """bundle.get_model() wraps the normalising bundles' model (keys under ``model.``); its state dict loads too."""
    from torchaudio.pipelines._wav2vec2.utils import _extend_model

    ta = _ta_model(layer_norm=True)
    path = _save(tmp_path, _extend_model(ta, normalize_waveform=True).state_dict())
    model = ak.create_model("wav2vec2_large_lv60k.torchaudio", checkpoint_path=path, **AK_SIZE).eval()
    _assert_layers_match(model, ta, _wave(), normalize=True, pre_ln=True)


@pytest.mark.parametrize(
    "name, layer_norm",
    [("hubert_base.torchaudio", False), ("hubert_base.librispeech", False), ("hubert_large.torchaudio", True)],
)
def test_hubert_bundles_match_torchaudio(tmp_path, name, layer_norm):
    # torchaudio builds HuBERT with wav2vec2_model (hubert_base / hubert_large are wav2vec2_model with HuBERT's
    # sizes): the large ones have unbiased convolutions.
    ta = _ta_model(layer_norm=layer_norm, conv_bias=False)
    path = _save(tmp_path, ta.state_dict())
    model = ak.create_model(name, checkpoint_path=path, **AK_SIZE).eval()
    assert isinstance(model, ak.models.hubert.HubertClassifier)
    _assert_layers_match(model, ta, _wave(), normalize=layer_norm, pre_ln=layer_norm)


@pytest.mark.parametrize("name, layer_norm", [("wavlm_base.torchaudio", False), ("wavlm_large.torchaudio", True)])
def test_wavlm_bundles_match_torchaudio(tmp_path, name, layer_norm):
    ta = _ta_model(layer_norm=layer_norm, conv_bias=False, wavlm=True)
    path = _save(tmp_path, _weight_g_v(ta))
    size = {**AK_SIZE, "num_buckets": 16, "max_bucket_distance": 40}
    model = ak.create_model(name, checkpoint_path=path, **size).eval()
    _assert_layers_match(model, ta, _wave(), normalize=layer_norm, pre_ln=layer_norm)


def test_contradictory_checkpoint_is_one_line_error(tmp_path):
    path = _save(tmp_path, _ta_model(layer_norm=False).state_dict())
    with pytest.raises(CheckpointMismatchError) as err:
        ak.create_model("wav2vec2_base.torchaudio", checkpoint_path=path, **{**AK_SIZE, "num_layers": 2})
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "unexpected backbone.encoder.layers.2." in message
    # A large (layer-normalised) file under a base architecture: one line naming the architectures it fits.
    large = _save(tmp_path, _ta_model(layer_norm=True).state_dict(), "large.pth")
    with pytest.raises(CheckpointMismatchError) as err:
        ak.create_model("hubert_base.torchaudio", checkpoint_path=large, **AK_SIZE)
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(large)) and "layer-normalised" in message
    assert "wav2vec2_large_lv60k.torchaudio*" in message and "hubert_large.torchaudio*" in message


def test_key_mapping_is_pure_and_complete():
    ta = _ta_model(layer_norm=False, aux=5)
    mapped = w2v.torchaudio_to_transformers(ta.state_dict())
    assert not any(k.startswith(("aux.", "encoder.transformer.", "encoder.feature_projection.")) for k in mapped)
    assert w2v.is_torchaudio_state_dict(ta.state_dict()) and not w2v.is_torchaudio_state_dict(mapped)
    assert len(mapped) == len(ta.state_dict()) - 2


@pytest.mark.parametrize("bundle", sorted(w2v.TORCHAUDIO_BUNDLES))
def test_registered_bundles_agree_with_installed_torchaudio(bundle):
    from torchaudio.pipelines._wav2vec2 import utils

    facts = w2v.TORCHAUDIO_BUNDLES[bundle]
    ta_bundle = getattr(torchaudio.pipelines, bundle)
    cfg = ak.get_pretrained_cfg(facts.name)
    assert ta_bundle._path == facts.filename == cfg.filename and facts.url in cfg.source
    assert cfg.sha256 is None and "No hash is published" in cfg.notes
    assert cfg.model_kwargs["do_normalize"] is ta_bundle._normalize_waveform
    assert ta_bundle.sample_rate == cfg.sample_rate == 16000
    params = {**ta_bundle._params, "aux_num_out": None}
    with torch.device("meta"):  # shapes only: the XLS-R 2B model has 2.2e9 parameters
        reference = utils._get_model(ta_bundle._model_type, params)
        model = ak.create_model(facts.name)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in reference.parameters())
    assert sum(p.numel() for p in model.parameters()) == cfg.num_params
    ours = model.config
    assert (ours.hidden_size, ours.num_hidden_layers, ours.num_attention_heads, ours.intermediate_size) == (
        params["encoder_embed_dim"], params["encoder_num_layers"], params["encoder_num_heads"],
        params["encoder_ff_interm_features"],
    )  # fmt: skip
    assert ours.do_stable_layer_norm is params["encoder_layer_norm_first"]
    assert ours.conv_bias is params["extractor_conv_bias"]
    assert ours.feat_extract_norm == {"group_norm": "group", "layer_norm": "layer"}[params["extractor_mode"]]


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, factory, normalize",
    [("wav2vec2_base.torchaudio", "wav2vec2_base", False), ("hubert_large.torchaudio", "hubert_large", True)],
)
def test_full_size_bundle_layout_matches_torchaudio(tmp_path, name, factory, normalize):
    """The released sizes (random weights, torchaudio's own factories), 1 s of noise."""
    torch.manual_seed(0)
    ta = getattr(torchaudio.models, factory)().eval()
    path = _save(tmp_path, _weight_g_v(ta))
    model = ak.create_model(name, checkpoint_path=path).eval()
    wave = 0.1 * torch.randn(1, 16000, generator=torch.Generator().manual_seed(3))
    layers, output = _torchaudio_reference(ta, wave, normalize)
    with torch.no_grad():
        ours = model.hidden_states(model.prepare_waveform(wave))[1:]
        features = model.forward_features(model.prepare_waveform(wave))
    assert model.do_normalize is normalize and len(ours) == len(layers)
    worst = max((a - b).abs().max().item() for a, b in zip(ours, layers))
    assert worst <= TOL and (features - output).abs().max() <= TOL
