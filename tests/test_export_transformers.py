"""Export to transformers (``ak.export(model, DIR, format="transformers")``, ``audiokit export --format transformers``).

The reference is transformers itself: the exported directory is loaded with its own ``AutoFeatureExtractor`` and
``AutoModelForAudioClassification`` (or ``AutoModel`` for an embedder), run on the raw waveform one clip at a time as
its pipeline does, and compared with audiokit's logits of the model that was exported; then ``local-dir:`` must read
the same model back. Tiny models with weights far from transformers' initialisation (so that a wrong epsilon, mapping
or normalisation moves the logits well past the tolerance), non-default settings, and a new classifier with names,
as ``audiokit finetune`` makes one.
"""

from __future__ import annotations

import json
import logging

import pytest
import torch

import audiokit as ak
from audiokit._fileio import OutputPathError
from audiokit.export import ExportError, export

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

LABELS = ("dog", "rain", "siren")
W2V_LABELS = ("up", "down", "left", "right", "yes")

AST_CONFIG = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, patch_size=8,
    frequency_stride=6, time_stride=5, max_length=40, num_mel_bins=24, layer_norm_eps=1e-3, qkv_bias=False,
    hidden_act="gelu_new",
)  # fmt: skip
AST_EXTRACTOR = dict(num_mel_bins=24, max_length=40, mean=-3.5, std=2.5, do_normalize=True)
W2V_CONFIG = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, conv_dim=(8, 12, 16),
    conv_kernel=(6, 3, 3), conv_stride=(3, 2, 2), conv_bias=True, feat_extract_norm="layer",
    do_stable_layer_norm=True, num_conv_pos_embeddings=12, num_conv_pos_embedding_groups=4, layer_norm_eps=1e-4,
    use_weighted_layer_sum=True, classifier_proj_size=7, hidden_act="gelu_new", feat_extract_activation="relu",
    mask_time_prob=0.0,
)  # fmt: skip
# The same sizes as audiokit architecture arguments, for registered names built small.
W2V_TINY = dict(
    hidden_size=32, num_layers=2, num_heads=2, intermediate_size=37, conv_dim=(8, 12, 16), conv_kernel=(6, 3, 3),
    conv_stride=(3, 2, 2), num_conv_pos_embeddings=12, num_conv_pos_embedding_groups=4,
)  # fmt: skip
AST_TINY = dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=37)


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Unit-scale norms and biases, larger matrices, random layer weights: logits of order 1-10 that depend on every
    tensor."""
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
    return model


def _new_head(model, labels, seed: int = 1, **kwargs):
    """A fresh classifier with names, at unit gain (as fine-tuning would leave it: its logits matter)."""
    model.reset_classifier(len(labels), list(labels), **kwargs)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.get_classifier().parameters():
            p.copy_(torch.randn(p.shape, generator=gen) / p.shape[-1] ** 0.5)
    return model.eval()


def _wave(seconds: float, seed: int = 0, scale: float = 0.3) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return scale * torch.randn(1, int(seconds * 16000), generator=gen) + 0.02


def _transformers_outputs(directory, clips, embedder: bool = False) -> torch.Tensor:
    """transformers' own extractor + model from the exported directory, one clip at a time."""
    import transformers

    fe = transformers.AutoFeatureExtractor.from_pretrained(directory)
    auto = transformers.AutoModel if embedder else transformers.AutoModelForAudioClassification
    model = auto.from_pretrained(directory).eval()
    out = []
    with torch.no_grad():
        for clip in clips:
            result = model(**fe(clip[0].numpy(), sampling_rate=fe.sampling_rate, return_tensors="pt"))
            if not embedder:
                out.append(result.logits)
            elif hasattr(result, "pooler_output") and result.pooler_output is not None:
                out.append(result.pooler_output)
            else:
                out.append(result.last_hidden_state.mean(dim=1))
    return torch.cat(out)


def _audiokit_outputs(model, clips) -> torch.Tensor:
    with torch.no_grad():
        return torch.cat([model(clip) for clip in clips])


def _check_export(model, directory, clips, problem_type: str | None, embedder: bool = False):
    """transformers' outputs and audiokit's reload equal the model's; labels and problem_type as the model has them."""
    from transformers import AutoConfig

    expected = _audiokit_outputs(model, clips)
    assert expected.abs().max() > 0.5  # informative outputs: the comparison can fail
    got = _transformers_outputs(directory, clips, embedder)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
    again = ak.create_model(f"local-dir:{directory}").eval()
    torch.testing.assert_close(_audiokit_outputs(again, clips), expected, atol=1e-4, rtol=0)
    assert again.label_names == model.label_names
    assert (again.task, again.output_activation) == (model.task, model.output_activation)
    config = AutoConfig.from_pretrained(directory)
    if not embedder:
        assert [config.id2label[i] for i in range(config.num_labels)] == list(model.label_names)
        assert config.label2id == {name: i for i, name in enumerate(model.label_names)}
        assert config.problem_type == problem_type
    assert sorted(p.name for p in directory.iterdir()) == [
        "config.json", "model.safetensors", "preprocessor_config.json",
    ]  # fmt: skip
    return config


# ---------------------------------------------------------------------------------------------------------------------
# AST
# ---------------------------------------------------------------------------------------------------------------------
def _ast_dir(path, head: bool = True):
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification, ASTModel

    torch.manual_seed(0)
    config = ASTConfig(**AST_CONFIG, id2label={0: "a", 1: "b"})
    _randomise((ASTForAudioClassification if head else ASTModel)(config)).save_pretrained(path)
    ASTFeatureExtractor(**AST_EXTRACTOR).save_pretrained(path)
    return path


def _finetuned(model, labels, tmp_path, **head):
    """What ``audiokit finetune`` leaves: a new named classifier, saved as a run directory and loaded back."""
    _new_head(model, labels, **head)
    model.save_pretrained(tmp_path / "run" / "best")
    return ak.create_model(f"local-dir:{tmp_path / 'run' / 'best'}").eval()


def test_fine_tuned_ast_from_a_transformers_directory_round_trips(tmp_path):
    """A transformers AST read by audiokit, fine-tuned on new multi-label classes, goes back as the same model."""
    base = ak.create_model(f"local-dir:{_ast_dir(tmp_path / 'hf')}")
    base.pretrained_cfg = base.pretrained_cfg.replace(task="multilabel")  # as finetune sets it from the labels
    model = _finetuned(base, LABELS, tmp_path)
    out = export(model, tmp_path / "export", format="transformers")
    assert out == tmp_path / "export"
    clips = [_wave(0.5), _wave(0.2, seed=1, scale=0.05)]  # cut to 40 frames, and padded to them
    config = _check_export(model, out, clips, "multi_label_classification")
    assert config.architectures == ["ASTForAudioClassification"] and config.layer_norm_eps == 1e-3
    extractor = json.loads((out / "preprocessor_config.json").read_text())
    assert {k: extractor[k] for k in AST_EXTRACTOR} == AST_EXTRACTOR


def test_transformers_pipeline_scores_are_audiokit_probabilities(tmp_path):
    """problem_type makes transformers' audio-classification pipeline apply audiokit's output activation."""
    from transformers import pipeline

    base = ak.create_model(f"local-dir:{_ast_dir(tmp_path / 'hf')}")
    base.pretrained_cfg = base.pretrained_cfg.replace(task="multilabel")
    model = _new_head(base, LABELS)
    out = export(model, tmp_path / "export", format="transformers")
    clip = _wave(0.4, seed=3)
    scores = pipeline("audio-classification", model=str(out), top_k=None)(clip[0].numpy())
    probs = model.predict_proba(clip)[0]
    assert sorted(s["label"] for s in scores) == sorted(LABELS)
    for s in scores:
        assert s["score"] == pytest.approx(float(probs[LABELS.index(s["label"])]), abs=1e-5)
    assert sum(s["score"] for s in scores) > 1.01 or sum(s["score"] for s in scores) < 0.99  # sigmoid, not softmax


def test_registered_ast_with_its_two_epsilons(tmp_path, caplog):
    """audiokit's registered AST has LayerNorm eps 1e-6 in the blocks and 1e-5 in the head; transformers has one
    layer_norm_eps, so the head takes the blocks' and the export says so with the difference it measured."""
    model = _randomise(ak.create_model("ast_base.speechcommands_v2", **AST_TINY))
    model = _new_head(model, W2V_LABELS)
    with caplog.at_level(logging.WARNING, logger="audiokit"):
        out = export(model, tmp_path / "export", format="transformers")
    assert "head LayerNorm's eps 1e-05 becomes the blocks' 1e-06" in caplog.text
    clips = [_wave(1.28), _wave(0.5, seed=1)]
    config = _check_export(model, out, clips, "single_label_classification")
    assert (config.max_length, config.num_mel_bins, config.frequency_stride) == (128, 128, 10)


def test_ast_embedder_goes_to_ast_model(tmp_path):
    model = ak.create_model(f"local-dir:{_ast_dir(tmp_path / 'hf', head=False)}").eval()
    out = export(model, tmp_path / "export", format="transformers")
    config = _check_export(model, out, [_wave(0.4)], None, embedder=True)
    assert config.architectures == ["ASTModel"]


def test_ast_refusals(tmp_path):
    import dataclasses

    from audiokit._builder import build_model

    # The registered embedder's embedding passes through head_norm, which ASTModel's pooled output has not.
    embedder = ak.create_model("ast_base.speechcommands_v2", num_classes=0, **AST_TINY)
    with pytest.raises(ExportError, match=r"embedder whose embedding passes through head_norm"):
        export(embedder, tmp_path / "a", format="transformers")
    # A classifier put on an ASTModel has no LayerNorm before it; ASTForAudioClassification's head always has one.
    bare = ak.create_model(f"local-dir:{_ast_dir(tmp_path / 'hf', head=False)}")
    bare.reset_classifier(2, ["x", "y"])
    with pytest.raises(ExportError, match=r"no LayerNorm before it"):
        export(bare, tmp_path / "b", format="transformers")
    # A frontend ASTFeatureExtractor cannot compute, named field by field.
    cfg = ak.get_pretrained_cfg("ast_base.speechcommands_v2")
    cfg = cfg.replace(frontend=dataclasses.replace(cfg.frontend, f_min=50.0, preemphasis=0.0))
    odd = build_model(cfg, **AST_TINY)
    with pytest.raises(ExportError) as info:
        export(odd, tmp_path / "c", format="transformers")
    message = str(info.value)
    assert "\n" not in message and "ASTFeatureExtractor cannot compute its frontend" in message
    assert "f_min 50.0 (ASTFeatureExtractor: 20.0)" in message and "preemphasis 0.0" in message
    assert not any(tmp_path.glob(".*"))  # no staging directory left behind


# ---------------------------------------------------------------------------------------------------------------------
# Wav2Vec2, HuBERT, WavLM
# ---------------------------------------------------------------------------------------------------------------------
def _w2v_dir(path, family: str = "Wav2Vec2", head: bool = True, do_normalize: bool = True, **config):
    import transformers

    torch.manual_seed(0)
    hf_config = getattr(transformers, f"{family}Config")(**{**W2V_CONFIG, **config}, id2label={0: "a", 1: "b"})
    model = getattr(transformers, f"{family}ForSequenceClassification" if head else f"{family}Model")(hf_config)
    _randomise(model).save_pretrained(path)
    transformers.Wav2Vec2FeatureExtractor(do_normalize=do_normalize, return_attention_mask=True).save_pretrained(path)
    return path


W2V_CLIPS = [_wave(0.1), _wave(0.037, seed=1, scale=0.05)]  # 133 and 49 frames of the tiny encoder


@pytest.mark.parametrize("do_normalize", [True, False])
def test_fine_tuned_wav2vec2_keeps_weighted_layer_sum_and_projector(tmp_path, do_normalize):
    base = ak.create_model(f"local-dir:{_w2v_dir(tmp_path / 'hf', do_normalize=do_normalize)}")
    model = _finetuned(base, W2V_LABELS, tmp_path)
    out = export(model, tmp_path / "export", format="transformers")
    config = _check_export(model, out, W2V_CLIPS, "single_label_classification")
    assert config.architectures == ["Wav2Vec2ForSequenceClassification"]
    assert config.use_weighted_layer_sum is True and config.classifier_proj_size == 7
    assert (config.do_stable_layer_norm, config.feat_extract_norm) == (True, "layer")
    assert list(config.conv_stride) == [3, 2, 2]
    extractor = json.loads((out / "preprocessor_config.json").read_text())
    assert extractor["do_normalize"] is do_normalize and extractor["sampling_rate"] == 16000


def test_classifier_on_the_hidden_states_gets_an_identity_projector(tmp_path):
    """``create_model('wav2vec2_base.librispeech', num_classes=N)`` (the usual fine-tune) has no projector;
    transformers' head always has one, and an identity projection of hidden_size reproduces the model."""
    model = _randomise(ak.create_model("wav2vec2_base.librispeech", **W2V_TINY))
    model.pretrained_cfg = model.pretrained_cfg.replace(task="multilabel")
    model = _new_head(model, LABELS)
    assert model.projector is None
    out = export(model, tmp_path / "export", format="transformers")
    config = _check_export(model, out, W2V_CLIPS, "multi_label_classification")
    assert config.classifier_proj_size == 32 and config.use_weighted_layer_sum is False


def test_wav2vec2_embedder_goes_to_wav2vec2_model(tmp_path):
    model = ak.create_model(f"local-dir:{_w2v_dir(tmp_path / 'hf', head=False, feat_extract_norm='group')}").eval()
    out = export(model, tmp_path / "export", format="transformers")
    config = _check_export(model, out, W2V_CLIPS, None, embedder=True)
    assert config.architectures == ["Wav2Vec2Model"]
    # The superb_ks head without its classifier keeps layer weights and a projector that Wav2Vec2Model has not.
    headless = ak.create_model("wav2vec2_base.superb_ks", num_classes=0, **W2V_TINY)
    with pytest.raises(ExportError, match=r"embedder with a weighted layer sum and a projector; Wav2Vec2Model"):
        export(headless, tmp_path / "headless", format="transformers")


@pytest.mark.parametrize(
    ("family", "options"),
    [("Hubert", {"feat_proj_layer_norm": False, "conv_pos_batch_norm": True, "feat_extract_norm": "group",
                 "do_stable_layer_norm": False}),
     ("WavLM", {"num_buckets": 16, "max_bucket_distance": 40, "feat_extract_norm": "group",
                "do_stable_layer_norm": False})],
)  # fmt: skip
def test_hubert_and_wavlm(tmp_path, family, options):
    base = ak.create_model(f"local-dir:{_w2v_dir(tmp_path / 'hf', family=family, **options)}")
    model = _finetuned(base, W2V_LABELS, tmp_path)
    out = export(model, tmp_path / "export", format="transformers")
    config = _check_export(model, out, W2V_CLIPS, "single_label_classification")
    assert config.architectures == [f"{family}ForSequenceClassification"]
    for key, value in options.items():
        assert getattr(config, key) == value, key
    assert json.loads((out / "preprocessor_config.json").read_text())["return_attention_mask"] is False  # group norm


# ---------------------------------------------------------------------------------------------------------------------
# What transformers cannot hold, and the destination
# ---------------------------------------------------------------------------------------------------------------------
def test_refusals_name_the_model_and_the_reason(tmp_path):
    from audiokit.layers import HeadConfig

    cnn = ak.create_model("bcresnet_1.speechcommands")
    with pytest.raises(ExportError, match=r"bcresnet_1\.speechcommands \(family bcresnet\) has no transformers class"):
        export(cnn, tmp_path / "a", format="transformers")
    mlp = ak.create_model("wav2vec2_base.librispeech", **W2V_TINY)
    mlp.reset_classifier(3, list(LABELS), head=HeadConfig(hidden=[16], activation="gelu"))
    with pytest.raises(ExportError, match=r"MLP ClassifierHead \(hidden layers \[16\], gelu\)"):
        export(mlp, tmp_path / "b", format="transformers")
    log_softmax = ak.create_model("wav2vec2_base.librispeech", **W2V_TINY)
    log_softmax.reset_classifier(3, list(LABELS), head=HeadConfig(output="log_softmax"))
    with pytest.raises(ExportError, match=r"output activation 'log_softmax' for a multiclass task has no transformers"):
        export(log_softmax, tmp_path / "c", format="transformers")
    duplicated = ak.create_model("wav2vec2_base.librispeech", num_classes=2, label_names=["x", "x"], **W2V_TINY)
    with pytest.raises(ExportError, match=r"label name\(s\) \['x'\] occur more than once"):
        export(duplicated, tmp_path / "d", format="transformers")
    folded = ak.create_model("wav2vec2_base.librispeech", num_classes=2, **W2V_TINY)
    folded.batchnorm_folded = True  # what fold_batchnorm_ marks
    with pytest.raises(ExportError, match=r"BatchNorm layers were folded"):
        export(folded, tmp_path / "e", format="transformers")
    torchaudio_norm = ak.create_model("wav2vec2_base.librispeech", num_classes=2, **W2V_TINY)
    torchaudio_norm.normalize_eps = 1e-5  # what a torchaudio bundle's checkpoint sets
    with pytest.raises(ExportError, match=r"floors the variance at 1e-05 .*Wav2Vec2FeatureExtractor's floor is 1e-07"):
        export(torchaudio_norm, tmp_path / "g", format="transformers")
    with pytest.raises(ValueError, match=r"batch_size and opset apply to the graph formats"):
        export(folded, tmp_path / "f", format="transformers", batch_size=2)
    assert list(tmp_path.iterdir()) == []


def test_a_non_empty_directory_is_replaced_only_with_overwrite(tmp_path):
    """A ready AST with a classifier (a LayerNorm-free head would be refused): the one registered, built small."""
    model = _new_head(_randomise(ak.create_model("wav2vec2_base.librispeech", **W2V_TINY)), LABELS)
    target = tmp_path / "export"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(OutputPathError, match=r"is not empty; pass overwrite=True \(--overwrite\)"):
        export(model, target, format="transformers")
    assert [p.name for p in target.iterdir()] == ["notes.txt"]
    export(model, target, format="transformers", overwrite=True)
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.safetensors", "preprocessor_config.json"]
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # no staging or old directory left beside it
    empty = tmp_path / "empty"
    empty.mkdir()
    link = tmp_path / "link"
    link.symlink_to(empty)
    assert export(model, link, format="transformers") == link  # an empty directory is taken as it is, through a link
    assert link.is_symlink() and (empty / "config.json").is_file()
    (tmp_path / "file").write_text("x")
    for bad, words in ((tmp_path / "file", "is a file"), ("-", "is a directory; give its path")):
        with pytest.raises(OutputPathError, match=words):
            export(model, bad, format="transformers")


def test_a_failed_check_writes_nothing_and_keeps_what_was_there(tmp_path):
    """The registered AST's head epsilon moves its logits by a few 1e-6: a tolerance below that refuses the export,
    after the directory was written and loaded back, and the destination is left as it was."""
    model = _new_head(_randomise(ak.create_model("ast_base.speechcommands_v2", **AST_TINY)), LABELS)
    target = tmp_path / "export"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match=r"transformers' load of ast_base\.speechcommands_v2's export differs"):
        export(model, target, format="transformers", overwrite=True, tolerance=1e-9)
    assert [p.name for p in tmp_path.iterdir()] == ["export"] and [p.name for p in target.iterdir()] == ["notes.txt"]


def test_a_linear_classifier_head_exports_as_its_linear_layer(tmp_path):
    """A ClassifierHead without hidden layers (a fine-tune config that names only the output) is one Linear."""
    from audiokit.layers import ClassifierHead, HeadConfig

    model = _randomise(ak.create_model("wav2vec2_base.superb_ks", **W2V_TINY))
    model = _new_head(model, LABELS, head=HeadConfig(output="softmax"))
    assert isinstance(model.get_classifier(), ClassifierHead)
    out = export(model, tmp_path / "export", format="transformers")
    _check_export(model, out, W2V_CLIPS, "single_label_classification")


def test_cli_export_transformers(tmp_path, capsys):
    from audiokit.cli import main

    base = ak.create_model(f"local-dir:{_w2v_dir(tmp_path / 'hf')}")
    model = _finetuned(base, W2V_LABELS, tmp_path)
    run = tmp_path / "run" / "best"
    out = tmp_path / "export"
    assert main(["export", f"local-dir:{run}", "--format", "transformers", "--output", str(out)]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    _check_export(model, out, W2V_CLIPS[:1], "single_label_classification")
    capsys.readouterr()  # transformers' own progress bars, from the check
    # Usage errors exit 2 with one line, before the model is built.
    for argv, words in (
        ([f"local-dir:{run}", "--output", str(out)], "is not empty; pass overwrite=True (--overwrite)"),
        ([f"local-dir:{run}", "--output", str(run), "--overwrite"], "holds an input"),
        ([f"local-dir:{run}", "--output", "-"], "a transformers export is a directory"),
        (["bcresnet_1.speechcommands", "--checkpoint", str(tmp_path / "none.pt"), "-o", str(tmp_path / "b")],
         "none.pt"),
    ):  # fmt: skip
        assert main(["export", *argv, "--format", "transformers"]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and words in err, err
    weights = tmp_path / "bcresnet.safetensors"
    from safetensors.torch import save_file

    save_file(ak.create_model("bcresnet_1.speechcommands").state_dict(), weights)
    assert main(["export", "bcresnet_1.speechcommands", "--checkpoint", str(weights), "--format", "transformers",
                 "-o", str(tmp_path / "b")]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "has no transformers class" in err
    assert main(["export", f"local-dir:{run}", "--format", "transformers", "-o", str(out), "--overwrite"]) == 0


# ---------------------------------------------------------------------------------------------------------------------
# Full size
# ---------------------------------------------------------------------------------------------------------------------
def _full_size(name: str, device: str = "cpu", **kwargs):
    """A registered model at its released size (transformers' initialisation), with a unit-gain classifier."""
    torch.manual_seed(0)
    model = ak.create_model(name, **kwargs)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.get_classifier().parameters():
            p.copy_(torch.randn(p.shape, generator=gen) / p.shape[-1] ** 0.5)
    return model.to(device).eval()


@pytest.mark.slow
# The export's own check runs six full-size forwards: ~2 min for AST on 2 shared cores, ~1 min for wav2vec2.
@pytest.mark.parametrize("name", ["ast_base.audioset", "wav2vec2_base.superb_ks"])
def test_full_size(tmp_path, name, caplog):
    model = _full_size(name)
    with caplog.at_level(logging.WARNING, logger="audiokit"):
        out = export(model, tmp_path / "export", format="transformers")
    clip = 0.1 * torch.randn(1, 3 * 16000, generator=torch.Generator().manual_seed(5))
    problem = "multi_label_classification" if name.startswith("ast") else "single_label_classification"
    _check_export(model, out, [clip], problem)
    assert ("becomes the blocks' 1e-06" in caplog.text) is name.startswith("ast")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_full_size_ast_is_checked_on_its_device(tmp_path):
    """The export's check runs where the model is; the directory it writes is the same (loaded here on the CPU)."""
    model = _full_size("ast_base.audioset", device="cuda")
    out = export(model, tmp_path / "export", format="transformers")
    assert next(model.parameters()).device.type == "cuda"  # the caller's model stays where it was
    clip = 0.1 * torch.randn(1, 5 * 16000, generator=torch.Generator().manual_seed(5))
    _check_export(model.cpu(), out, [clip], "multi_label_classification")
