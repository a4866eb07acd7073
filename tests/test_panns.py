"""Tests for the PANNs family (audiokit.models.panns).

The original checkpoints cannot be downloaded here, so these tests write files in the exact original layout
(``{'model': state_dict, 'iteration': ...}`` with the original key names, shapes and frozen frontend tensors) from the
published specification, fill them with random but batch-norm-realistic weights, load them through
``audiokit.create_model(..., checkpoint_path=...)`` and compare against an independent forward pass written below
with ``torch.nn.functional`` only. The frontend matrices are built here from numpy/scipy/librosa, not from audiokit.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import librosa
import numpy as np
import pytest
import scipy.signal
import torch
import torch.nn.functional as F

import audiokit
from audiokit import CheckpointMismatchError

# ---------------------------------------------------------------------------------------------------------------------
# The original layout, written from the published description (independent of audiokit.models.panns)
# ---------------------------------------------------------------------------------------------------------------------
# Trainable parameter counts published for the original models (frozen STFT/mel tensors excluded).
PUBLISHED_PARAMS = {
    "panns_cnn6": 4_837_455,
    "panns_cnn10": 5_219_279,
    "panns_cnn14": 80_753_615,
    "panns_cnn14_16k": 80_753_615,
    "panns_mobilenetv1": 4_796_303,
    "panns_wavegram_logmel_cnn14": 81_065_487,
    "panns_cnn14_decisionlevelmax": 80_753_615,  # Cnn14's layout; fc1 and fc_audioset are applied per segment
}
# sample_rate -> (n_fft, hop, f_max); every model uses 64 mel bins from 50 Hz.
FRONTENDS = {32000: (1024, 320, 14000.0), 16000: (512, 160, 8000.0)}
SAMPLE_RATE = {name: 16000 if name.endswith("_16k") else 32000 for name in PUBLISHED_PARAMS}
CNN_WIDTHS = {
    "panns_cnn6": (64, 128, 256, 512),
    "panns_cnn10": (64, 128, 256, 512),
    "panns_cnn14": (64, 128, 256, 512, 1024, 2048),
    "panns_cnn14_16k": (64, 128, 256, 512, 1024, 2048),
    "panns_cnn14_decisionlevelmax": (64, 128, 256, 512, 1024, 2048),
}
MOBILENET_PLAN = [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 512, 2)]
MOBILENET_PLAN += [(512, 512, 1)] * 5 + [(512, 1024, 2), (1024, 1024, 1)]
FRONTEND_KEYS = (
    "spectrogram_extractor.stft.conv_real.weight",
    "spectrogram_extractor.stft.conv_imag.weight",
    "logmel_extractor.melW",
)
BN_STATS = ("running_mean", "running_var", "num_batches_tracked")


def _bn(prefix: str, n: int) -> list[tuple[str, tuple[int, ...]]]:
    return [(f"{prefix}.{s}", (n,)) for s in ("weight", "bias", "running_mean", "running_var")] + [
        (f"{prefix}.num_batches_tracked", ())
    ]


def _conv_block(prefix: str, cin: int, cout: int, k: int = 3, double: bool = True) -> list[tuple[str, tuple]]:
    keys = [(f"{prefix}.conv1.weight", (cout, cin, k, k))]
    if double:
        keys.append((f"{prefix}.conv2.weight", (cout, cout, k, k)))
    keys += _bn(f"{prefix}.bn1", cout)
    if double:
        keys += _bn(f"{prefix}.bn2", cout)
    return keys


def upstream_layout(name: str) -> list[tuple[str, tuple[int, ...]]]:
    """(key, shape) of every tensor in the original checkpoint of architecture ``name``, in the original order."""
    n_fft = FRONTENDS[SAMPLE_RATE[name]][0]
    n_freqs = n_fft // 2 + 1
    keys: list[tuple[str, tuple[int, ...]]] = []
    if name == "panns_wavegram_logmel_cnn14":
        keys.append(("pre_conv0.weight", (64, 1, 11)))
        keys += _bn("pre_bn0", 64)
        for i, (cin, cout) in enumerate([(64, 64), (64, 128), (128, 128)], start=1):
            keys += [(f"pre_block{i}.conv1.weight", (cout, cin, 3)), (f"pre_block{i}.conv2.weight", (cout, cout, 3))]
            keys += _bn(f"pre_block{i}.bn1", cout) + _bn(f"pre_block{i}.bn2", cout)
        keys += _conv_block("pre_block4", 4, 64)
    keys += [(FRONTEND_KEYS[0], (n_freqs, 1, n_fft)), (FRONTEND_KEYS[1], (n_freqs, 1, n_fft))]
    keys += [(FRONTEND_KEYS[2], (n_freqs, 64))]
    keys += _bn("bn0", 64)
    if name in CNN_WIDTHS:
        cin = 1
        for i, cout in enumerate(CNN_WIDTHS[name], start=1):
            keys += _conv_block(f"conv_block{i}", cin, cout, k=5 if name == "panns_cnn6" else 3,
                                double=name != "panns_cnn6")  # fmt: skip
            cin = cout
    elif name == "panns_mobilenetv1":
        keys += [("features.0.0.weight", (32, 1, 3, 3)), *_bn("features.0.2", 32)]
        for i, (cin, cout, _) in enumerate(MOBILENET_PLAN, start=1):
            keys += [(f"features.{i}.0.weight", (cin, 1, 3, 3)), *_bn(f"features.{i}.2", cin)]
            keys += [(f"features.{i}.4.weight", (cout, cin, 1, 1)), *_bn(f"features.{i}.5", cout)]
        cout = 1024
    else:  # wavegram: Cnn14 body whose second block takes log-mel (64) + Wavegram (64) channels
        for i, (cin, cout) in enumerate(
            [(1, 64), (128, 128), (128, 256), (256, 512), (512, 1024), (1024, 2048)], start=1
        ):
            keys += _conv_block(f"conv_block{i}", cin, cout)
    keys += [("fc1.weight", (cout, cout)), ("fc1.bias", (cout,))]
    keys += [("fc_audioset.weight", (527, cout)), ("fc_audioset.bias", (527,))]
    return keys


def trainable_count(layout: list[tuple[str, tuple[int, ...]]]) -> int:
    return sum(math.prod(shape) for key, shape in layout if key not in FRONTEND_KEYS and not key.endswith(BN_STATS))


# ---------------------------------------------------------------------------------------------------------------------
# Independent frontend tensors and random weights
# ---------------------------------------------------------------------------------------------------------------------
def reference_frontend(sample_rate: int) -> dict[str, torch.Tensor]:
    """The frozen frontend tensors: windowed DFT (complex128, rounded once to float32) and the Slaney mel matrix."""
    n_fft, _, f_max = FRONTENDS[sample_rate]
    window = scipy.signal.get_window("hann", n_fft, fftbins=True)  # periodic
    n = np.arange(n_fft)
    k = np.arange(n_fft // 2 + 1)[:, None]
    basis = np.exp(-2j * np.pi * k * n / n_fft) * window
    mel = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=64, fmin=50.0, fmax=f_max).T
    return {
        FRONTEND_KEYS[0]: torch.from_numpy(basis.real.astype(np.float32))[:, None, :],
        FRONTEND_KEYS[1]: torch.from_numpy(basis.imag.astype(np.float32))[:, None, :],
        FRONTEND_KEYS[2]: torch.from_numpy(np.ascontiguousarray(mel, dtype=np.float32)),
    }


def random_upstream_state(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict in the original layout with Kaiming-scaled weights and plausible batch-norm statistics."""
    gen = torch.Generator().manual_seed(seed)
    state = reference_frontend(SAMPLE_RATE[name])
    for key, shape in upstream_layout(name):
        if key in state:
            continue
        if key.endswith("num_batches_tracked"):
            value = torch.tensor(1000)
        elif key.endswith("running_mean"):
            value = 0.1 * torch.randn(shape, generator=gen)
        elif key.endswith("running_var"):
            value = 0.5 + torch.rand(shape, generator=gen)
        elif len(shape) >= 2:  # conv / linear weight
            fan_in = math.prod(shape[1:])
            value = torch.randn(shape, generator=gen).mul_(math.sqrt(2.0 / fan_in))
        elif key.startswith("fc"):
            value = torch.randn(shape, generator=gen).mul_(0.05)
        elif key.endswith("weight"):  # batch-norm scale
            value = torch.randn(shape, generator=gen).mul_(0.1).add_(1.0)
        else:  # batch-norm shift
            value = torch.randn(shape, generator=gen).mul_(0.1)
        state[key] = value
    return state


def save_upstream(path: Path, state: dict[str, torch.Tensor]) -> Path:
    torch.save({"model": state, "iteration": 0}, path)
    return path


def make_signal(sample_rate: int, num_samples: int, batch: int = 2, seed: int = 1) -> torch.Tensor:
    """Noise plus a few tones (different per row), peak well inside [-1, 1]."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(num_samples, dtype=torch.float64) / sample_rate
    rows = []
    for b in range(batch):
        tone = 0.3 * torch.sin(2 * math.pi * (440.0 * (b + 1)) * t) + 0.1 * torch.sin(2 * math.pi * 3150.0 * t)
        rows.append(tone + 0.05 * torch.randn(num_samples, generator=gen, dtype=torch.float64))
    return torch.stack(rows).float()


# ---------------------------------------------------------------------------------------------------------------------
# Independent forward pass (torch.nn.functional only), following the original op order
# ---------------------------------------------------------------------------------------------------------------------
def ref_logmel(sd: dict[str, torch.Tensor], wave: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """(B, T) -> dB log-mel (B, frames, 64)."""
    n_fft, hop, _ = FRONTENDS[sample_rate]
    x = F.pad(wave[:, None, :], (n_fft // 2, n_fft // 2), mode="reflect")
    real = F.conv1d(x, sd[FRONTEND_KEYS[0]], stride=hop)
    imag = F.conv1d(x, sd[FRONTEND_KEYS[1]], stride=hop)
    power = real**2 + imag**2  # (B, n_freqs, frames)
    mel = torch.matmul(power.transpose(1, 2), sd[FRONTEND_KEYS[2]])
    return 10.0 * torch.log10(torch.clamp(mel, min=1e-10))


def ref_bn(sd: dict[str, torch.Tensor], prefix: str, x: torch.Tensor) -> torch.Tensor:
    return F.batch_norm(
        x, sd[f"{prefix}.running_mean"], sd[f"{prefix}.running_var"], sd[f"{prefix}.weight"], sd[f"{prefix}.bias"],
        training=False, eps=1e-5,
    )  # fmt: skip


def ref_conv_block(sd, prefix, x, pool=(2, 2), k=3, double=True):
    x = F.relu(ref_bn(sd, f"{prefix}.bn1", F.conv2d(x, sd[f"{prefix}.conv1.weight"], padding=k // 2)))
    if double:
        x = F.relu(ref_bn(sd, f"{prefix}.bn2", F.conv2d(x, sd[f"{prefix}.conv2.weight"], padding=k // 2)))
    return F.avg_pool2d(x, kernel_size=pool)


def ref_forward(name: str, sd: dict[str, torch.Tensor], wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(embedding, logits) of the original model ``name`` in eval mode."""
    sample_rate = SAMPLE_RATE[name]
    logmel = ref_logmel(sd, wave, sample_rate)  # (B, frames, mel)
    x = ref_bn(sd, "bn0", logmel[:, None].transpose(1, 3)).transpose(1, 3)  # bn over mel bins; (B, 1, frames, mel)
    if name in CNN_WIDTHS:
        for i in range(1, len(CNN_WIDTHS[name]) + 1):
            last_of_six = i == 6  # Cnn14's last block does not pool
            x = ref_conv_block(sd, f"conv_block{i}", x, pool=(1, 1) if last_of_six else (2, 2),
                               k=5 if name == "panns_cnn6" else 3, double=name != "panns_cnn6")  # fmt: skip
    elif name == "panns_mobilenetv1":
        x = F.conv2d(x, sd["features.0.0.weight"], padding=1)
        x = F.relu(ref_bn(sd, "features.0.2", F.avg_pool2d(x, 2)))
        for i, (cin, _, pool) in enumerate(MOBILENET_PLAN, start=1):
            x = F.avg_pool2d(F.conv2d(x, sd[f"features.{i}.0.weight"], padding=1, groups=cin), pool)
            x = F.relu(ref_bn(sd, f"features.{i}.2", x))
            x = F.relu(ref_bn(sd, f"features.{i}.5", F.conv2d(x, sd[f"features.{i}.4.weight"])))
    else:  # Wavegram-Logmel-Cnn14
        a = F.relu(ref_bn(sd, "pre_bn0", F.conv1d(wave[:, None], sd["pre_conv0.weight"], stride=5, padding=5)))
        for i in (1, 2, 3):
            p = f"pre_block{i}"
            a = F.relu(ref_bn(sd, f"{p}.bn1", F.conv1d(a, sd[f"{p}.conv1.weight"], padding=1)))
            a = F.relu(ref_bn(sd, f"{p}.bn2", F.conv1d(a, sd[f"{p}.conv2.weight"], padding=2, dilation=2)))
            a = F.max_pool1d(a, 4)
        a = a.reshape(a.shape[0], 4, 32, a.shape[-1]).transpose(2, 3)
        a = ref_conv_block(sd, "pre_block4", a, pool=(2, 1))
        x = torch.cat((ref_conv_block(sd, "conv_block1", x), a), dim=1)  # fails where the branches disagree
        for i in range(2, 7):
            x = ref_conv_block(sd, f"conv_block{i}", x, pool=(1, 1) if i == 6 else (2, 2))
    x = x.mean(dim=3)
    x = torch.max(x, dim=2).values + torch.mean(x, dim=2)
    embedding = F.relu(F.linear(x, sd["fc1.weight"], sd["fc1.bias"]))
    return embedding, F.linear(embedding, sd["fc_audioset.weight"], sd["fc_audioset.bias"])


def fit_bn0(sd: dict[str, torch.Tensor], name: str, wave: torch.Tensor) -> None:
    """Give bn0 the statistics of the test signal's log-mel (as training on such audio would)."""
    logmel = ref_logmel(sd, wave, SAMPLE_RATE[name])
    sd["bn0.running_mean"] = logmel.mean(dim=(0, 1))
    sd["bn0.running_var"] = logmel.var(dim=(0, 1)) + 1.0


# ---------------------------------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------------------------------
def test_registry_lists_every_architecture():
    assert audiokit.list_models("panns_*") == sorted(f"{n}.audioset" for n in PUBLISHED_PARAMS)


@pytest.mark.parametrize("name", sorted(PUBLISHED_PARAMS))
def test_param_count_and_upstream_keys(name):
    layout = upstream_layout(name)
    assert trainable_count(layout) == PUBLISHED_PARAMS[name]  # the spec above is the published architecture

    model = audiokit.create_model(name)
    cfg = audiokit.get_pretrained_cfg(name)
    assert cfg.num_params == PUBLISHED_PARAMS[name]
    assert sum(p.numel() for p in model.parameters()) == PUBLISHED_PARAMS[name]

    upstream = {k: torch.empty(shape) for k, shape in layout}
    mapped = model.checkpoint_filter_fn(upstream)
    ours = model.state_dict()
    assert len(mapped) == len(upstream)  # one to one
    assert set(mapped) == set(ours)
    assert {k: tuple(v.shape) for k, v in mapped.items()} == {k: tuple(v.shape) for k, v in ours.items()}
    # Frontend tensors are buffers (saved, not trained); everything trainable is a parameter.
    assert {"frontend.dft_real", "frontend.dft_imag", "frontend.mel_fb"} <= set(dict(model.named_buffers()))


def test_cnn14_layout_matches_the_published_key_list():
    layout = upstream_layout("panns_cnn14")
    assert len(layout) == 84
    assert layout[:4] == [
        ("spectrogram_extractor.stft.conv_real.weight", (513, 1, 1024)),
        ("spectrogram_extractor.stft.conv_imag.weight", (513, 1, 1024)),
        ("logmel_extractor.melW", (513, 64)),
        ("bn0.weight", (64,)),
    ]
    assert ("conv_block1.conv1.weight", (64, 1, 3, 3)) in layout
    assert layout[-2:] == [("fc_audioset.weight", (527, 2048)), ("fc_audioset.bias", (527,))]
    assert len(upstream_layout("panns_wavegram_logmel_cnn14")) == 138
    assert dict(upstream_layout("panns_cnn14_16k"))["logmel_extractor.melW"] == (257, 64)


def test_pretrained_cfgs():
    for name in PUBLISHED_PARAMS:
        cfg = audiokit.get_pretrained_cfg(name)
        fe = cfg.frontend
        n_fft, hop, f_max = FRONTENDS[SAMPLE_RATE[name]]
        expected = (SAMPLE_RATE[name], n_fft, hop, 64, 50.0, f_max)
        assert (fe.sample_rate, fe.n_fft, fe.hop_length, fe.n_mels, fe.f_min, fe.f_max) == expected
        expected = ("hann", True, "reflect", "dft_conv", "db", 1e-10)
        assert (fe.window, fe.center, fe.pad_mode, fe.stft, fe.log, fe.amin) == expected
        assert (fe.mel_scale, fe.mel_norm, fe.stored_in_checkpoint) == ("slaney", "slaney", True)
        assert (cfg.task, cfg.num_classes, cfg.classifier, cfg.clip_seconds) == ("multilabel", 527, "fc_audioset", 10)
        assert len(cfg.get_label_names()) == 527 and cfg.get_label_names()[0] == "Speech"
        assert cfg.url.startswith("https://zenodo.org/record/3987831/files/") and cfg.url.endswith("?download=1")
        assert "=" not in cfg.url.split("?")[0] and cfg.url.split("/")[-1].split("?")[0].replace("%3D", "=") == (
            cfg.filename
        )
        assert 0.3 < cfg.metrics["audioset_map"] < 0.45
    cnn14 = audiokit.get_pretrained_cfg("panns_cnn14")
    assert cnn14.filename == "Cnn14_mAP=0.431.pth"
    assert cnn14.sha256 == "0dc499e40e9761ef5ea061ffc77697697f277f6a960894903df3ada000e34b31"
    assert cnn14.metrics == {"audioset_map": 0.431}


def _check_parity(
    name: str, tmp_path: Path, num_samples: int, sd: dict[str, torch.Tensor] | None = None, check_proba: bool = True
) -> None:
    wave = make_signal(SAMPLE_RATE[name], num_samples)
    sd = random_upstream_state(name) if sd is None else sd
    fit_bn0(sd, name, wave)
    path = save_upstream(tmp_path / f"{name}.pth", sd)

    model = audiokit.create_model(f"{name}.audioset", checkpoint_path=path).eval()
    # The checkpoint's own frontend matrices are used, bit for bit.
    assert torch.equal(model.frontend.dft_real, sd[FRONTEND_KEYS[0]])
    assert torch.equal(model.frontend.dft_imag, sd[FRONTEND_KEYS[1]])
    assert torch.equal(model.frontend.mel_fb, sd[FRONTEND_KEYS[2]])

    with torch.no_grad():
        ref_emb, ref_logits = ref_forward(name, sd, wave)
        logits = model(wave)
    emb = model.embed(wave)
    scale = max(1.0, ref_logits.abs().max().item())
    assert ref_logits.std() > 0.1 and ref_emb.abs().max() > 0.1  # a meaningful, non-degenerate comparison
    assert logits.shape == (2, 527) and emb.shape == (2, model.num_features)
    torch.testing.assert_close(logits, ref_logits, rtol=0, atol=1e-4 * scale)
    torch.testing.assert_close(emb, ref_emb, rtol=0, atol=1e-4 * max(1.0, ref_emb.abs().max().item()))
    if check_proba:
        torch.testing.assert_close(model.predict_proba(wave), torch.sigmoid(ref_logits), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["panns_cnn6", "panns_cnn10", "panns_mobilenetv1"])
def test_parity_with_independent_forward(name, tmp_path):
    _check_parity(name, tmp_path, num_samples=32000)


@pytest.fixture(scope="module")
def cnn14_state() -> dict[str, torch.Tensor]:
    return random_upstream_state("panns_cnn14")  # 80 M random weights: made once for both sample rates


@pytest.mark.slow
@pytest.mark.parametrize("name", ["panns_cnn14", "panns_cnn14_16k"])
def test_parity_with_independent_forward_cnn14(name, tmp_path, cnn14_state):
    sd = {**cnn14_state, **reference_frontend(SAMPLE_RATE[name])}  # the 16 kHz model differs only in its frontend
    _check_parity(name, tmp_path, num_samples=SAMPLE_RATE[name] // 2, sd=sd, check_proba=False)  # 0.5 s


def test_wrong_architecture_checkpoint_names_the_keys(tmp_path):
    path = save_upstream(tmp_path / "cnn10.pth", random_upstream_state("panns_cnn10"))
    with pytest.raises(CheckpointMismatchError) as err:
        audiokit.create_model("panns_cnn14", checkpoint_path=path)
    message = str(err.value)
    assert "missing conv_block5.conv1.weight" in message
    assert "fc1.weight (512, 512) vs model (2048, 2048)" in message


def _cheap_upstream_state(name: str) -> dict[str, torch.Tensor]:
    # Zero tensors that share one element of storage: a layout-correct file of a few kB, for error paths.
    return {k: torch.zeros(()).expand(shape) for k, shape in upstream_layout(name)}


def test_16k_frontend_into_32k_model_is_refused(tmp_path):
    path = save_upstream(tmp_path / "cnn14_16k.pth", _cheap_upstream_state("panns_cnn14_16k"))
    assert path.stat().st_size < 100_000
    with pytest.raises(CheckpointMismatchError) as err:
        audiokit.create_model("panns_cnn14", checkpoint_path=path)
    message = str(err.value)
    assert "frontend.dft_real (257, 1, 512) vs model (513, 1, 1024)" in message
    assert "frontend.mel_fb (257, 64) vs model (513, 64)" in message
    # ... and the matching model takes it.
    model = audiokit.create_model("panns_cnn14_16k", checkpoint_path=path)
    assert model.frontend.dft_real.shape == (257, 1, 512)


def test_wrong_class_count_reinitialises_only_the_head(tmp_path, caplog):
    sd = random_upstream_state("panns_cnn6")
    path = save_upstream(tmp_path / "cnn6.pth", sd)
    with caplog.at_level(logging.INFO, logger="audiokit"):
        model = audiokit.create_model("panns_cnn6", checkpoint_path=path, num_classes=10)
    assert "fc_audioset" in caplog.text
    assert model.fc_audioset.weight.shape == (10, 512)
    assert torch.equal(model.fc1.weight, sd["fc1.weight"])

    embedder = audiokit.create_model("panns_cnn6", checkpoint_path=path, num_classes=0).eval()
    assert isinstance(embedder.fc_audioset, torch.nn.Identity)
    wave = make_signal(32000, 16000)
    assert embedder(wave).shape == (2, 512)


def test_save_pretrained_round_trip(tmp_path):
    path = save_upstream(tmp_path / "cnn6.pth", random_upstream_state("panns_cnn6"))
    model = audiokit.create_model("panns_cnn6", checkpoint_path=path).eval()
    model.save_pretrained(tmp_path / "saved")
    again = audiokit.create_model(f"local-dir:{tmp_path / 'saved'}").eval()
    wave = make_signal(32000, 16000)
    with torch.no_grad():
        assert torch.equal(model(wave), again(wave))
    assert torch.equal(again.frontend.mel_fb, model.frontend.mel_fb)


def test_logits_not_probabilities_and_dropout_only_in_training():
    torch.manual_seed(0)
    model = audiokit.create_model("panns_cnn6")
    wave = make_signal(32000, 16000)
    model.train()
    with torch.no_grad():
        a, b = model(wave), model(wave)
    assert not torch.equal(a, b)  # dropout (and batch statistics) in training
    model.eval()
    with torch.no_grad():
        a, b = model(wave), model(wave)
    assert torch.equal(a, b)
    assert (a < 0).any()  # logits, not sigmoid outputs
    torch.testing.assert_close(model.predict_proba(wave), torch.sigmoid(a))


@pytest.mark.parametrize(
    ("name", "frames"),
    [("panns_cnn6", 16), ("panns_cnn10", 16), ("panns_cnn14", 32), ("panns_cnn14_16k", 32), ("panns_mobilenetv1", 32)],
)
def test_min_samples_is_the_tight_bound(name, frames):
    model = audiokit.create_model(name).eval()
    hop = FRONTENDS[SAMPLE_RATE[name]][1]
    assert model.min_samples == (frames - 1) * hop  # 1 + N // hop frames with a centred STFT
    with torch.no_grad():
        assert model.forward_features(torch.zeros(1, model.min_samples)).shape[2] == 1
        with pytest.raises(RuntimeError):  # one sample fewer: a pooling stage runs out of frames
            model.forward_features(torch.zeros(1, model.min_samples - 1))


def test_cnn14_short_input_is_padded(caplog):
    model = audiokit.create_model("panns_cnn14").eval()
    assert model.min_samples == 9920
    wave = make_signal(32000, 3200, batch=1)  # 0.1 s
    with caplog.at_level(logging.WARNING), torch.no_grad():
        logits = model(wave)
    assert "zero-padding" in caplog.text
    assert logits.shape == (1, 527) and torch.isfinite(logits).all()
    with torch.no_grad():
        torch.testing.assert_close(logits, model(F.pad(wave, (0, 9920 - 3200))), rtol=0, atol=0)
        caplog.clear()
        exact = model(make_signal(32000, 9920, batch=1))
    assert exact.shape == (1, 527) and "zero-padding" not in caplog.text


@pytest.mark.slow
def test_wavegram_parity_and_lengths_the_original_rejects(tmp_path):
    name = "panns_wavegram_logmel_cnn14"
    accepted = make_signal(32000, 16000)  # 0.5 s: both branches give 25 frames
    rejected = make_signal(32000, 9920, batch=1, seed=2)  # the minimum length: 15 Wavegram vs 16 log-mel frames
    sd = random_upstream_state(name)
    fit_bn0(sd, name, accepted)
    model = audiokit.create_model(name, checkpoint_path=save_upstream(tmp_path / "w.pth", sd)).eval()

    with torch.no_grad():
        ref_emb, ref_logits = ref_forward(name, sd, accepted)
        logits = model(accepted)
    emb = model.embed(accepted)
    assert ref_logits.std() > 0.1
    torch.testing.assert_close(logits, ref_logits, rtol=0, atol=1e-4 * max(1.0, ref_logits.abs().max().item()))
    torch.testing.assert_close(emb, ref_emb, rtol=0, atol=1e-4 * max(1.0, ref_emb.abs().max().item()))

    with torch.no_grad(), pytest.raises(RuntimeError):
        ref_forward(name, sd, rejected)  # the original's size error
    # Ours pads the fewest zeros that make both branches agree: the original's result on the padded input.
    pad = next(p for p in range(0, 10241) if _wavegram_branches_agree(9920 + p))
    assert 0 < pad < 10240
    with torch.no_grad():
        logits = model(rejected)
        _, ref_logits = ref_forward(name, sd, F.pad(rejected, (0, pad)))
    torch.testing.assert_close(logits, ref_logits, rtol=0, atol=1e-4 * max(1.0, ref_logits.abs().max().item()))


def _wavegram_branches_agree(num_samples: int) -> bool:
    wave_frames = ((num_samples + 2 * 5 - 11) // 5 + 1) // 4 // 4 // 4 // 2
    mel_frames = (1 + num_samples // 320) // 2
    return wave_frames == mel_frames
