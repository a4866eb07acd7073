"""PANNs' sound event detection model, Cnn14_DecisionLevelMax (audiokit.models.panns.Cnn14DecisionLevelMax).

As in tests/test_panns.py, checkpoints are written in the original layout (``{'model': state_dict}``, the original
key names and frozen frontend tensors) with random weights, loaded through ``audiokit.create_model`` and compared with
a forward pass written here with ``torch.nn.functional`` from the published description of the model: Cnn14's body,
the frequency mean, ``max_pool1d(3, 1, 1) + avg_pool1d(3, 1, 1)`` over time, ``relu(fc1)`` and a sigmoid per segment;
the clip output is the maximum over segments; the framewise output repeats each segment 32 times and pads with the
last one up to the STFT frame count.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import audiokit as ak
from audiokit.layers import HeadConfig
from audiokit.models.htsat import FramePredictions
from tests.test_panns import (
    FRONTEND_KEYS,
    _bn,
    _conv_block,
    make_signal,
    ref_bn,
    ref_conv_block,
    ref_logmel,
    reference_frontend,
    save_upstream,
    upstream_layout,
)

NAME = "panns_cnn14_decisionlevelmax.audioset"
FULL = (64, 128, 256, 512, 1024, 2048)
NARROW = (4, 8, 8, 16, 16, 32)
SR = 32000


def layout(widths: tuple[int, ...]) -> list[tuple[str, tuple[int, ...]]]:
    """(key, shape) of the original checkpoint at ``widths`` (Cnn14's key list; the full widths are Cnn14's shapes)."""
    keys: list[tuple[str, tuple[int, ...]]] = [
        (FRONTEND_KEYS[0], (513, 1, 1024)), (FRONTEND_KEYS[1], (513, 1, 1024)), (FRONTEND_KEYS[2], (513, 64)),
    ]  # fmt: skip
    keys += _bn("bn0", 64)
    cin = 1
    for i, cout in enumerate(widths, start=1):
        keys += _conv_block(f"conv_block{i}", cin, cout)
        cin = cout
    keys += [("fc1.weight", (cin, cin)), ("fc1.bias", (cin,)), ("fc_audioset.weight", (527, cin))]
    keys.append(("fc_audioset.bias", (527,)))
    return keys


def random_state(widths: tuple[int, ...], wave: torch.Tensor, seed: int = 0) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    state = reference_frontend(SR)
    for key, shape in layout(widths):
        if key in state:
            continue
        if key.endswith("num_batches_tracked"):
            value = torch.tensor(1000)
        elif key.endswith("running_mean"):
            value = 0.1 * torch.randn(shape, generator=gen)
        elif key.endswith("running_var"):
            value = 0.5 + torch.rand(shape, generator=gen)
        elif len(shape) >= 2:
            value = torch.randn(shape, generator=gen).mul_(math.sqrt(2.0 / math.prod(shape[1:])))
        elif key.startswith("fc"):
            value = torch.randn(shape, generator=gen).mul_(0.5)
        elif key.endswith("weight"):
            value = torch.randn(shape, generator=gen).mul_(0.1).add_(1.0)
        else:
            value = torch.randn(shape, generator=gen).mul_(0.1)
        state[key] = value
    logmel = ref_logmel(state, wave, SR)  # bn0 with the test signal's statistics, as training on such audio gives
    state["bn0.running_mean"] = logmel.mean(dim=(0, 1))
    state["bn0.running_var"] = logmel.var(dim=(0, 1)) + 1.0
    return state


def ref_dlm(sd: dict[str, torch.Tensor], wave: torch.Tensor) -> dict[str, torch.Tensor]:
    """Upstream's eval-mode outputs: segmentwise, clipwise and framewise probabilities, and the segment embeddings."""
    logmel = ref_logmel(sd, wave, SR)  # (B, frames, 64)
    frames = logmel.shape[1]
    x = ref_bn(sd, "bn0", logmel[:, None].transpose(1, 3)).transpose(1, 3)
    for i in range(1, 7):
        x = ref_conv_block(sd, f"conv_block{i}", x, pool=(1, 1) if i == 6 else (2, 2))
    x = x.mean(dim=3)  # (B, C, T')
    x = F.max_pool1d(x, 3, stride=1, padding=1) + F.avg_pool1d(x, 3, stride=1, padding=1)
    emb = F.relu(F.linear(x.transpose(1, 2), sd["fc1.weight"], sd["fc1.bias"]))  # (B, T', C)
    seg = torch.sigmoid(F.linear(emb, sd["fc_audioset.weight"], sd["fc_audioset.bias"]))
    framewise = seg[:, :, None, :].expand(-1, -1, 32, -1).reshape(seg.shape[0], -1, seg.shape[2])
    framewise = torch.cat([framewise, framewise[:, -1:].expand(-1, frames - framewise.shape[1], -1)], dim=1)
    return {"segmentwise": seg, "clipwise": seg.max(dim=1).values, "framewise": framewise, "embedding": emb}


def _load(tmp_path, widths, wave, seed=0):
    sd = random_state(widths, wave, seed)
    path = save_upstream(tmp_path / "Cnn14_DecisionLevelMax_mAP=0.385.pth", sd)
    kwargs = {} if widths == FULL else {"widths": widths}
    return ak.create_model(NAME, checkpoint_path=path, **kwargs).eval(), sd


def _check_parity(model, sd, wave):
    ref = ref_dlm(sd, wave)
    with torch.no_grad():
        pred = model.predict_frames(wave)
        clip = model.predict_proba(wave)
        framewise = model.framewise_output(wave)
        seg_emb = model.embed_frames(wave).embeddings
        emb = model.embed(wave)
    assert isinstance(pred, FramePredictions)
    assert pred.probabilities.shape == ref["segmentwise"].shape
    torch.testing.assert_close(pred.probabilities, ref["segmentwise"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(clip, ref["clipwise"], atol=1e-5, rtol=1e-4)
    assert framewise.shape == ref["framewise"].shape
    torch.testing.assert_close(framewise, ref["framewise"], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(seg_emb, ref["embedding"], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(emb, ref["embedding"].amax(dim=1), atol=1e-4, rtol=1e-4)
    spread = ref["segmentwise"].std().item()
    assert spread > 1e-2, f"the reference's segment outputs barely vary ({spread}): the comparison would be weak"
    return pred


def test_registered_with_the_published_file_and_cnn14_layout():
    cfg = ak.get_pretrained_cfg(NAME)
    assert cfg.filename == "Cnn14_DecisionLevelMax_mAP=0.385.pth"
    assert cfg.url == "https://zenodo.org/record/3987831/files/Cnn14_DecisionLevelMax_mAP%3D0.385.pth?download=1"
    assert cfg.sha256 == "dd3b4043a87d4ec13df8082c0fcfee3fb5084151808e47e060987a95eabdd142"
    assert (cfg.num_classes, cfg.task, cfg.sample_rate, cfg.metrics["audioset_map"]) == (527, "multilabel", SR, 0.385)
    assert [k for k, _ in layout(FULL)] == [k for k, _ in upstream_layout("panns_cnn14")]
    model = ak.create_model(NAME)
    assert sum(p.numel() for p in model.parameters()) == cfg.num_params == 80_753_615
    assert model.segment_frames == 32 and model.frame_hop_seconds == pytest.approx(0.32)


def test_parity_with_independent_forward(tmp_path):
    seconds = 2.5  # 251 STFT frames: 7 segments, and 27 frames the pooling drops (padded with the last segment)
    wave = make_signal(SR, round(seconds * SR))
    model, sd = _load(tmp_path, NARROW, wave)
    pred = _check_parity(model, sd, wave)
    frames = 1 + wave.shape[-1] // 320
    assert pred.probabilities.shape[1] == frames // 32
    times = pred.times
    assert times.dtype == torch.float64 and times.shape == (frames // 32, 2)
    torch.testing.assert_close(times[:-1, 0], torch.arange(frames // 32 - 1, dtype=torch.float64) * 0.32)
    torch.testing.assert_close(
        times[:-1, 1] - times[:-1, 0], torch.full((frames // 32 - 1,), 0.32, dtype=torch.float64)
    )
    assert times[-1, 1].item() == pytest.approx(seconds)  # the last segment stands for the padded tail


def test_heads_and_frame_outputs(tmp_path):
    wave = make_signal(SR, SR)
    model, _ = _load(tmp_path, NARROW, wave)
    with torch.no_grad():
        features = model.forward_features(model.prepare_waveform(wave))
        logits = model(wave)
        torch.testing.assert_close(model.forward_head(features), logits)
        torch.testing.assert_close(logits, model.forward_frames(wave).amax(dim=1))
    model.reset_classifier(3, label_names=["a", "b", "c"])  # a new Linear, still applied per segment
    with torch.no_grad():
        assert model.predict_frames(wave).probabilities.shape == (2, 3, 3)
        embedding = model.embed(wave)
    model.reset_classifier(0)
    with torch.no_grad():
        torch.testing.assert_close(model(wave), embedding)
    model.reset_classifier(2, head=HeadConfig(hidden=[8]))
    with pytest.raises(ValueError, match="frame-level outputs need a Linear"):
        model.predict_frames(wave)
    with pytest.raises(ValueError, match="6 blocks"):
        ak.create_model(NAME, widths=(4, 8))


def test_dropout_only_in_training(tmp_path):
    wave = make_signal(SR, SR)
    model, _ = _load(tmp_path, NARROW, wave)
    with torch.no_grad():
        torch.testing.assert_close(model(wave), model(wave))
        model.train()
        torch.manual_seed(0)
        a = model(wave)
        torch.manual_seed(1)
        assert not torch.allclose(a, model(wave))


@pytest.mark.slow
def test_full_size_parity(tmp_path):
    wave = make_signal(SR, 10 * SR)
    model, sd = _load(tmp_path, FULL, wave)
    assert model.predict_frames(wave).probabilities.shape == (2, 31, 527)
    _check_parity(model, sd, wave)
