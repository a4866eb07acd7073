"""Transformers directories built from their own files: config.json decides the architecture, the feature
extractor's file the input, id2label and problem_type the outputs.

The reference is transformers itself, loaded from the same directory with its own ``from_pretrained`` (feature
extractor + model forward, and the audio-classification pipeline for the activation and label order), on tiny
random models with non-default settings everywhere audiokit reads one.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch

import audiokit as ak
from audiokit._weights import CheckpointMismatchError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

AST_LABELS = ("dog", "rain", "siren")
W2V_LABELS = ("up", "down", "left", "right")


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _randomise(model: torch.nn.Module, seed: int = 0) -> None:
    """Weights far from transformers' small initialisation (unit-scale norms and biases, larger matrices), so that a
    wrong epsilon, mapping or normalisation changes the logits well above the tolerance."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("layer_weights"):
                p.copy_(torch.randn(p.shape, generator=gen))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            elif p.dim() >= 2:
                p.copy_(p * 3.0)


def _wave(seconds: float, batch: int = 2, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    scale = torch.tensor([0.05, 0.5, 1.0])[:batch, None]
    return scale * torch.randn(batch, int(seconds * 16000), generator=gen) + 0.02


def _reference(directory, wave: torch.Tensor, auto_class: str = "AutoModelForAudioClassification"):
    """transformers' own extractor + model, from the directory, one clip at a time (as its pipeline runs)."""
    import transformers

    fe = transformers.AutoFeatureExtractor.from_pretrained(directory)
    model = getattr(transformers, auto_class).from_pretrained(directory).eval()
    out = []
    with torch.no_grad():
        for clip in wave:
            inputs = fe(clip.numpy(), sampling_rate=fe.sampling_rate, return_tensors="pt")
            result = model(**inputs)
            out.append(result.logits if hasattr(result, "logits") else result.last_hidden_state.mean(dim=1))
    return torch.cat(out)


# ---------------------------------------------------------------------------------------------------------------------
# AST
# ---------------------------------------------------------------------------------------------------------------------
AST_CONFIG = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, patch_size=8,
    frequency_stride=6, time_stride=5, max_length=40, num_mel_bins=24, layer_norm_eps=1e-3, qkv_bias=False,
    hidden_act="gelu_new",
)  # fmt: skip
AST_EXTRACTOR = dict(num_mel_bins=24, max_length=40, mean=-3.5, std=2.5, do_normalize=True)


def _ast_dir(path, problem_type: str | None = "multi_label_classification", head: bool = True, **config):
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification, ASTModel

    torch.manual_seed(0)
    hf_config = ASTConfig(**{**AST_CONFIG, **config}, id2label=dict(enumerate(AST_LABELS)), problem_type=problem_type)
    model = (ASTForAudioClassification if head else ASTModel)(hf_config)
    _randomise(model)
    model.save_pretrained(path)
    ASTFeatureExtractor(**AST_EXTRACTOR).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def ast_dir(tmp_path_factory):
    return _ast_dir(tmp_path_factory.mktemp("ast"))


def test_ast_directory_gives_transformers_logits_both_ways(ast_dir, caplog):
    wave = _wave(0.5)  # 48 frames: cut to the extractor's 40
    expected = _reference(ast_dir, wave)
    by_dir = ak.create_model(f"local-dir:{ast_dir}").eval()
    with caplog.at_level(logging.WARNING, logger="audiokit"):
        by_name = ak.create_model("ast_base.audioset", checkpoint_path=ast_dir).eval()
    lines = [r.getMessage() for r in caplog.records if "differs from ast_base.audioset" in r.getMessage()]
    assert len(lines) == 1, caplog.text
    for word in ("layer_norm_eps 0.001", "head_norm_eps 0.001", "num_classes 3 (registered 527)", "frontend.mean"):
        assert word in lines[0], lines[0]
    for model in (by_dir, by_name):
        with torch.no_grad():
            logits = model(wave)
        torch.testing.assert_close(logits, expected, atol=1e-4, rtol=0)
        assert model.label_names == AST_LABELS and model.task == "multilabel"
        assert model.output_activation == "sigmoid" and model.max_samples == 400 + 39 * 160
    # A short clip is padded by the extractor and by audiokit alike.
    short = _wave(0.2, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(by_dir(short), _reference(ast_dir, short), atol=1e-4, rtol=0)


def test_ast_pipeline_scores_and_label_order(ast_dir):
    from transformers import pipeline

    wave = _wave(0.4, batch=1, seed=2)
    scores = pipeline("audio-classification", model=str(ast_dir), top_k=None)(wave[0].numpy())
    model = ak.create_model(f"local-dir:{ast_dir}").eval()
    probs = model.predict_proba(wave)[0]
    assert sorted(s["label"] for s in scores) == sorted(AST_LABELS)
    for s in scores:
        assert s["score"] == pytest.approx(float(probs[model.label_names.index(s["label"])]), abs=1e-5)


@pytest.mark.parametrize(
    ("problem_type", "task", "activation"),
    [(None, "multiclass", "softmax"), ("single_label_classification", "multiclass", "softmax"),
     ("regression", "multiclass", "identity")],
)  # fmt: skip
def test_problem_type_picks_task_and_activation(tmp_path, problem_type, task, activation):
    model = ak.create_model(f"local-dir:{_ast_dir(tmp_path / 'd', problem_type=problem_type)}")
    assert (model.task, model.output_activation) == (task, activation)


def test_ast_model_directory_is_an_embedder(tmp_path):
    directory = _ast_dir(tmp_path / "d", head=False)
    model = ak.create_model(f"local-dir:{directory}").eval()
    assert model.num_classes == 0 and not any(k.startswith("head_norm.") for k in model.state_dict())
    wave = _wave(0.4)  # within the 40-frame input: longer input is windowed by embed, cut by the extractor
    # ASTModel's pooled output: the mean of the cls and distillation tokens, no LayerNorm.
    from transformers import ASTModel

    reference = ASTModel.from_pretrained(directory).eval()
    fe_inputs = [_extract(directory, clip) for clip in wave]
    with torch.no_grad():
        expected = torch.cat([reference(**x).pooler_output for x in fe_inputs])
    torch.testing.assert_close(model.embed(wave), expected, atol=1e-4, rtol=0)


def _extract(directory, clip: torch.Tensor):
    from transformers import AutoFeatureExtractor

    fe = AutoFeatureExtractor.from_pretrained(directory)
    return fe(clip.numpy(), sampling_rate=fe.sampling_rate, return_tensors="pt")


def test_ast_config_round_trip_maps_every_field(tmp_path):
    """Non-default values in every field audiokit maps, through save_pretrained and back into the ASTConfig that
    audiokit builds its backbone from."""
    from transformers import ASTConfig

    directory = _ast_dir(tmp_path / "d", hidden_size=24, num_attention_heads=3, num_hidden_layers=1)
    model = ak.create_model(f"local-dir:{directory}")
    original = ASTConfig.from_pretrained(directory)
    for field in (
        "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
        "layer_norm_eps", "patch_size", "qkv_bias", "frequency_stride", "time_stride", "max_length", "num_mel_bins",
    ):  # fmt: skip
        assert getattr(model.config, field) == getattr(original, field), field
    assert model.head_norm.eps == original.layer_norm_eps
    fe = model.frontend_cfg
    assert (fe.n_mels, fe.max_frames, fe.sample_rate) == (24, 40, 16000)
    assert fe.mean == AST_EXTRACTOR["mean"] and fe.std == 2 * AST_EXTRACTOR["std"]
    saved = tmp_path / "saved"
    model.save_pretrained(saved)  # and audiokit's own directory reloads the same model
    again = ak.create_model(f"local-dir:{saved}")
    assert again.config.to_dict() == model.config.to_dict() and again.label_names == AST_LABELS


def test_ast_without_normalisation(tmp_path):
    from transformers import ASTFeatureExtractor

    directory = _ast_dir(tmp_path / "d")
    ASTFeatureExtractor(**{**AST_EXTRACTOR, "do_normalize": False}).save_pretrained(directory)
    model = ak.create_model(f"local-dir:{directory}").eval()
    assert (model.frontend_cfg.mean, model.frontend_cfg.std) == (0.0, 1.0)
    wave = _wave(0.3)
    with torch.no_grad():
        torch.testing.assert_close(model(wave), _reference(directory, wave), atol=1e-4, rtol=0)


# ---------------------------------------------------------------------------------------------------------------------
# Wav2Vec2
# ---------------------------------------------------------------------------------------------------------------------
W2V_CONFIG = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, conv_dim=(8, 12, 16),
    conv_kernel=(6, 3, 3), conv_stride=(3, 2, 2), conv_bias=True, feat_extract_norm="layer",
    do_stable_layer_norm=True, num_conv_pos_embeddings=12, num_conv_pos_embedding_groups=4, layer_norm_eps=1e-4,
    use_weighted_layer_sum=True, classifier_proj_size=7, hidden_act="gelu_new", feat_extract_activation="relu",
    mask_time_prob=0.0,
)  # fmt: skip


def _w2v_dir(path, head: bool = True, do_normalize: bool = True, family: str = "Wav2Vec2", **config):
    import transformers

    torch.manual_seed(0)
    config_class = getattr(transformers, f"{family}Config")
    hf_config = config_class(**{**W2V_CONFIG, **config}, id2label=dict(enumerate(W2V_LABELS)))
    model = getattr(transformers, f"{family}ForSequenceClassification" if head else f"{family}Model")(hf_config)
    _randomise(model)
    model.save_pretrained(path)
    transformers.Wav2Vec2FeatureExtractor(do_normalize=do_normalize, return_attention_mask=True).save_pretrained(path)
    return path


@pytest.mark.parametrize("do_normalize", [True, False])
def test_wav2vec2_directory_gives_transformers_logits_both_ways(tmp_path, do_normalize, caplog):
    directory = _w2v_dir(tmp_path / "d", do_normalize=do_normalize)
    wave = _wave(0.3, batch=3)
    expected = _reference(directory, wave)
    by_dir = ak.create_model(f"local-dir:{directory}").eval()
    with caplog.at_level(logging.WARNING, logger="audiokit"):
        by_name = ak.create_model("wav2vec2_base.superb_ks", checkpoint_path=directory).eval()
    lines = [r.getMessage() for r in caplog.records if "differs from wav2vec2_base.superb_ks" in r.getMessage()]
    assert len(lines) == 1 and "conv_stride (3, 2, 2)" in lines[0] and "classifier_proj_size 7" in lines[0]
    assert ("do_normalize False" in lines[0]) is not do_normalize
    for model in (by_dir, by_name):
        with torch.no_grad():
            logits = model(wave)
        torch.testing.assert_close(logits, expected, atol=1e-4, rtol=0)
        assert model.label_names == W2V_LABELS and model.num_features == 7 and model.hop == 12


def test_wav2vec2_pipeline_scores(tmp_path):
    from transformers import pipeline

    directory = _w2v_dir(tmp_path / "d")
    wave = _wave(0.25, batch=1, seed=3)
    scores = pipeline("audio-classification", model=str(directory), top_k=None)(wave[0].numpy())
    model = ak.create_model(f"local-dir:{directory}").eval()
    probs = model.predict_proba(wave)[0]
    assert model.output_activation == "softmax"
    assert sorted(s["label"] for s in scores) == sorted(W2V_LABELS)
    for s in scores:
        assert s["score"] == pytest.approx(float(probs[W2V_LABELS.index(s["label"])]), abs=1e-5)


def test_wav2vec2_model_directory_is_an_embedder(tmp_path):
    directory = _w2v_dir(tmp_path / "d", head=False, feat_extract_norm="group", do_stable_layer_norm=False)
    model = ak.create_model(f"local-dir:{directory}").eval()
    assert model.num_classes == 0 and model.num_features == 32
    wave = _wave(0.3)
    torch.testing.assert_close(model.embed(wave), _reference(directory, wave, "AutoModel"), atol=1e-4, rtol=0)


def test_wav2vec2_config_round_trip_maps_every_field(tmp_path):
    from transformers import Wav2Vec2Config

    directory = _w2v_dir(tmp_path / "d")
    model = ak.create_model(f"local-dir:{directory}")
    original = Wav2Vec2Config.from_pretrained(directory)
    for field in (
        "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act", "conv_bias",
        "feat_extract_norm", "feat_extract_activation", "do_stable_layer_norm", "num_conv_pos_embeddings",
        "num_conv_pos_embedding_groups", "layer_norm_eps", "use_weighted_layer_sum",
    ):  # fmt: skip
        assert getattr(model.config, field) == getattr(original, field), field
    for field in ("conv_dim", "conv_kernel", "conv_stride"):
        assert tuple(getattr(model.config, field)) == tuple(getattr(original, field)), field
    assert model.projector.out_features == original.classifier_proj_size
    assert not hasattr(model.backbone, "masked_spec_embed")  # mask_time_prob 0: transformers makes none either
    assert model.do_normalize is True and model.sample_rate == 16000


# ---------------------------------------------------------------------------------------------------------------------
# HuBERT
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("feat_proj_layer_norm", "conv_pos_batch_norm"), [(False, True), (True, False)]
)  # fmt: skip
def test_hubert_directory_gives_transformers_logits_both_ways(tmp_path, feat_proj_layer_norm, conv_pos_batch_norm):
    from transformers import HubertConfig

    directory = _w2v_dir(
        tmp_path / "d", family="Hubert", feat_proj_layer_norm=feat_proj_layer_norm,
        conv_pos_batch_norm=conv_pos_batch_norm, feat_extract_norm="group", do_stable_layer_norm=False,
    )  # fmt: skip
    wave = _wave(0.3, batch=3)
    expected = _reference(directory, wave)
    original = HubertConfig.from_pretrained(directory)
    for model in (
        ak.create_model(f"local-dir:{directory}").eval(),
        ak.create_model("hubert_base.librispeech", checkpoint_path=directory).eval(),
    ):
        with torch.no_grad():
            logits = model(wave)
        torch.testing.assert_close(logits, expected, atol=1e-4, rtol=0)
        assert model.label_names == W2V_LABELS and type(model.backbone).__name__ == "HubertModel"
        for field in ("feat_proj_layer_norm", "conv_pos_batch_norm", "feat_extract_activation", "conv_bias"):
            assert getattr(model.config, field) == getattr(original, field), field


def test_hubert_model_directory_is_an_embedder(tmp_path):
    directory = _w2v_dir(tmp_path / "d", family="Hubert", head=False)
    model = ak.create_model(f"local-dir:{directory}").eval()
    assert model.num_classes == 0
    wave = _wave(0.3)
    torch.testing.assert_close(model.embed(wave), _reference(directory, wave, "AutoModel"), atol=1e-4, rtol=0)


def test_a_wav2vec2_directory_is_not_a_hubert(tmp_path):
    directory = _w2v_dir(tmp_path / "d")
    with pytest.raises(ValueError, match=r"not one of hubert_base\.librispeech \(family hubert\); load it with"):
        ak.create_model("hubert_base.librispeech", checkpoint_path=directory)


@pytest.mark.slow
def test_full_size_hubert_base():
    from transformers import HubertConfig, HubertModel

    model = ak.create_model("hubert_base.librispeech").eval()
    reference = HubertModel(HubertConfig())
    assert sum(p.numel() for p in model.parameters()) == 94_371_712
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in reference.parameters())
    assert model.hop == 320 and model.receptive_field == 400 and model.num_features == 768
    model.backbone.load_state_dict(reference.state_dict())
    wave = _wave(2.0, batch=1)
    with torch.no_grad():
        expected = reference.eval()(
            (wave - wave.mean()) / torch.sqrt(wave.var(unbiased=False) + 1e-7)
        ).last_hidden_state.mean(dim=1)
        torch.testing.assert_close(model.embed(wave), expected, atol=1e-4, rtol=0)


# ---------------------------------------------------------------------------------------------------------------------
# WavLM
# ---------------------------------------------------------------------------------------------------------------------
WAVLM_BIAS = {"num_buckets": 16, "max_bucket_distance": 40}


def test_wavlm_directory_gives_transformers_logits_both_ways(tmp_path):
    from transformers import WavLMConfig

    directory = _w2v_dir(tmp_path / "d", family="WavLM", **WAVLM_BIAS)
    wave = _wave(0.5, batch=3)  # 666 frames: most distances lie beyond max_bucket_distance
    expected = _reference(directory, wave)
    original = WavLMConfig.from_pretrained(directory)
    for model in (
        ak.create_model(f"local-dir:{directory}").eval(),
        ak.create_model("wavlm_base.librispeech", checkpoint_path=directory).eval(),
    ):
        with torch.no_grad():
            logits = model(wave)
        torch.testing.assert_close(logits, expected, atol=1e-4, rtol=0)
        assert model.label_names == W2V_LABELS and type(model.backbone).__name__ == "WavLMModel"
        for field in ("num_buckets", "max_bucket_distance", "do_stable_layer_norm", "feat_extract_norm"):
            assert getattr(model.config, field) == getattr(original, field), field


def test_wavlm_model_directory_is_an_embedder(tmp_path):
    directory = _w2v_dir(
        tmp_path / "d", family="WavLM", head=False, feat_extract_norm="group", do_stable_layer_norm=False, **WAVLM_BIAS
    )
    model = ak.create_model(f"local-dir:{directory}").eval()
    assert model.num_classes == 0
    wave = _wave(0.3)
    torch.testing.assert_close(model.embed(wave), _reference(directory, wave, "AutoModel"), atol=1e-4, rtol=0)


@pytest.mark.slow
def test_full_size_wavlm_base():
    from transformers import WavLMConfig, WavLMModel

    model = ak.create_model("wavlm_base.librispeech").eval()
    reference = WavLMModel(WavLMConfig())
    assert sum(p.numel() for p in model.parameters()) == 94_381_936
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in reference.parameters())
    model.backbone.load_state_dict(reference.state_dict())
    wave = _wave(2.0, batch=1)
    with torch.no_grad():
        expected = reference.eval()(
            (wave - wave.mean()) / torch.sqrt(wave.var(unbiased=False) + 1e-7)
        ).last_hidden_state.mean(dim=1)
        torch.testing.assert_close(model.embed(wave), expected, atol=1e-4, rtol=0)


# ---------------------------------------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------------------------------------
def _one_line(err: BaseException) -> str:
    message = str(err)
    assert "\n" not in message, message
    return message


def test_a_directory_of_another_family_names_both_and_says_how(ast_dir):
    with pytest.raises(ValueError) as info:
        ak.create_model("wav2vec2_base.superb_ks", checkpoint_path=ast_dir)
    message = _one_line(info.value)
    for word in ("ASTForAudioClassification", "wav2vec2_base.superb_ks", f"local-dir:{ast_dir}"):
        assert word in message, message


def test_arguments_that_contradict_the_directory_are_refused(ast_dir):
    with pytest.raises(ValueError, match=r"hidden_size=64 \(the directory's is 32\)"):
        ak.create_model("ast_base.audioset", checkpoint_path=ast_dir, hidden_size=64)
    # Arguments the directory does not decide pass (dropout is a training choice).
    assert ak.create_model(f"local-dir:{ast_dir}", drop_rate=0.1).config.hidden_dropout_prob == 0.1


def _copy(src, dst):
    import shutil

    return shutil.copytree(src, dst)


def test_config_without_weights(ast_dir, tmp_path):
    directory = _copy(ast_dir, tmp_path / "d")
    (directory / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError) as info:
        ak.create_model(f"local-dir:{directory}")
    assert str(directory) in _one_line(info.value) and "model.safetensors" in str(info.value)


def test_weights_that_contradict_the_config(ast_dir, tmp_path):
    directory = _copy(ast_dir, tmp_path / "d")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "intermediate_size": 40}))
    with pytest.raises(CheckpointMismatchError) as info:
        ak.create_model(f"local-dir:{directory}")
    message = _one_line(info.value)
    assert str(directory / "model.safetensors") in message and "mlp.fc1.weight (37, 32) vs model (40, 32)" in message


@pytest.mark.parametrize(
    ("config", "words"),
    [({"model_type": "bert", "architectures": ["BertForSequenceClassification"]},
      ["BertForSequenceClassification", "model_type 'bert' has no audio-classification model"]),
     ({"model_type": "wav2vec2", "architectures": ["Wav2Vec2ForXVector"]},
      ["Wav2Vec2ForXVector has no native audiokit path", "Wav2Vec2ForSequenceClassification"]),
     ({"model_type": "wav2vec2", "auto_map": {"AutoModel": "modeling.MyModel"}}, ["auto_map", "trust_remote_code"]),
     ({"model_type": "audio-spectrogram-transformer", "hidden_size": "32"}, ["hidden_size", "expected int"]),
     ({"model_type": "audio-spectrogram-transformer", "problem_type": "ranking"}, ["problem_type 'ranking'"])],
)  # fmt: skip
def test_configs_audiokit_cannot_build_are_one_line_naming_the_file(ast_dir, tmp_path, config, words):
    directory = _copy(ast_dir, tmp_path / "d")
    (directory / "config.json").write_text(json.dumps({"architectures": ["ASTForAudioClassification"], **config}))
    with pytest.raises(ValueError) as info:
        ak.create_model(f"local-dir:{directory}")
    message = _one_line(info.value)
    assert message.startswith(str(directory / "config.json")), message
    for word in words:
        assert word in message, message


@pytest.mark.parametrize("name", ["config.json", "preprocessor_config.json"])
def test_corrupt_json_is_one_line_naming_the_file(ast_dir, tmp_path, name):
    directory = _copy(ast_dir, tmp_path / "d")
    (directory / name).write_text('{"model_type": "audio-spectrogram-transformer",')
    for load in (
        lambda: ak.create_model(f"local-dir:{directory}"),
        lambda: ak.create_model("ast_base.audioset", checkpoint_path=directory),
    ):
        with pytest.raises(ValueError) as info:
            load()
        message = _one_line(info.value)
        assert message.startswith(f"{directory / name}: invalid") and "not JSON" in message, message


def test_extractor_that_contradicts_the_config(ast_dir, tmp_path):
    directory = _copy(ast_dir, tmp_path / "d")
    extractor = json.loads((directory / "preprocessor_config.json").read_text())
    (directory / "preprocessor_config.json").write_text(json.dumps({**extractor, "max_length": 64}))
    with pytest.raises(ValueError, match=r"preprocessor_config\.json: max_length 64 differs from config\.json's 40"):
        ak.create_model(f"local-dir:{directory}")
    (directory / "preprocessor_config.json").write_text(
        json.dumps({**extractor, "feature_extractor_type": "Wav2Vec2FeatureExtractor"})
    )
    with pytest.raises(ValueError, match=r"'Wav2Vec2FeatureExtractor', not the ASTFeatureExtractor"):
        ak.create_model(f"local-dir:{directory}")


def test_missing_extractor(ast_dir, tmp_path, caplog):
    directory = _copy(ast_dir, tmp_path / "d")
    (directory / "preprocessor_config.json").unlink()
    with pytest.raises(FileNotFoundError, match="preprocessing is unknown"):
        ak.create_model(f"local-dir:{directory}")
    # With a family name the registered variant's preprocessing is taken, saying so; here its 1024 frames do not
    # fit the directory's position grid, which the weights check names.
    with pytest.raises(CheckpointMismatchError, match="position_embeddings"):
        ak.create_model("ast_base.audioset", checkpoint_path=directory)
    assert "the input preprocessing of ast_base.audioset is assumed" in caplog.text


def test_no_architectures_key_reads_the_head_off_the_weights(ast_dir, tmp_path):
    directory = _copy(ast_dir, tmp_path / "d")
    config = json.loads((directory / "config.json").read_text())
    del config["architectures"]
    (directory / "config.json").write_text(json.dumps(config))
    wave = _wave(0.3)
    model = ak.create_model(f"local-dir:{directory}").eval()
    with torch.no_grad():
        torch.testing.assert_close(model(wave), _reference(ast_dir, wave), atol=1e-4, rtol=0)


@pytest.mark.parametrize("config", [{"model_type": "wav2vec2", "num_labels": 100_000_000},
                                    {"model_type": "audio-spectrogram-transformer", "num_labels": True}])  # fmt: skip
def test_class_count_is_bounded_before_transformers_parses_the_config(tmp_path, config):
    """transformers builds one label entry per class while parsing: 10^8 of them would take tens of GB."""
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config\.json: num_labels must give 0\.\.100000 classes"):
        ak.create_model(f"local-dir:{tmp_path}")


def test_an_audiokit_directory_given_as_checkpoint_path_points_to_local_dir(tmp_path):
    model = ak.create_model("bcresnet_1.speechcommands", num_classes=3, label_names=["a", "b", "c"])
    model.save_pretrained(tmp_path / "saved")
    with pytest.raises(ValueError, match=r"audiokit save_pretrained directory: load it with create_model\('local-dir:"):
        ak.create_model("bcresnet_1.speechcommands", checkpoint_path=tmp_path / "saved", num_classes=3)
    assert ak.create_model(f"local-dir:{tmp_path / 'saved'}").label_names == ("a", "b", "c")
