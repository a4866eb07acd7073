"""Wav2Vec2: parity with transformers' own Wav2Vec2ForSequenceClassification / Wav2Vec2Model (the independent
reference, fed through Wav2Vec2FeatureExtractor's normalisation) on tiny random configs, the checkpoint layouts, and
the full-size parameter counts."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

import audiokit as ak
from audiokit._hub import WeightsUnavailableError
from audiokit._weights import CheckpointMismatchError
from audiokit.models import wav2vec2 as w2v

CONV = {"conv_dim": (8, 8, 8, 8, 8, 8, 8), "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4}
TINY = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 37, **CONV}
PROJ = 16


def _hf_config(**overrides):
    from transformers import Wav2Vec2Config

    cfg = dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, conv_dim=CONV["conv_dim"],
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4, use_weighted_layer_sum=True,
        classifier_proj_size=PROJ, mask_time_prob=0.05, layerdrop=0.0,
        # The directory's id2label names the classes (here the S3PRL order the registered variant uses).
        id2label=dict(enumerate(ak.get_pretrained_cfg("wav2vec2_base.superb_ks").get_label_names())),
    )  # fmt: skip
    cfg.update(overrides)
    return Wav2Vec2Config(**cfg)


def _randomise(model: torch.nn.Module, seed: int = 0) -> None:
    """Non-trivial values everywhere (layer weights, norms, biases), so a wrong mapping cannot hide."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layer_weights"):
                p.copy_(torch.randn(p.shape, generator=gen))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))


def _wave(seconds: float = 0.5, batch: int = 3, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    scale = torch.tensor([0.05, 0.3, 1.0])[:batch, None]
    return scale * torch.randn(batch, int(seconds * 16000), generator=gen) + 0.01


def _hf_input(wave: torch.Tensor) -> torch.Tensor:
    from transformers import Wav2Vec2FeatureExtractor

    fe = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=False)
    return fe([w.numpy() for w in wave], sampling_rate=16000, return_tensors="pt").input_values


def _old_weight_norm_names(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    renames = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}
    out = {}
    for key, value in state.items():
        for new, old in renames.items():
            key = key.replace(new, old)
        out[key] = value
    return out


@pytest.fixture(scope="module")
def hf_classifier():
    from transformers import Wav2Vec2ForSequenceClassification

    torch.manual_seed(0)
    model = Wav2Vec2ForSequenceClassification(_hf_config()).eval()
    _randomise(model)
    return model


def _save_hf_dir(path, state: dict[str, torch.Tensor], config) -> str:
    path.mkdir()
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(path / "model.safetensors"))
    (path / "config.json").write_text(json.dumps(config.to_dict()))
    return str(path)


@pytest.mark.parametrize("form", ["parametrizations", "weight_g"])
def test_sequence_classification_parity(hf_classifier, tmp_path, form):
    state = hf_classifier.state_dict()
    assert any("parametrizations.weight.original0" in k for k in state)
    if form == "weight_g":
        state = _old_weight_norm_names(state)
        assert any(k.endswith("pos_conv_embed.conv.weight_g") for k in state)
    directory = _save_hf_dir(tmp_path / "hf", state, hf_classifier.config)
    model = ak.create_model(
        "wav2vec2_base.superb_ks", checkpoint_path=directory, classifier_proj_size=PROJ, **TINY
    ).eval()
    assert model.num_features == PROJ and model.label_names[0] == "yes" and model.label_names[-1] == "_silence_"
    wave = _wave()
    with torch.no_grad():
        expected = hf_classifier(_hf_input(wave)).logits
        logits = model(wave)
    torch.testing.assert_close(logits, expected, atol=1e-5, rtol=1e-5)
    # Same number of parameters as the reference.
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in hf_classifier.parameters())


def test_embed_layer_is_mean_of_hidden_state(hf_classifier, tmp_path):
    directory = _save_hf_dir(tmp_path / "hf", hf_classifier.state_dict(), hf_classifier.config)
    model = ak.create_model("wav2vec2_base.superb_ks", checkpoint_path=directory, classifier_proj_size=PROJ, **TINY)
    model.eval()
    wave = _wave()
    with torch.no_grad():
        hidden = hf_classifier(_hf_input(wave), output_hidden_states=True).hidden_states
    assert len(hidden) == 3
    for k in (0, 1, 2, -1):
        torch.testing.assert_close(model.embed(wave, layer=k), hidden[k].mean(dim=1), atol=1e-5, rtol=1e-5)
    assert model.embed(wave).shape == (3, PROJ)
    with pytest.raises(ValueError, match=r"block 3 is out of range: blocks are 0\.\.2"):
        model.embed(wave, layer=3)
    with torch.no_grad():  # the weighted layer sum before the projector; the classifier's input after it
        weights = torch.softmax(hf_classifier.layer_weights, dim=-1)
        summed = sum(w * h for w, h in zip(weights, hidden))
        torch.testing.assert_close(model.embed(wave, layer="pooled"), summed.mean(dim=1), atol=1e-5, rtol=1e-5)
        projected = hf_classifier.projector(summed).mean(dim=1)
        torch.testing.assert_close(model.embed(wave), projected, atol=1e-5, rtol=1e-5)


def test_result_does_not_depend_on_batch_or_gain():
    model = ak.create_model("wav2vec2_base.superb_ks", classifier_proj_size=PROJ, **TINY).eval()
    _randomise(model)
    wave = _wave()
    with torch.no_grad():
        logits = model(wave)
        torch.testing.assert_close(model(wave[1:2]), logits[1:2], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model(wave[2:]), logits[2:], atol=1e-5, rtol=1e-5)
        # Per-clip normalisation: a clip's loudness (and DC offset) does not matter.
        torch.testing.assert_close(model(4.0 * wave[:1] - 0.2), logits[:1], atol=1e-4, rtol=1e-4)
    raw = ak.create_model("wav2vec2_base.superb_ks", classifier_proj_size=PROJ, do_normalize=False, **TINY).eval()
    raw.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(raw(w2v.normalize_waveform(wave)), logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layout", ["bare", "pretraining"])
def test_backbone_layouts_load_into_the_embedder(tmp_path, layout):
    from transformers import Wav2Vec2ForPreTraining, Wav2Vec2Model

    config = _hf_config(codevector_dim=16, proj_codevector_dim=16, num_codevectors_per_group=8)
    torch.manual_seed(1)
    reference = Wav2Vec2Model(config).eval()
    _randomise(reference, seed=1)
    if layout == "bare":
        state = _old_weight_norm_names(reference.state_dict())
        assert not any(k.startswith("wav2vec2.") for k in state)
    else:
        pretraining = Wav2Vec2ForPreTraining(config)
        pretraining.wav2vec2.load_state_dict(reference.state_dict())
        state = pretraining.state_dict()
        assert any(k.startswith(("quantizer.", "project_q.", "project_hid.")) for k in state)
    path = tmp_path / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    model = ak.create_model("wav2vec2_base.librispeech", checkpoint_path=path, **TINY).eval()
    assert model.num_classes == 0 and model.num_features == 32
    wave = _wave()
    with torch.no_grad():
        expected = reference(_hf_input(wave)).last_hidden_state.mean(dim=1)
        torch.testing.assert_close(model(wave), expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.embed(wave), expected, atol=1e-5, rtol=1e-5)


def test_wrong_checkpoint_names_the_keys(hf_classifier, tmp_path):
    state = dict(hf_classifier.state_dict())
    # A classification checkpoint does not fit the embedder: its head tensors are reported.
    path = tmp_path / "cls.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(CheckpointMismatchError, match=r"unexpected .*(layer_weights|projector\.weight)"):
        ak.create_model("wav2vec2_base.librispeech", checkpoint_path=path, **TINY)
    # A missing backbone tensor is named.
    del state["wav2vec2.encoder.layers.1.final_layer_norm.weight"]
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    with pytest.raises(CheckpointMismatchError, match=r"missing backbone\.encoder\.layers\.1\.final_layer_norm"):
        ak.create_model("wav2vec2_base.superb_ks", checkpoint_path=path, classifier_proj_size=PROJ, **TINY)
    # Another width is a shape mismatch.
    with pytest.raises(CheckpointMismatchError, match="shape mismatch"):
        ak.create_model("wav2vec2_base.superb_ks", checkpoint_path=path, **TINY)


def test_filter_fn_maps_both_weight_norm_forms():
    g, v = torch.ones(1, 1, 4), torch.ones(8, 2, 4)
    old = {"encoder.pos_conv_embed.conv.weight_g": g, "wav2vec2.encoder.pos_conv_embed.conv.weight_v": v}
    new = w2v.checkpoint_filter_fn(old)
    assert set(new) == {
        "backbone.encoder.pos_conv_embed.conv.parametrizations.weight.original0",
        "backbone.encoder.pos_conv_embed.conv.parametrizations.weight.original1",
    }
    back = w2v.checkpoint_filter_fn(new, parametrized_pos_conv=False)
    assert set(back) == {
        "backbone.encoder.pos_conv_embed.conv.weight_g",
        "backbone.encoder.pos_conv_embed.conv.weight_v",
    }
    dropped = w2v.checkpoint_filter_fn({"quantizer.codevectors": g, "project_q.weight": g, "lm_head.bias": g})
    assert dropped == {}


def test_pretrained_without_download_says_how():
    with pytest.raises(WeightsUnavailableError, match="checkpoint_path"):
        ak.create_model("wav2vec2_base.superb_ks", pretrained=True)
    cfg = ak.get_pretrained_cfg("wav2vec2_base")
    assert cfg.name == "wav2vec2_base.librispeech" and cfg.num_classes == 0 and cfg.get_label_names() == ()
    assert cfg.model_kwargs["do_normalize"] is True and cfg.frontend.kind == "waveform"


def test_full_size_parameter_counts():
    from transformers import Wav2Vec2Config, Wav2Vec2ForSequenceClassification, Wav2Vec2Model

    with torch.device("meta"):
        hf_base = Wav2Vec2Model(Wav2Vec2Config())
        hf_ks = Wav2Vec2ForSequenceClassification(Wav2Vec2Config(use_weighted_layer_sum=True, num_labels=12))
    base = sum(p.numel() for p in hf_base.parameters())
    ks = sum(p.numel() for p in hf_ks.parameters())
    assert base == ak.get_pretrained_cfg("wav2vec2_base.librispeech").num_params == 94_371_712
    assert ks == ak.get_pretrained_cfg("wav2vec2_base.superb_ks").num_params == 94_571_673

    model = ak.create_model("wav2vec2_base.superb_ks").eval()
    assert sum(p.numel() for p in model.parameters()) == ks
    assert model.receptive_field == 400 and model.hop == 320 and model.min_samples == 400
    wave = 0.1 * torch.randn(1, 16000)
    with torch.no_grad():
        logits = model(wave)
        hidden = model.hidden_states(wave)
    assert logits.shape == (1, 12) and torch.isfinite(logits).all()
    assert len(hidden) == 13 and hidden[-1].shape == (1, 49, 768)


def test_embed_cli_layer_and_frame_level(tmp_path, make_wav, capsys):
    """`audiokit embed --layer k` and `--frame-level` on a saved tiny wav2vec2, checked against the model itself."""
    import numpy as np

    from audiokit.cli import main

    model = ak.create_model("wav2vec2_base.librispeech", **TINY).eval()
    model.save_pretrained(tmp_path / "w2v")
    saved = f"local-dir:{tmp_path / 'w2v'}"
    path = make_wav("speech.wav", 1.0, rate=16000)
    wave = ak.load_audio(path, sample_rate=16000)

    out = tmp_path / "layer1.npz"
    assert main(["embed", str(path), "--model", saved, "--layer", "1", "-o", str(out)]) == 0
    np.testing.assert_allclose(np.load(out)["embeddings"][0], model.embed(wave[None], layer=1)[0].numpy(), atol=1e-5)

    out = tmp_path / "frames.npz"
    assert main(["embed", str(path), "--model", saved, "--frame-level", "-o", str(out)]) == 0
    data = np.load(out)
    frames = model.embed_frames(wave[None]).embeddings[0].numpy()
    assert data["embeddings"].shape == frames.shape and frames.shape[0] > 1
    np.testing.assert_allclose(data["embeddings"], frames, atol=1e-5)
    np.testing.assert_allclose(np.diff(data["starts"]), model.frame_hop_seconds, atol=1e-6)

    other = tmp_path / "mn01.pt"
    torch.save(ak.create_model("efficientat_mn01.audioset").state_dict(), other)
    refused = tmp_path / "refused.npz"
    args = ["embed", str(path), "--model", "efficientat_mn01.audioset", "--checkpoint", str(other), "-o", str(refused)]
    assert main([*args, "--frame-level", "--layer", "3"]) == 2  # a CNN's frames are its last feature map's
    assert "frame embeddings are its last feature map's time steps (layer must be None)" in capsys.readouterr().err
    # Block indices exist for the CNN too (tests/test_embedding_layers_cli.py); one past its last block is refused.
    assert main([*args, "--layer", "999"]) == 2
    err = capsys.readouterr().err
    assert "block 999 is out of range" in err and "0..15" in err
    assert not refused.exists()
