"""``hf-hub:ORG/NAME[@REVISION]`` names, resolved through huggingface_hub's own cache.

Each test lays out a hub cache exactly as huggingface_hub writes it (``models--ORG--NAME/{blobs, refs, snapshots}``,
the snapshot files being relative symlinks to content-addressed blobs), checks that huggingface_hub itself resolves
it, and compares audiokit's model with transformers' own feature extractor + model on the same directory.
No test reaches the network: the suite runs offline (AUDIOKIT_OFFLINE, set by conftest, and HF_HUB_OFFLINE here).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

import audiokit as ak
from audiokit._hf_hub import HubModelUnavailableError, parse_hub_name
from audiokit._hub import CheckpointLoadError
from audiokit._weights import CheckpointMismatchError

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

REPO = "audiokit-test/ast-tiny"
COMMIT_OLD = "1" * 8 + "a" * 32
COMMIT_NEW = "2" * 8 + "b" * 32
LABELS = ("dog", "rain", "siren")
AST_CONFIG = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, patch_size=8,
    frequency_stride=6, time_stride=5, max_length=40, num_mel_bins=24, qkv_bias=False,
)  # fmt: skip
AST_EXTRACTOR = dict(num_mel_bins=24, max_length=40, mean=-3.5, std=2.5)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """HF_HOME in tmp, offline. huggingface_hub reads its cache path and offline flag into constants when it is
    imported (already done by other tests), so those are set as well as the environment."""
    from huggingface_hub import constants

    home = tmp_path / "hf_home"
    cache = home / "hub"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def _blob_id(name: str, data: bytes) -> str:
    """The blob name huggingface_hub gives a file: the sha256 of an LFS file, the git blob sha1 of any other."""
    if name.endswith((".safetensors", ".bin")):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _publish(cache: Path, repo_id: str, directory: Path, commit: str, refs: tuple[str, ...] = ("main",)) -> Path:
    """Put ``directory``'s files into the cache as snapshot ``commit`` of ``repo_id``, with ``refs`` pointing at it."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snapshot.mkdir(parents=True)
    for file in sorted(directory.iterdir()):
        data = file.read_bytes()
        blob = repo / "blobs" / _blob_id(file.name, data)
        blob.write_bytes(data)
        (snapshot / file.name).symlink_to(os.path.relpath(blob, snapshot))
    for ref in refs:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / ref).write_text(commit)  # no newline, as huggingface_hub writes it
    return snapshot


def _randomise(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=gen))
            elif p.dim() >= 2:
                p.copy_(p * 3.0)


def _ast_dir(path: Path, seed: int, **config) -> Path:
    from transformers import ASTConfig, ASTFeatureExtractor, ASTForAudioClassification

    torch.manual_seed(seed)
    hf_config = ASTConfig(**{**AST_CONFIG, **config}, id2label=dict(enumerate(LABELS)))
    model = ASTForAudioClassification(hf_config)
    _randomise(model, seed)
    model.save_pretrained(path)
    ASTFeatureExtractor(**AST_EXTRACTOR).save_pretrained(path)
    return path


def _wave(seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.tensor([[0.1], [0.6]]) * torch.randn(2, 6400, generator=gen)


def _reference(directory: Path, wave: torch.Tensor) -> torch.Tensor:
    """transformers' own extractor + model, one clip at a time as its pipeline runs them."""
    from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

    fe = AutoFeatureExtractor.from_pretrained(directory)
    model = AutoModelForAudioClassification.from_pretrained(directory).eval()
    with torch.no_grad():
        return torch.cat([model(**fe(c.numpy(), sampling_rate=16000, return_tensors="pt")).logits for c in wave])


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    """Two releases of one tiny AST (different weights and layer_norm_eps), as save_pretrained writes them."""
    root = tmp_path_factory.mktemp("releases")
    return {
        COMMIT_OLD: _ast_dir(root / "old", seed=1, layer_norm_eps=1e-3),
        COMMIT_NEW: _ast_dir(root / "new", seed=2, layer_norm_eps=1e-12),
    }


@pytest.fixture
def published(hub_cache, releases):
    """REPO in the cache: the old commit under the tag v1, the new one on main."""
    _publish(hub_cache, REPO, releases[COMMIT_OLD], COMMIT_OLD, refs=("v1",))
    _publish(hub_cache, REPO, releases[COMMIT_NEW], COMMIT_NEW, refs=("main",))
    return hub_cache


def test_huggingface_hub_itself_resolves_the_cache_layout(published):
    from huggingface_hub import snapshot_download, try_to_load_from_cache

    repo = published / "models--audiokit-test--ast-tiny"
    assert Path(snapshot_download(REPO, local_files_only=True)) == repo / "snapshots" / COMMIT_NEW
    assert Path(snapshot_download(REPO, revision="v1", local_files_only=True)) == repo / "snapshots" / COMMIT_OLD
    cached = try_to_load_from_cache(REPO, "model.safetensors", revision="v1")
    assert Path(cached) == repo / "snapshots" / COMMIT_OLD / "model.safetensors"
    assert Path(cached).resolve().parent == (repo / "blobs").resolve()


@pytest.mark.parametrize(
    ("suffix", "commit"), [("", COMMIT_NEW), ("@main", COMMIT_NEW), ("@v1", COMMIT_OLD), (f"@{COMMIT_OLD}", COMMIT_OLD)]
)
def test_hub_name_gives_transformers_logits_at_each_revision(published, releases, suffix, commit):
    model = ak.create_model(f"hf-hub:{REPO}{suffix}").eval()
    wave = _wave()
    with torch.no_grad():
        torch.testing.assert_close(model(wave), _reference(releases[commit], wave), atol=1e-4, rtol=0)
    assert model.label_names == LABELS
    assert model.pretrained_cfg.hf_hub_id == REPO


def test_family_name_with_hub_checkpoint(published, releases):
    model = ak.create_model("ast_base.audioset", checkpoint_path=f"hf-hub:{REPO}@v1").eval()
    wave = _wave(seed=3)
    with torch.no_grad():
        torch.testing.assert_close(model(wave), _reference(releases[COMMIT_OLD], wave), atol=1e-4, rtol=0)
    assert model.label_names == LABELS


def test_cli_tag_takes_a_hub_name(published, releases, make_wav, capsys):
    from audiokit.cli import main

    wav = make_wav("clip.wav", 0.4)
    code = main(["tag", str(wav), "--model", f"hf-hub:{REPO}", "--format", "json", "--top-k", "3",
                 "--num-workers", "0"])  # fmt: skip
    out, _ = capsys.readouterr()
    assert code == 0
    (record,) = json.loads(out)
    model = ak.create_model(f"local-dir:{releases[COMMIT_NEW]}").eval()
    probs = model.predict_proba(ak.load_audio(wav, sample_rate=16000)[None])[0]
    for entry in record["labels"]:
        assert entry["score"] == pytest.approx(float(probs[LABELS.index(entry["label"])]), abs=1e-5)


def test_finetune_config_accepts_a_hub_name():
    from audiokit.train.config import _check_model_name

    _check_model_name(f"hf-hub:{REPO}@v1")  # checked when the model is built, like local-dir:


def test_pickle_weights_when_the_repository_has_no_safetensors(hub_cache, releases, tmp_path):
    from safetensors.torch import load_file

    directory = tmp_path / "bin"
    directory.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        (directory / name).write_bytes((releases[COMMIT_OLD] / name).read_bytes())
    torch.save(load_file(releases[COMMIT_OLD] / "model.safetensors"), directory / "pytorch_model.bin")
    _publish(hub_cache, "audiokit-test/ast-bin", directory, COMMIT_OLD)
    model = ak.create_model("hf-hub:audiokit-test/ast-bin").eval()
    wave = _wave(seed=4)
    with torch.no_grad():
        torch.testing.assert_close(model(wave), _reference(releases[COMMIT_OLD], wave), atol=1e-4, rtol=0)


# -- errors: one line each, naming the repository and the revision ----------------------------------------------------
def _one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message, message
    return message


def test_offline_without_the_repository_in_the_cache(hub_cache):
    with pytest.raises(HubModelUnavailableError) as excinfo:
        ak.create_model("hf-hub:audiokit-test/not-cached")
    message = _one_line(excinfo)
    for word in ("audiokit-test/not-cached", "'main'", "offline", str(hub_cache)):
        assert word in message, message


def test_offline_with_an_unknown_revision(published):
    with pytest.raises(HubModelUnavailableError) as excinfo:
        ak.create_model(f"hf-hub:{REPO}@v9")
    message = _one_line(excinfo)
    assert REPO in message and "'v9'" in message, message
    with pytest.raises(HubModelUnavailableError, match="c" * 40):
        ak.create_model(f"hf-hub:{REPO}@{'c' * 40}")


def test_cli_reports_an_uncached_repository_in_one_line(hub_cache, make_wav, capsys):
    from audiokit.cli import main

    code = main(["tag", str(make_wav("clip.wav", 0.4)), "--model", "hf-hub:audiokit-test/not-cached@v2"])
    _, err = capsys.readouterr()
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "audiokit-test/not-cached" in err and "'v2'" in err, err


def test_config_without_weights(hub_cache, releases, tmp_path):
    directory = tmp_path / "noweights"
    directory.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        (directory / name).write_bytes((releases[COMMIT_NEW] / name).read_bytes())
    _publish(hub_cache, "audiokit-test/no-weights", directory, COMMIT_NEW)
    with pytest.raises(CheckpointLoadError) as excinfo:
        ak.create_model("hf-hub:audiokit-test/no-weights")
    message = _one_line(excinfo)
    assert "audiokit-test/no-weights@main" in message and "no weights" in message, message


def test_weights_that_contradict_the_config(hub_cache, releases, tmp_path):
    directory = tmp_path / "contradiction"
    directory.mkdir()
    config = json.loads((releases[COMMIT_NEW] / "config.json").read_text())
    config["intermediate_size"] = 48  # the weights were trained with 37
    (directory / "config.json").write_text(json.dumps(config))
    for name in ("preprocessor_config.json", "model.safetensors"):
        (directory / name).write_bytes((releases[COMMIT_NEW] / name).read_bytes())
    _publish(hub_cache, "audiokit-test/contradiction", directory, COMMIT_NEW)
    with pytest.raises(CheckpointMismatchError) as excinfo:
        ak.create_model("hf-hub:audiokit-test/contradiction")
    message = _one_line(excinfo)
    assert "models--audiokit-test--contradiction" in message and "model.safetensors does not fit" in message, message
    assert "mlp.fc1.weight (37, 32) vs model (48, 32)" in message, message


def test_remote_code_is_refused(hub_cache, releases, tmp_path):
    directory = tmp_path / "remote"
    directory.mkdir()
    config = json.loads((releases[COMMIT_NEW] / "config.json").read_text())
    config["auto_map"] = {"AutoModelForAudioClassification": "modeling_evil.EvilModel"}
    (directory / "config.json").write_text(json.dumps(config))
    (directory / "modeling_evil.py").write_text("raise SystemExit('ran the repository code')\n")
    for name in ("preprocessor_config.json", "model.safetensors"):
        (directory / name).write_bytes((releases[COMMIT_NEW] / name).read_bytes())
    _publish(hub_cache, "audiokit-test/remote-code", directory, COMMIT_NEW)
    with pytest.raises(ValueError, match="trust_remote_code is never enabled") as excinfo:
        ak.create_model("hf-hub:audiokit-test/remote-code")
    _one_line(excinfo)


@pytest.mark.parametrize("name", ["hf-hub:", "hf-hub:a//b", "hf-hub:org/name@", "hf-hub:org/na me"])
def test_malformed_names(name):
    with pytest.raises(ValueError, match="hf-hub:") as excinfo:
        parse_hub_name(name)
    _one_line(excinfo)


def test_name_parsing():
    assert parse_hub_name("hf-hub:MIT/ast-finetuned-audioset-10-10-0.4593") == (
        "MIT/ast-finetuned-audioset-10-10-0.4593",
        None,
    )
    assert parse_hub_name("hf-hub:org/name@refs/pr/3") == ("org/name", "refs/pr/3")
