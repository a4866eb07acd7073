"""Clips of different lengths in one call: ``model.embed([a, b, c])`` and ``model.predict_proba([a, b, c])`` give each
clip what it gets alone (no zero-padding to the longest, which moves a clip's result), for every family; and a clip
longer than a fixed-input model's input is cut into windows, as ``audiokit tag`` cuts a long file, never truncated.
The references are the clips run one at a time, and the windows cut here."""

from __future__ import annotations

import pytest
import torch

from tests._calibration import informative
from tests.test_embedding_layers import _calibrated

# (name, small architecture arguments, clip lengths in seconds): the lengths differ, and for the fixed-input models
# (AST for Speech Commands: 1.28 s, BC-ResNet: 1 s) the last is longer than their input.
CASES = [
    ("efficientat_mn01.audioset", {}, (0.7, 1.3, 2.0)),
    ("efficientat_dymn04.audioset", {}, (0.7, 1.6)),
    ("panns_cnn6.audioset", {}, (1.0, 1.7)),
    ("panns_cnn14_decisionlevelmax.audioset", {"widths": (8, 8, 16, 16, 32, 32)}, (1.1, 2.3)),
    ("bcresnet_1.speechcommands", {}, (0.4, 0.9, 2.3)),
    ("ast_base.speechcommands_v2", {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 128},
     (0.5, 0.9, 2.9)),
    ("passt_s.audioset", {"embed_dim": 64, "depth": 2, "num_heads": 4}, (1.0, 2.5)),
    ("htsat.audioset", {"embed_dim": 16, "depths": (2, 2, 2, 2), "num_heads": (2, 2, 4, 8)}, (1.0, 2.5)),
    ("ssast_tiny_patch.ssl", {"depth": 2}, (0.6, 1.5)),
    ("sat_tiny_1s.audioset", {"depth": 2}, (0.8, 2.1)),
    ("vggish.audioset", {}, (1.0, 2.5)),
    ("wav2vec2_base.librispeech", {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 37,
                                   "conv_dim": (8,) * 7, "num_conv_pos_embeddings": 16,
                                   "num_conv_pos_embedding_groups": 4}, (0.5, 1.2)),
]  # fmt: skip


def _model(name, kwargs):
    return informative(name) if not kwargs else _calibrated(name, seconds=1.0, **kwargs)


def _clips(model, seconds, seed=3):
    generator = torch.Generator().manual_seed(seed)
    return [0.2 * torch.randn(round(s * model.sample_rate), generator=generator) for s in seconds]


def _close(batched, alone):
    scale = max(1.0, alone.abs().max().item())
    assert (batched - alone).abs().max().item() <= 1e-4 * scale


@pytest.mark.parametrize("name, kwargs, seconds", CASES, ids=[c[0] for c in CASES])
def test_each_clip_of_a_list_gets_its_result_alone(name, kwargs, seconds):
    model = _model(name, kwargs)
    clips = _clips(model, seconds)
    with torch.no_grad():
        embedded = model.embed(clips)
        alone = [model.embed([clip])[0] for clip in clips]
    assert embedded.shape == (len(clips), model.num_features)
    for row, reference in zip(embedded, alone):
        _close(row, reference)
    limit = model.max_samples
    for clip, reference in zip(clips, alone):
        if limit is None or clip.shape[0] <= limit:  # a clip within the input is the plain tensor call
            with torch.no_grad():
                _close(reference, model.embed(clip[None])[0])
    if model.num_classes:
        with torch.no_grad():
            scored = model.predict_proba(clips)
            for row, clip in zip(scored, clips):
                _close(row, model.predict_proba([clip])[0])


def test_zero_padding_would_have_moved_the_short_clip():
    # Why lists exist: the 0.7 s clip padded to 2 s in a plain batch embeds elsewhere than alone.
    model = informative("efficientat_mn01.audioset")
    short, long = _clips(model, (0.7, 2.0))
    padded = torch.stack([torch.nn.functional.pad(short, (0, long.shape[0] - short.shape[0])), long])
    with torch.no_grad():
        listed, batched = model.embed([short, long]), model.embed(padded)
        alone = model.embed(short[None])[0]
    _close(listed[0], alone)
    assert (batched[0] - alone).abs().max() > 1e-2


@pytest.mark.parametrize("name, kwargs", [CASES[4][:2], CASES[5][:2]], ids=["bcresnet", "ast"])
def test_input_longer_than_a_fixed_input_is_windowed_not_truncated(name, kwargs):
    model = _model(name, kwargs)
    width = model.max_samples
    (clip,) = _clips(model, (2.3 * width / model.sample_rate,))
    starts = [0, width, clip.shape[0] - width]  # full windows, the last aligned to the end (as tag windows a file)
    windows = torch.stack([clip[s : s + width] for s in starts])
    with torch.no_grad():
        per_window_embeddings = model.embed(windows)
        per_window_scores = model.predict_proba(windows)
        embedded, scored = model.embed(clip[None])[0], model.predict_proba(clip[None])[0]
        truncated = model.embed(clip[None, :width])[0]
    _close(embedded, per_window_embeddings.mean(dim=0))
    _close(scored, per_window_scores.amax(dim=0))  # audiokit tag's default aggregate for windows
    assert (embedded - truncated).abs().max() > 1e-3  # the end of the clip counts


def test_bad_lists_are_one_line_errors():
    model = informative("efficientat_mn01.audioset")
    with pytest.raises(TypeError, match="non-empty list of 1-D tensors"):
        model.embed([])
    with pytest.raises(ValueError, match=r"clip 1: expected a non-empty 1-D waveform, got shape \(2, 100\)"):
        model.embed([torch.zeros(32000), torch.zeros(2, 100)])
    with pytest.raises(TypeError, match=r"clip 0: expected a torch\.Tensor, got list"):
        model.predict_proba([[0.0] * 100])
