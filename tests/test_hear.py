"""The HEAR 2021 API (audiokit.hear): the rules hear-eval-kit relies on, and the embeddings it returns re-derived here.

HEAR's rules (the competition's API page, and what ``hearvalidator`` checks): ``load_model(path)`` returns a
``torch.nn.Module`` with an integer ``sample_rate`` in {16000, 22050, 44100, 48000}, integer ``scene_embedding_size``
and ``timestamp_embedding_size``; scene embeddings ``(n, scene_embedding_size)`` float32; timestamp embeddings
``(n, t, timestamp_embedding_size)`` float32 with timestamps ``(n, t)`` in milliseconds, spaced uniformly (adjacent
differences within 1 ms of their mean). The embeddings are compared with the model's own ``embed`` on excerpts cut
here, and the resampling to the model's rate with an analytic sine.
"""

from __future__ import annotations

import importlib.util
import math
import sys
import types

import pytest
import torch

import audiokit as ak
import audiokit.hear as hear
from tests._calibration import informative

HEAR_RATES = (16000, 22050, 44100, 48000)


def _checkpoint(name: str, tmp_path) -> tuple[str, torch.nn.Module]:
    model = informative(name)
    path = tmp_path / f"{name}.pt"
    torch.save(model.state_dict(), path)
    return str(path), model


def _check_hear_rules(model, n: int = 3, seconds: float = 2.0):
    assert isinstance(model, torch.nn.Module) and model.sample_rate in HEAR_RATES
    assert isinstance(model.scene_embedding_size, int) and isinstance(model.timestamp_embedding_size, int)
    audio = 2 * torch.rand(n, int(seconds * model.sample_rate), generator=torch.Generator().manual_seed(0)) - 1
    scene = hear.get_scene_embeddings(audio, model)
    assert scene.dtype == torch.float32 and scene.shape == (n, model.scene_embedding_size)
    frames, times = hear.get_timestamp_embeddings(audio, model)
    assert frames.dtype == torch.float32 and frames.shape[2] == model.timestamp_embedding_size
    assert frames.shape[:2] == times.shape and times.shape[0] == n
    steps = torch.diff(times)
    assert torch.all((steps - steps.mean()).abs() < 1e-3)
    assert torch.isfinite(scene).all() and torch.isfinite(frames).all()
    return audio, scene, frames, times


def test_load_model_from_a_weights_file_follows_the_rules(tmp_path):
    path, reference = _checkpoint("bcresnet_1.speechcommands", tmp_path)
    model = hear.load_model(path, model_name="bcresnet_1.speechcommands", hop=0.25)
    assert model.sample_rate == 16000  # the model's own rate is one HEAR allows: no resampling
    audio, scene, frames, times = _check_hear_rules(model)
    # BC-ResNet takes 1 s: the 2 s sound's scene embedding is the mean over 1 s windows 0.5 s apart.
    with torch.no_grad():
        expected = torch.stack([reference.embed(audio[:, s : s + 16000]) for s in (0, 8000, 16000)]).mean(0)
    torch.testing.assert_close(scene, expected)
    # Timestamp k (every 0.25 s up to the end) embeds the 1 s excerpt centred on it, zero-padded beyond the ends.
    assert times[0].tolist() == pytest.approx([250.0 * k for k in range(8)])
    padded = torch.nn.functional.pad(audio, (8000, 8000))
    for k in (0, 3, 7):
        start = 4000 * k
        with torch.no_grad():
            expected = reference.embed(padded[:, start : start + 16000])
        torch.testing.assert_close(frames[:, k], expected)
    assert (frames[0, 0] - frames[0, 4]).abs().max() > 1e-3  # excerpts differ: the comparison can fail


def test_a_32k_model_is_fed_at_44k_and_resampled_inside(tmp_path):
    path, _ = _checkpoint("efficientat_mn01.audioset", tmp_path)
    model = hear.load_model(model_name="efficientat_mn01.audioset", checkpoint_path=path)
    assert model.sample_rate == 44100 and model.model_sample_rate == 32000
    t = torch.arange(44100) / 44100
    resampled = model.to_model_rate(torch.sin(2 * math.pi * 1000 * t)[None])
    expected = torch.sin(2 * math.pi * 1000 * torch.arange(32000) / 32000)
    assert resampled.shape == (1, 32000)
    assert (resampled[0, 500:-500] - expected[500:-500]).abs().max() < 1e-3  # away from the edges' filter ramp
    _check_hear_rules(model, n=2, seconds=1.0)


def test_native_frames_and_windowed_scenes_of_a_fixed_input_model():
    """PaSST (small): frames are its patch columns, 100 ms apart; a 14 s sound's scene embedding is the mean over
    the 10.05 s windows, 5 s apart, and the last window ending at the sound's end."""
    torch.manual_seed(0)
    net = ak.create_model("passt_s.audioset", embed_dim=64, depth=2, num_heads=4).eval()
    model = hear.HearModel(net)
    assert model.sample_rate == 44100 and model.timestamp_embedding_size == 64
    audio = 0.1 * torch.randn(1, 14 * 44100, generator=torch.Generator().manual_seed(1))
    x = model.to_model_rate(audio)
    scene = hear.get_scene_embeddings(audio, model)
    window = net.max_samples
    starts = [0, x.shape[1] - window]  # 0 and 4 s: the hop (half the window, 5.0 s) would pass the end
    with torch.no_grad():
        expected = torch.stack([net.embed(x[:, s : s + window]) for s in starts]).mean(0)
    torch.testing.assert_close(scene, expected)
    short = audio[:, : 3 * 44100]
    frames, times = hear.get_timestamp_embeddings(short, model)
    with torch.no_grad():
        torch.testing.assert_close(frames, net.embed_frames(model.to_model_rate(short)).embeddings)
    assert times[0, :3].tolist() == pytest.approx([50.0, 150.0, 250.0])


def test_bad_audio_and_options_are_refused():
    model = hear.HearModel(informative("bcresnet_1.speechcommands"))
    with pytest.raises(ValueError, match=r"\(n_sounds, n_samples\)"):
        hear.get_scene_embeddings(torch.zeros(16000), model)
    with pytest.raises(ValueError, match="NaN"):
        hear.get_scene_embeddings(torch.full((1, 16000), float("nan")), model)
    with pytest.raises(TypeError, match="load_model"):
        hear.get_scene_embeddings(torch.zeros(1, 16000), object())
    with pytest.raises(ValueError, match="hop must be a positive"):
        hear.HearModel(informative("bcresnet_1.speechcommands"), hop=0)
    with pytest.raises(ak.UnknownModelError):
        hear.load_model(model_name="panns_cnn41")


# One model of every family; beyond EfficientAT they are full-size (the validator loads the released architecture
# from a weights file), so slow.
VALIDATED = ["efficientat_mn01.audioset"] + [
    pytest.param(name, marks=pytest.mark.slow)
    for name in ("efficientat_dymn04.audioset", "panns_cnn6.audioset", "panns_cnn14_decisionlevelmax.audioset",
                 "bcresnet_1.speechcommands", "ast_base.speechcommands_v2", "passt_s.audioset", "htsat.audioset",
                 "ssast_tiny_patch.ssl", "sat_tiny_1s.audioset", "vggish.audioset", "wav2vec2_base.librispeech")
]  # fmt: skip


@pytest.mark.skipif(importlib.util.find_spec("hearvalidator") is None,
                    reason="hearvalidator is not installed (pip install --no-deps hearvalidator)")  # fmt: skip
@pytest.mark.parametrize("name", VALIDATED)
def test_hearvalidator_accepts_the_module(name, tmp_path, monkeypatch):
    """The validator itself. It imports tensorflow at module level only to recognise TensorFlow models; where
    tensorflow is absent a module with an empty ``tf.Module`` class stands in, and every torch check runs as is."""
    if importlib.util.find_spec("tensorflow") is None:
        # Only while the validator is imported: left in sys.modules, the stand-in would make transformers (AST,
        # wav2vec2) believe tensorflow is installed.
        with monkeypatch.context() as patch:
            patch.setitem(sys.modules, "tensorflow", types.SimpleNamespace(Module=type("Module", (), {})))
            from hearvalidator.validate import ValidateModel
    else:
        from hearvalidator.validate import ValidateModel

    path, _ = _checkpoint(name, tmp_path)
    monkeypatch.setattr(hear, "DEFAULT_MODEL", name)
    ValidateModel("audiokit.hear", path, device="cpu")()


def test_length_dependent_frames_take_the_models_own_times():
    """HTS-AT stretches its input onto a fixed grid, so its 32 frames of a 4 s sound are 4/10.24 as long as at its full
    input: the timestamps are the centres of ``frame_times``, not multiples of ``frame_hop_seconds``."""
    torch.manual_seed(0)
    net = ak.create_model("htsat.audioset", embed_dim=16, depths=(2, 2, 2, 2), num_heads=(2, 2, 4, 8)).eval()
    model = hear.HearModel(net)
    audio = 0.1 * torch.randn(1, 4 * model.sample_rate, generator=torch.Generator().manual_seed(2))
    frames, times = hear.get_timestamp_embeddings(audio, model)
    expected = net.frame_times(4 * net.sample_rate).mean(dim=1) * 1000
    assert frames.shape == (1, 32, model.timestamp_embedding_size)
    assert times[0].tolist() == pytest.approx(expected.tolist(), abs=1e-3) and times[0, -1] < 4000


def test_long_sounds_on_fixed_input_models_get_frames_to_the_end():
    """A 25 s sound on PaSST (10.05 s input): full windows starting on multiples of the 0.1 s frame spacing, so the
    frames of every window lie on one grid that runs to the sound's end; each grid point comes from the window where
    it lies nearest the centre (half-overlapping windows, 5.0 s apart)."""
    torch.manual_seed(0)
    net = ak.create_model("passt_s.audioset", embed_dim=64, depth=2, num_heads=4).eval()
    model = hear.HearModel(net)
    audio = 0.1 * torch.randn(2, 25 * 44100, generator=torch.Generator().manual_seed(3))
    frames, times = hear.get_timestamp_embeddings(audio, model)
    assert frames.shape == (2, 250, 64) and times[0, -1] == pytest.approx(24950.0, abs=1e-2)
    steps = torch.diff(times)
    assert torch.all((steps - 100.0).abs() < 1e-3)
    x = model.to_model_rate(audio)
    width = net.max_samples
    with torch.no_grad():
        first = net.embed_frames(x[:, :width]).embeddings  # columns 0..98, centred at 0.05 .. 9.85 s
        second = net.embed_frames(x[:, 160000 : 160000 + width]).embeddings  # starts at 5.0 s
        # The window at 15 s ends its frames at 24.85 s, so a fifth one, at 20 s and padded, covers 24.95 s.
        last = net.embed_frames(torch.nn.functional.pad(x[:, 640000:], (0, 640000 + width - x.shape[1]))).embeddings
    torch.testing.assert_close(frames[:, 10], first[:, 10])  # 1.05 s: only the first window has it
    torch.testing.assert_close(frames[:, 80], second[:, 30])  # 8.05 s: nearer the centre of the window at 5 s
    torch.testing.assert_close(frames[:, 249], last[:, 249 - 200])  # 24.95 s: the last window, zero-padded
    assert (frames.abs().sum(-1) > 0).all()  # every grid point was filled


def test_cnn_timestamps_are_its_frames_unless_a_hop_asks_for_excerpts():
    net = informative("efficientat_mn01.audioset")
    native = hear.HearModel(net)
    assert native.native_frames and native.timestamp_embedding_size == net.feature_channels
    audio, _, frames, times = _check_hear_rules(native, n=2)
    x = native.to_model_rate(audio)
    with torch.no_grad():
        expected = net.embed_frames(x)
    torch.testing.assert_close(frames, expected.embeddings)
    torch.testing.assert_close(times[0], (expected.times * 1000).float())
    assert float(times[0, 1] - times[0, 0]) == pytest.approx(320.0)
    excerpts = hear.HearModel(net, hop=0.05)
    assert not excerpts.native_frames and excerpts.timestamp_embedding_size == net.num_features
    _, _, _, fine = _check_hear_rules(excerpts, n=1, seconds=0.5)
    assert float(fine[0, 1] - fine[0, 0]) == pytest.approx(50.0)
