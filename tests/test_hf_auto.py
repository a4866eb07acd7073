"""The generic transformers path (models/hf_auto.py): audio-classification checkpoints of model types without a
native audiokit family, behind the AudioClassifier contract.

The reference is transformers itself on the same directory: its feature extractor + model (``from_pretrained``),
one clip at a time as its audio-classification pipeline runs them, and the extractor's own padding for clips of
different lengths. Tiny random models of four architectures: Whisper's encoder (log-mel features, fixed 1 s input
here), Data2VecAudio (raw samples, attention mask, layer-normed feature encoder), SEW (weight-normed positional
convolution, group-normed feature encoder, no attention mask) and Wav2Vec2-BERT (SeamlessM4T filterbank features
with an attention mask).
"""

from __future__ import annotations

import json
import logging
import math

import pytest
import torch

import audiokit as ak
from audiokit._hub import CheckpointLoadError
from audiokit.models.hf_auto import TransformersAudioClassifier

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

LABELS = ("cat", "dog", "siren")
_CONV = dict(conv_dim=(16, 16, 16), conv_kernel=(10, 3, 3), conv_stride=(5, 2, 2))  # 40-sample receptive field
_ENCODER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37)


def _randomise(model: torch.nn.Module, seed: int) -> None:
    """Weights far from transformers' small initialisation, so that a wrong mapping or normalisation shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layer_weights"):
                p.copy_(torch.randn(p.shape, generator=gen))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            elif p.dim() >= 2:  # unit-scale activations (transformers initialises with std 0.02)
                p.copy_(torch.randn(p.shape, generator=gen) / p[0].numel() ** 0.5)


def _whisper(path):
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForAudioClassification

    config = WhisperConfig(
        num_mel_bins=16, d_model=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_dim=37,
        decoder_layers=1, decoder_attention_heads=2, decoder_ffn_dim=16, max_source_positions=50,
        classifier_proj_size=24, use_weighted_layer_sum=True, id2label=dict(enumerate(LABELS)),
    )  # fmt: skip
    model = WhisperForAudioClassification(config)
    extractor = WhisperFeatureExtractor(feature_size=16, chunk_length=1)  # 1 s: 100 frames, 50 encoder positions
    return model, extractor


def _data2vec(path):
    from transformers import Data2VecAudioConfig, Data2VecAudioForSequenceClassification, Wav2Vec2FeatureExtractor

    config = Data2VecAudioConfig(
        **_ENCODER, **_CONV, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, conv_pos_kernel_size=3,
        num_conv_pos_embedding_layers=2, classifier_proj_size=24, mask_time_prob=0.0,
        id2label=dict(enumerate(LABELS)), problem_type="multi_label_classification",
    )  # fmt: skip
    model = Data2VecAudioForSequenceClassification(config)
    return model, Wav2Vec2FeatureExtractor(return_attention_mask=True, do_normalize=True)


def _sew(path):
    from transformers import SEWConfig, SEWForSequenceClassification, Wav2Vec2FeatureExtractor

    config = SEWConfig(
        **_ENCODER, **_CONV, squeeze_factor=2, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        classifier_proj_size=20, use_weighted_layer_sum=True, id2label=dict(enumerate(LABELS)),
    )  # fmt: skip
    model = SEWForSequenceClassification(config)
    return model, Wav2Vec2FeatureExtractor(return_attention_mask=False, do_normalize=False)


def _w2v_bert(path):
    from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertConfig, Wav2Vec2BertForSequenceClassification

    config = Wav2Vec2BertConfig(
        **_ENCODER, feature_projection_input_dim=160, conv_depthwise_kernel_size=3, classifier_proj_size=24,
        mask_time_prob=0.0, id2label=dict(enumerate(LABELS)),
    )  # fmt: skip
    model = Wav2Vec2BertForSequenceClassification(config)
    return model, SeamlessM4TFeatureExtractor(feature_size=80, stride=2)  # 160 = 80 mel bins x stride 2


BUILDERS = {"whisper": _whisper, "data2vec": _data2vec, "sew": _sew, "w2v_bert": _w2v_bert}


@pytest.fixture(scope="module")
def directories(tmp_path_factory):
    out = {}
    for seed, (name, build) in enumerate(BUILDERS.items()):
        path = tmp_path_factory.mktemp(name)
        torch.manual_seed(seed)
        model, extractor = build(path)
        _randomise(model, seed)
        model.save_pretrained(path)
        extractor.save_pretrained(path)
        out[name] = path
    return out


def _wave(seconds: float = 0.5, batch: int = 2, seed: int = 0) -> torch.Tensor:
    """Noise, then a chirp in noise: clips that differ in level and in spectrum (Whisper normalises the level)."""
    gen = torch.Generator().manual_seed(seed)
    n = int(seconds * 16000)
    t = torch.arange(n) / 16000
    chirp = torch.sin(2 * torch.pi * (300 + 3000 * t) * t)
    noise = torch.randn(batch, n, generator=gen)
    clips = [0.05 * noise[0], 0.5 * chirp + 0.1 * noise[1 % batch], 0.8 * noise[-1]]
    return torch.stack(clips[:batch])


def _transformers(directory):
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    return AutoFeatureExtractor.from_pretrained(directory), AutoModelForAudioClassification.from_pretrained(
        directory
    ).eval()


def _reference(directory, wave: torch.Tensor) -> torch.Tensor:
    fe, model = _transformers(directory)
    with torch.no_grad():
        return torch.cat([model(**fe(c.numpy(), sampling_rate=16000, return_tensors="pt")).logits for c in wave])


@pytest.mark.parametrize("name", list(BUILDERS))
def test_logits_equal_transformers(directories, name):
    model = ak.create_model(f"local-dir:{directories[name]}").eval()
    assert isinstance(model, TransformersAudioClassifier) and model.pretrained_cfg.architecture == "transformers_audio"
    assert model.label_names == LABELS
    wave = _wave()
    with torch.no_grad():
        logits = model(wave)
    torch.testing.assert_close(logits, _reference(directories[name], wave), atol=1e-4, rtol=0)
    assert (logits[0] - logits[1]).abs().max() > 1e-3  # the clips differ: the comparison can fail


def test_pipeline_scores_and_activation(directories):
    from transformers import pipeline

    wave = _wave(batch=1, seed=1)
    for name, activation in (("data2vec", "sigmoid"), ("whisper", "softmax")):
        model = ak.create_model(f"local-dir:{directories[name]}").eval()
        assert model.output_activation == activation
        probs = model.predict_proba(wave)[0]
        scores = pipeline("audio-classification", model=str(directories[name]), top_k=None)(wave[0].numpy())
        assert sorted(s["label"] for s in scores) == sorted(LABELS)
        for s in scores:
            assert s["score"] == pytest.approx(float(probs[LABELS.index(s["label"])]), abs=1e-5)


def test_whisper_has_a_fixed_input(directories):
    model = ak.create_model(f"local-dir:{directories['whisper']}")
    assert model.max_samples == 16000 and model.pretrained_cfg.clip_seconds == 1.0
    data2vec = ak.create_model(f"local-dir:{directories['data2vec']}")
    assert data2vec.max_samples is None and data2vec.min_samples == 40


@pytest.mark.parametrize("name", ["whisper", "data2vec"])
def test_embed_is_what_transformers_feeds_its_classifier(directories, name):
    model = ak.create_model(f"local-dir:{directories[name]}").eval()
    fe, reference = _transformers(directories[name])
    seen = []
    reference.classifier.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    wave = _wave(seed=2)
    with torch.no_grad():
        for clip in wave:
            reference(**fe(clip.numpy(), sampling_rate=16000, return_tensors="pt"))
    embedding = model.embed(wave)
    assert embedding.shape == (2, model.num_features) == (2, reference.classifier.in_features)
    torch.testing.assert_close(embedding, torch.cat(seen), atol=1e-4, rtol=0)


@pytest.mark.parametrize("name", ["whisper", "data2vec", "w2v_bert"])
def test_clips_of_different_lengths_are_padded_as_the_extractor_pads_them(directories, name):
    fe, reference = _transformers(directories[name])
    model = ak.create_model(f"local-dir:{directories[name]}").eval()
    gen = torch.Generator().manual_seed(3)
    clips = [0.5 * torch.randn(8000, generator=gen), 0.3 * torch.randn(5200, generator=gen)]
    padding = {} if name == "whisper" else {"padding": True}  # Whisper's extractor pads to its 1 s itself
    inputs = fe([c.numpy() for c in clips], sampling_rate=16000, return_tensors="pt", **padding)
    assert ("attention_mask" in inputs) == (name != "whisper")
    with torch.no_grad():
        expected = reference(**inputs).logits
        torch.testing.assert_close(model(clips), expected, atol=1e-4, rtol=0)


def test_new_head_trains_and_round_trips(directories, tmp_path):
    model = ak.create_model(f"local-dir:{directories['data2vec']}", num_classes=5)
    assert model.num_classes == 5 and model.get_classifier().weight.shape == (5, model.num_features)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.1)
    wave = _wave(seed=4)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(model(wave), torch.ones(2, 5))
    loss.backward()
    optimiser.step()
    after = model.state_dict()
    assert not torch.equal(before["classifier.weight"], after["classifier.weight"])
    encoder = "backbone.data2vec_audio.feature_projection.projection.weight"  # on every path (LayerDrop skips layers)
    assert not torch.equal(before[encoder], after[encoder])

    model.eval()
    model.save_pretrained(tmp_path / "ft")
    again = ak.create_model(f"local-dir:{tmp_path / 'ft'}").eval()
    assert isinstance(again, TransformersAudioClassifier) and again.num_classes == 5
    with torch.no_grad():
        torch.testing.assert_close(again(wave), model(wave), atol=1e-6, rtol=0)


def test_pure_embedder_after_reset(directories):
    model = ak.create_model(f"local-dir:{directories['sew']}").eval()
    wave = _wave(seed=5)
    embedding = model.embed(wave)
    model.reset_classifier(0)
    with torch.no_grad():
        torch.testing.assert_close(model(wave), embedding, atol=1e-6, rtol=0)


def test_old_weight_norm_names_load(directories, tmp_path):
    """SEW's positional convolution stored as weight_g / weight_v (files written before torch's parametrizations)."""
    from safetensors.torch import load_file, save_file

    directory = tmp_path / "sew_old"
    directory.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        (directory / name).write_bytes((directories["sew"] / name).read_bytes())
    state = load_file(directories["sew"] / "model.safetensors")
    old_names = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}
    renamed = {}
    for key, value in state.items():
        for new, old in old_names.items():
            key = key.replace(new, old)
        renamed[key] = value
    assert renamed.keys() != state.keys()
    save_file(renamed, directory / "model.safetensors")
    wave = _wave(seed=6)
    with torch.no_grad():
        torch.testing.assert_close(
            ak.create_model(f"local-dir:{directory}").eval()(wave), _reference(directories["sew"], wave), atol=1e-4,
            rtol=0,
        )  # fmt: skip


def test_tag_runs_through_the_generic_path(directories, make_wav):
    wav = make_wav("clip.wav", 2.5)
    (record,) = ak.tag([wav], model=f"local-dir:{directories['whisper']}", top_k=3, num_workers=0)
    assert record["error"] is None and len(record["windows"]) == 3, record  # 1 s windows: Whisper's fixed input
    assert sorted(label["label"] for label in record["labels"]) == sorted(LABELS)


def test_hub_name_takes_the_generic_path(directories, tmp_path, monkeypatch):
    from huggingface_hub import constants

    from tests.test_hf_hub import _publish

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    _publish(cache, "audiokit-test/whisper-tiny-cls", directories["whisper"], "3" * 40)
    model = ak.create_model("hf-hub:audiokit-test/whisper-tiny-cls").eval()
    wave = _wave(seed=7)
    with torch.no_grad():
        torch.testing.assert_close(model(wave), _reference(directories["whisper"], wave), atol=1e-4, rtol=0)
    assert model.pretrained_cfg.hf_hub_id == "audiokit-test/whisper-tiny-cls"


# -- refusals: one line each -------------------------------------------------------------------------------------------
def _copy(source, target, config_change=None):
    target.mkdir()
    for file in source.iterdir():
        target.joinpath(file.name).write_bytes(file.read_bytes())
    if config_change is not None:
        config = json.loads((target / "config.json").read_text())
        config_change(config)
        (target / "config.json").write_text(json.dumps(config))
    return target


def _one_line(excinfo) -> str:
    assert "\n" not in str(excinfo.value), str(excinfo.value)
    return str(excinfo.value)


def test_remote_code_is_refused(directories, tmp_path):
    directory = _copy(
        directories["data2vec"], tmp_path / "remote",
        lambda c: c.update(auto_map={"AutoModelForAudioClassification": "modeling_x.XForAudioClassification"}),
    )  # fmt: skip
    (directory / "modeling_x.py").write_text("raise SystemExit('the repository code ran')\n")
    with pytest.raises(ValueError, match="trust_remote_code is never enabled") as excinfo:
        ak.create_model(f"local-dir:{directory}")
    _one_line(excinfo)


def test_a_generic_directory_under_a_family_name(directories):
    with pytest.raises(ValueError, match="local-dir:") as excinfo:
        ak.create_model("wav2vec2_base.librispeech", checkpoint_path=directories["data2vec"])
    message = _one_line(excinfo)
    assert "Data2VecAudioForSequenceClassification" in message and "wav2vec2_base.librispeech" in message


def test_a_config_sized_beyond_reason_is_refused_before_building(directories, tmp_path):
    directory = _copy(directories["data2vec"], tmp_path / "huge", lambda c: c.update(hidden_size=10**9))
    with pytest.raises(ValueError, match="hidden_size=1000000000 exceeds") as excinfo:
        ak.create_model(f"local-dir:{directory}")
    _one_line(excinfo)


def test_weights_that_contradict_the_config(directories, tmp_path):
    directory = _copy(directories["whisper"], tmp_path / "wrong", lambda c: c.update(encoder_ffn_dim=48))
    with pytest.raises(ak.CheckpointMismatchError if hasattr(ak, "CheckpointMismatchError") else ValueError) as exc:
        ak.create_model(f"local-dir:{directory}")
    assert "fc1.weight (37, 32) vs model (48, 32)" in _one_line(exc)


def test_an_asr_checkpoint_is_not_taken_for_a_classifier(directories, tmp_path):
    directory = _copy(
        directories["whisper"], tmp_path / "asr", lambda c: c.update(architectures=["WhisperForConditionalGeneration"])
    )
    with pytest.raises(ValueError, match="WhisperForConditionalGeneration is no audio-classification model") as exc:
        ak.create_model(f"local-dir:{directory}")
    _one_line(exc)


def test_no_extractor_and_no_weights(directories, tmp_path):
    directory = _copy(directories["sew"], tmp_path / "noextractor")
    (directory / "preprocessor_config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"preprocessor_config\.json") as exc:
        ak.create_model(f"local-dir:{directory}")
    _one_line(exc)
    directory = _copy(directories["sew"], tmp_path / "noweights")
    (directory / "model.safetensors").unlink()
    with pytest.raises((FileNotFoundError, CheckpointLoadError), match=r"model\.safetensors") as exc:
        ak.create_model(f"local-dir:{directory}")
    _one_line(exc)


def test_loading_logs_nothing_alarming(directories, caplog):
    with caplog.at_level(logging.WARNING, logger="audiokit"):
        ak.create_model(f"local-dir:{directories['sew']}")
    assert not caplog.records, caplog.text


def test_finetune_yaml_takes_a_hub_name_of_a_generic_model(directories, tmp_path, monkeypatch, capsys):
    import yaml
    from huggingface_hub import constants

    from audiokit.cli import main
    from tests.conftest import base_config, write_manifest
    from tests.test_hf_hub import _publish

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    _publish(cache, "audiokit-test/data2vec-tiny-cls", directories["data2vec"], "4" * 40)
    manifest = write_manifest(tmp_path, classes=2, per_class=4, seconds=0.5)
    config = base_config(tmp_path, manifest, epochs=1, batch_size=2)
    config["model"] = {"name": "hf-hub:audiokit-test/data2vec-tiny-cls", "pretrained": True}
    config["data"]["clip_seconds"] = 0.5
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(config))
    assert main(["finetune", str(tmp_path / "c.yaml"), "--quiet"]) == 0, capsys.readouterr().err
    best = tmp_path / "runs" / "run" / "holdout" / "best"
    model = ak.create_model(f"local-dir:{best}")
    assert isinstance(model, TransformersAudioClassifier) and model.label_names == ("class0", "class1")
    assert model.task == "multiclass"


@pytest.mark.parametrize("name", ["data2vec", "sew"])
def test_frames_are_the_base_models_last_hidden_state(directories, name):
    from transformers import AutoFeatureExtractor, AutoModel

    fe = AutoFeatureExtractor.from_pretrained(directories[name])
    base = AutoModel.from_pretrained(directories[name]).eval()  # the encoder alone, loaded by transformers
    model = ak.create_model(f"local-dir:{directories[name]}").eval()
    wave = _wave(0.5, batch=1)
    with torch.no_grad():
        frames = model.embed_frames(wave)
        expected = base(**fe(wave[0].numpy(), sampling_rate=16000, return_tensors="pt")).last_hidden_state
    torch.testing.assert_close(frames.embeddings, expected, atol=1e-5, rtol=0)
    hop = math.prod(base.config.conv_stride) / 16000
    count = int(base._get_feat_extract_output_lengths(torch.tensor(wave.shape[-1])))
    assert frames.embeddings.shape[1] == count
    torch.testing.assert_close(frames.times, (torch.arange(count, dtype=torch.float64) + 0.5) * hop)


def test_filterbank_models_say_they_have_no_frames(directories):
    model = ak.create_model(f"local-dir:{directories['whisper']}").eval()
    assert not model.has_frame_embeddings
    with pytest.raises(ValueError, match="has no frame embeddings"):
        model.embed_frames(_wave(0.5, batch=1))
