"""CLAP zero-shot tagging against transformers' own zero-shot-audio-classification pipeline.

A tiny random ClapModel (HTS-AT with two one-block stages at the real 256 x 4 input grid, a two-layer RoBERTa), its
ClapFeatureExtractor at laion's settings and a byte-level BPE tokenizer are written by transformers'
``save_pretrained`` into a directory; audiokit loads that directory and must give the pipeline's scores, the
model's ``logits_per_audio`` and ``get_audio_features`` on the same waveform.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import audiokit as ak
from audiokit.cli import main
from audiokit.models.clap import CLAP, model_kwargs_from_transformers

pytest.importorskip("transformers")

LABELS = ["dog barking", "siren", "rain"]
RATE = 48_000
TEXT_CONFIG = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37,
                   max_position_embeddings=64)  # fmt: skip
AUDIO_CONFIG = dict(depths=[1, 1], num_attention_heads=[2, 2], patch_embeds_hidden_size=16, hidden_size=32,
                    window_size=8, spec_size=256)  # fmt: skip
# laion/clap-htsat-unfused's extractor settings (the others are ClapFeatureExtractor's defaults).
EXTRACTOR = dict(truncation="rand_trunc", padding="repeatpad", frequency_min=50, frequency_max=14_000)


def _tokenizer():
    from tokenizers.pre_tokenizers import ByteLevel
    from transformers import RobertaTokenizer

    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    merges = [("Ġ", "s"), ("o", "u"), ("ou", "n"), ("Ġs", "oun"), ("Ġsoun", "d"), ("i", "s")]
    tokens = specials + sorted(ByteLevel.alphabet()) + ["".join(m) for m in merges]
    return RobertaTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=merges)


def _write_clap_dir(path: Path, seed: int = 0, processor: bool = False) -> Path:
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, ClapProcessor

    tokenizer = _tokenizer()
    torch.manual_seed(seed)
    config = ClapConfig(text_config={**TEXT_CONFIG, "vocab_size": len(tokenizer)}, audio_config=AUDIO_CONFIG,
                        projection_dim=24)  # fmt: skip
    model = ClapModel(config).eval()
    with torch.no_grad():
        # Informative random weights. As created, the text tower's first-token output barely depends on the text
        # (the label embeddings' cosines are 0.9999) and the BatchNorm expects inputs of mean 0, variance 1: larger
        # weights, a higher logit scale and decibel-range statistics make scores that differ between labels and
        # clips.
        for name, p in model.named_parameters():
            if p.dim() >= 2 and name.startswith(("text_model.", "audio_model.")) and "embeddings" not in name:
                p.mul_(4.0)
        model.logit_scale_a.fill_(math.log(60.0))
        norm = model.audio_model.audio_encoder.batch_norm
        norm.running_mean.fill_(-45.0)
        norm.running_var.fill_(300.0)
    model.save_pretrained(path)
    extractor = ClapFeatureExtractor(**EXTRACTOR)
    if processor:  # transformers 5 writes a processor as processor_config.json (the extractor inside)
        ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(path)
    else:  # the layout of the Hub repositories: preprocessor_config.json and the tokenizer's own files
        extractor.save_pretrained(path)
        tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def clap_dir(tmp_path_factory) -> Path:
    return _write_clap_dir(tmp_path_factory.mktemp("clap") / "tiny")


@pytest.fixture(scope="module")
def pipe(clap_dir):
    from transformers import pipeline

    return pipeline("zero-shot-audio-classification", model=str(clap_dir), device="cpu")


@pytest.fixture(scope="module")
def model(clap_dir):
    return ak.create_model(f"local-dir:{clap_dir}", label_names=LABELS).eval()


def _clip(seconds: float, seed: int, level: float = 0.1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    tone = np.sin(2 * np.pi * (300 + 400 * seed) * t)  # a different spectrum per seed, so the scores differ
    return (level * (0.5 * rng.standard_normal(t.size) + tone)).astype(np.float32)


def _pipeline_scores(pipe, wave: np.ndarray, labels=LABELS) -> np.ndarray:
    ranked = {r["label"]: r["score"] for r in pipe(wave, candidate_labels=list(labels))}
    return np.array([ranked[label] for label in labels])


@pytest.fixture(scope="module")
def hf_parts(clap_dir):
    from transformers import AutoTokenizer, ClapFeatureExtractor, ClapModel

    model = ClapModel.from_pretrained(clap_dir).eval()
    return model, ClapFeatureExtractor.from_pretrained(clap_dir), AutoTokenizer.from_pretrained(clap_dir)


def _transformers_outputs(hf_parts, wave: np.ndarray):
    """The extractor + ClapModel forward, as the pipeline runs them: (logits_per_audio, get_audio_features)."""
    hf, extractor, tokenizer = hf_parts
    features = extractor([wave], sampling_rate=RATE, return_tensors="pt")
    audio = {"input_features": features["input_features"].float(), "is_longer": features["is_longer"]}
    text = tokenizer([f"This is a sound of {x}." for x in LABELS], padding=True, return_tensors="pt")
    with torch.no_grad():
        return hf(**audio, **text).logits_per_audio[0], hf.get_audio_features(**audio).pooler_output[0]


@pytest.mark.parametrize("seconds", [3.0, 10.0])
def test_scores_equal_the_pipeline(model, pipe, hf_parts, seconds):
    wave = _clip(seconds, seed=1)
    ours = model.predict_proba(torch.from_numpy(wave)[None])[0].numpy()
    theirs = _pipeline_scores(pipe, wave)
    assert ours.max() - ours.min() > 0.1  # the labels are told apart: the comparison could fail
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)
    logits, embedding = _transformers_outputs(hf_parts, wave)
    with torch.no_grad():
        torch.testing.assert_close(model(torch.from_numpy(wave)[None])[0], logits, atol=1e-4, rtol=0)
        torch.testing.assert_close(model.embed(torch.from_numpy(wave)[None])[0], embedding, atol=1e-5, rtol=0)


def test_a_batch_scores_each_clip_as_the_pipeline_alone(model, pipe):
    waves = [_clip(3.0, seed=s, level=lv) for s, lv in ((0, 0.05), (1, 0.1), (2, 0.3))]
    ours = model.predict_proba(torch.from_numpy(np.stack(waves))).numpy()
    theirs = np.stack([_pipeline_scores(pipe, w) for w in waves])
    assert np.abs(theirs[0] - theirs[2]).max() > 1e-2
    np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=0)


def test_short_clips_are_repeated_as_the_extractor_does(model, pipe):
    wave = _clip(0.7, seed=2)  # 480000 // 33600 = 14 repetitions, then zeros
    np.testing.assert_allclose(
        model.predict_proba(torch.from_numpy(wave)[None])[0].numpy(), _pipeline_scores(pipe, wave), atol=1e-5, rtol=0
    )


def test_contract_and_config_round_trip(model, clap_dir):
    from transformers import ClapConfig

    assert model.label_names == tuple(LABELS) and model.num_classes == 3 and model.task == "multiclass"
    assert model.sample_rate == RATE and model.max_samples == 10 * RATE and model.num_features == 24
    wave = torch.from_numpy(_clip(2.0, seed=0))[None]
    with torch.no_grad():
        torch.testing.assert_close(model.get_classifier()(model.embed(wave)), model(wave))
        torch.testing.assert_close(model.predict_proba(wave), torch.softmax(model(wave), -1))
    # The family's parser on transformers' own config class: the model's ClapConfig equals the directory's.
    theirs = ClapConfig.from_pretrained(clap_dir)
    kwargs = model_kwargs_from_transformers(theirs, with_head=False)
    assert json.loads(json.dumps(kwargs)) == kwargs  # recorded in model_kwargs: JSON as it is
    ignore = {"transformers_version", "architectures", "dtype", "_name_or_path"}
    ours = {k: v for k, v in model.config.to_dict().items() if k not in ignore}
    assert ours == {k: v for k, v in theirs.to_dict().items() if k not in ignore}


def test_set_labels_recomputes_the_head_and_round_trips(clap_dir, pipe, tmp_path):
    net = ak.create_model(f"local-dir:{clap_dir}").eval()
    assert net.num_classes == 0
    with pytest.raises(ValueError, match="use embed"):
        net.predict_proba(torch.zeros(1, RATE))
    wave = _clip(4.0, seed=3)
    other = ["engine", "birds singing"]
    net.set_labels(other)
    np.testing.assert_allclose(net.predict_proba(torch.from_numpy(wave)[None])[0].numpy(),
                               _pipeline_scores(pipe, wave, other), atol=1e-5, rtol=0)  # fmt: skip
    net.set_labels(LABELS, hypothesis_template="{}")
    ranked = {r["label"]: r["score"] for r in pipe(wave, candidate_labels=LABELS, hypothesis_template="{}")}
    np.testing.assert_allclose(net.predict_proba(torch.from_numpy(wave)[None])[0].numpy(),
                               [ranked[x] for x in LABELS], atol=1e-5, rtol=0)  # fmt: skip
    net.save_pretrained(tmp_path / "saved")
    again = ak.create_model(f"local-dir:{tmp_path / 'saved'}").eval()
    assert again.label_names == tuple(LABELS) and again.tokenizer_dir == str((tmp_path / "saved/tokenizer").resolve())
    with torch.no_grad():
        assert torch.equal(again(torch.from_numpy(wave)[None]), net(torch.from_numpy(wave)[None]))
    again.set_labels(other)  # with the tokenizer saved beside it
    np.testing.assert_allclose(again.predict_proba(torch.from_numpy(wave)[None])[0].numpy(),
                               _pipeline_scores(pipe, wave, other), atol=1e-5, rtol=0)  # fmt: skip


def test_family_name_with_the_directory_and_processor_layout(tmp_path, pipe, clap_dir):
    # A directory saved as transformers 5 saves a ClapProcessor (processor_config.json), same weights as clap_dir.
    other = _write_clap_dir(tmp_path / "processor", processor=True)
    assert (other / "processor_config.json").is_file() and not (other / "preprocessor_config.json").exists()
    net = ak.create_model("clap_htsat_unfused.laion", checkpoint_path=other, label_names=LABELS).eval()
    wave = _clip(3.0, seed=4)
    np.testing.assert_allclose(net.predict_proba(torch.from_numpy(wave)[None])[0].numpy(),
                               _pipeline_scores(pipe, wave), atol=1e-5, rtol=0)  # fmt: skip


def test_tag_windows_long_files_as_the_pipeline_scores_each_window(clap_dir, pipe, tmp_path):
    waves = {"short.wav": _clip(3.0, seed=1), "long.wav": _clip(24.0, seed=2)}
    for name, wave in waves.items():
        sf.write(tmp_path / name, wave, RATE, subtype="FLOAT")  # float samples: read back exactly
    records = ak.tag([tmp_path / "short.wav", tmp_path / "long.wav"], f"local-dir:{clap_dir}", labels=LABELS,
                     top_k=0, num_workers=0, device="cpu")  # fmt: skip
    short, long = records
    assert short["error"] is None and long["error"] is None
    scores = {x["label"]: x["score"] for x in short["labels"]}
    np.testing.assert_allclose([scores[x] for x in LABELS], _pipeline_scores(pipe, waves["short.wav"]), atol=1e-5)
    # 10 s windows, the last one ending where the file ends.
    assert [(w["start"], w["end"]) for w in long["windows"]] == [(0.0, 10.0), (10.0, 20.0), (14.0, 24.0)]
    for window in long["windows"]:
        piece = waves["long.wav"][round(window["start"] * RATE) : round(window["end"] * RATE)]
        got = {x["label"]: x["score"] for x in window["labels"]}
        np.testing.assert_allclose([got[x] for x in LABELS], _pipeline_scores(pipe, piece), atol=1e-5)


def test_embed_gives_the_audio_features(clap_dir, hf_parts, tmp_path):
    wave = _clip(3.0, seed=1)
    sf.write(tmp_path / "clip.wav", wave, RATE, subtype="FLOAT")
    result = ak.embed(tmp_path / "clip.wav", f"local-dir:{clap_dir}", num_workers=0, device="cpu")
    _, expected = _transformers_outputs(hf_parts, wave)
    assert result.vectors.shape == (1, 24)
    np.testing.assert_allclose(result.vectors[0], expected.numpy(), atol=1e-5, rtol=0)


def test_cli_tag_with_labels(clap_dir, pipe, tmp_path, capsys):
    wave = _clip(3.0, seed=1)
    sf.write(tmp_path / "clip.wav", wave, RATE, subtype="FLOAT")
    args = ["tag", str(tmp_path / "clip.wav"), "--model", f"local-dir:{clap_dir}", "--format", "json", "--top-k",
            "0", "--num-workers", "0", "--device", "cpu", "-q"]  # fmt: skip
    assert main([*args, "--labels", " dog barking, siren,rain "]) == 0
    record = json.loads(capsys.readouterr().out)[0]
    scores = {x["label"]: x["score"] for x in record["labels"]}
    assert list(scores) == sorted(scores, key=scores.get, reverse=True) and set(scores) == set(LABELS)
    np.testing.assert_allclose([scores[x] for x in LABELS], _pipeline_scores(pipe, wave), atol=1e-5)

    (tmp_path / "labels.txt").write_text("dog barking\n\nsiren\nrain\n")
    assert main([*args, "--labels-file", str(tmp_path / "labels.txt")]) == 0
    again = json.loads(capsys.readouterr().out)[0]
    assert {x["label"]: x["score"] for x in again["labels"]} == scores


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--labels", ""], "the label list is empty"),
        (["--labels", "dog,,rain"], "label 1 is blank"),
        (["--labels", "dog,dog"], "'dog' is given twice"),
        ([], "zero-shot model: give its labels"),
        (["--labels-file", "/nonexistent/labels.txt"], "--labels-file /nonexistent/labels.txt"),
    ],
)
def test_cli_label_errors_are_one_line(clap_dir, tmp_path, capsys, extra, message):
    sf.write(tmp_path / "clip.wav", _clip(1.0, seed=0), RATE, subtype="FLOAT")
    code = main(["tag", str(tmp_path / "clip.wav"), "--model", f"local-dir:{clap_dir}", "--num-workers", "0", *extra])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err


def test_labels_for_a_model_with_fixed_classes_are_refused(tmp_path, capsys):
    sf.write(tmp_path / "clip.wav", _clip(1.0, seed=0), RATE, subtype="FLOAT")
    # Refused before any weights are looked for (there are none offline).
    assert main(["tag", str(tmp_path / "clip.wav"), "--model", "efficientat_mn04.audioset", "--labels", "a,b"]) == 2
    err = capsys.readouterr().err.strip()
    assert "efficientat_mn04.audioset has a fixed set of classes" in err and len(err.splitlines()) == 1, err
    with pytest.raises(ValueError, match="takes no label texts"):
        ak.tag(tmp_path / "clip.wav", ak.create_model("efficientat_mn01"), labels=["a"])


def test_a_directory_without_tokenizer_is_refused(clap_dir, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors", "preprocessor_config.json"):
        shutil.copy(clap_dir / name, bare / name)
    with pytest.raises(FileNotFoundError, match=r"bare: no tokenizer files \(tokenizer.json, or vocab.json and "):
        ak.create_model(f"local-dir:{bare}")


def test_errors_of_set_labels(model):
    for bad, kind, message in [
        ([], ValueError, "empty"),
        ("dog", TypeError, "list of strings"),
        (["dog", 3], TypeError, "label 1 is a int"),
        (["x" * 200], ValueError, "tokens; the text encoder takes 62"),
    ]:
        with pytest.raises(kind, match=message):
            model.set_labels(bad)
    with pytest.raises(ValueError, match="hypothesis_template"):
        model.set_labels(["dog"], hypothesis_template="no placeholder")
    assert model.label_names == tuple(LABELS)  # a refused call leaves the labels as they were


def test_the_registered_model_without_its_directory_has_no_tokenizer():
    net = ak.create_model("clap_htsat_unfused.laion", audio_config=AUDIO_CONFIG, text_config=TEXT_CONFIG,
                          projection_dim=24)  # fmt: skip
    assert isinstance(net, CLAP) and net.num_classes == 0
    with pytest.raises(ValueError, match="has no tokenizer, so label texts cannot be encoded"):
        net.set_labels(["dog"])


def test_hf_hub_name_loads_from_the_cache(clap_dir, tmp_path, monkeypatch, pipe):
    from huggingface_hub import constants, snapshot_download

    cache = tmp_path / "hub"
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    # The layout huggingface_hub writes: files as blobs, the snapshot's entries links to them, refs/main the commit.
    repo, commit = cache / "models--audiokit-test--clap-tiny", "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for file in clap_dir.iterdir():
        blob = repo / "blobs" / f"blob-{file.name}"
        shutil.copy(file, blob)
        (snapshot / file.name).symlink_to(Path("..", "..", "blobs", blob.name))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    assert Path(snapshot_download("audiokit-test/clap-tiny", local_files_only=True)) == snapshot
    net = ak.create_model("hf-hub:audiokit-test/clap-tiny", label_names=LABELS).eval()
    wave = _clip(3.0, seed=1)
    np.testing.assert_allclose(net.predict_proba(torch.from_numpy(wave)[None])[0].numpy(),
                               _pipeline_scores(pipe, wave), atol=1e-5, rtol=0)  # fmt: skip


def test_frames_are_the_audio_encoders_time_steps(model, hf_parts):
    # transformers' own audio tower on the extractor's input: its last_hidden_state (B, C, rows, steps) averaged over
    # the rows. A 10 s clip fills the input; a 3 s one is repeated by the extractor, and only the steps that start
    # inside the clip are given. (The released model has 32 steps, 0.3125 s apart; this two-stage one 128.)
    hf, extractor, _ = hf_parts
    for seconds in (10.0, 3.0):
        wave = _clip(seconds, seed=2)
        features = extractor([wave], sampling_rate=RATE, return_tensors="pt")
        with torch.no_grad():
            out = hf.audio_model(input_features=features["input_features"].float(), is_longer=features["is_longer"])
            frames = model.embed_frames(torch.from_numpy(wave)[None])
        total = out.last_hidden_state.shape[-1]
        hop = 10.0 / total
        assert model.frame_hop_seconds == pytest.approx(hop)
        steps = math.ceil(seconds / hop)
        expected = out.last_hidden_state.double().mean(dim=2).transpose(1, 2)[:, :steps]
        assert frames.embeddings.shape == expected.shape
        torch.testing.assert_close(frames.embeddings.double(), expected, atol=1e-5, rtol=0)
        torch.testing.assert_close(frames.times, (torch.arange(steps, dtype=torch.float64) + 0.5) * hop)
        if seconds == 10.0:  # all the steps: their mean is the pooled output
            torch.testing.assert_close(frames.embeddings.mean(dim=1), out.pooler_output, atol=1e-5, rtol=0)
            assert model.embedding_layers["pooled"] == out.pooler_output.shape[1]
            with torch.no_grad():
                pooled = model.embed(torch.from_numpy(wave)[None], layer="pooled")
            torch.testing.assert_close(pooled, out.pooler_output, atol=1e-5, rtol=0)
