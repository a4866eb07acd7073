"""PaSST against the upstream facts in shared/reference/zoo2.md, section "PaSST".

- frontend: ``AugmentMelSTFT`` in eval mode written out here step by step (float64 and float32);
- checkpoints: random weights in the exact release layout (flat, 159 tensors at depth 12, optionally in
  ``{'model': ...}``) load strictly and give the logits and features of a forward written here with
  ``torch.nn.functional`` from the description (positional grid, cropping, cls/dist tokens, pre-norm blocks), on the
  whole grid and on shorter input;
- input length: longer input is refused by the tensor API and windowed by ``audiokit.tag``;
- heads: ``reset_classifier``, a new class count, the unused ``head_dist``; training-mode structured patchout.
"""

from __future__ import annotations

import math

import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from torchaudio.compliance import kaldi

import audiokit as ak
from audiokit._weights import CheckpointMismatchError

TINY = {"embed_dim": 64, "depth": 2, "num_heads": 4}
HEADS = 4
SR = 32000

# zoo2.md: (stride, input_tdim) -> grid (n_mels // stride, input_tdim // stride), upstream PatchEmbed's rule.
VARIANTS = {
    # name: (stride, input_tdim, hop, depth, mAP, release tag/file)
    "passt_s.audioset": (10, 998, 320, 12, 0.476, "v0.0.1-audioset/passt-s-f128-p16-s10-ap.476-swa.pt"),
    "passt_s.audioset_kd": (10, 998, 320, 12, 0.486, "v.0.0.9/passt-s-kd-ap.486.pt"),
    "passt_s.audioset_noswa": (10, 998, 320, 12, 0.472, "v0.0.2-audioset/passt-s-f128-p16-s10-ap.472.pt"),
    "passt_s.audioset_hop100": (
        10, 3200, 100, 12, 0.473, "v0.0.3-audioset/passt-s-f128-stfthop100-p16-s10-ap.473-swa.pt"),
    "passt_s.audioset_hop160": (
        10, 2000, 160, 12, 0.473, "v0.0.3-audioset/passt-s-f128-stfthop160-p16-s10-ap.473-swa.pt"),
    "passt_s_s12.audioset": (12, 998, 320, 12, 0.473, "v0.0.2-audioset/passt-s-f128-p16-s12-ap.473-swa.pt"),
    "passt_s_s12.audioset_noswa": (12, 998, 320, 12, 0.470, "v0.0.2-audioset/passt-s-f128-p16-s12-ap.470.pt"),
    "passt_s_s14.audioset": (14, 998, 320, 12, 0.471, "v0.0.2-audioset/passt-s-f128-p16-s14-ap.471-swa.pt"),
    "passt_s_s14.audioset_noswa": (14, 998, 320, 12, 0.469, "v0.0.2-audioset/passt-s-f128-p16-s14-ap.469.pt"),
    "passt_s_s16.audioset": (16, 998, 320, 12, 0.473, "v0.0.2-audioset/passt-s-f128-p16-s16-ap.473-swa.pt"),
    "passt_s_s16.audioset_noswa": (16, 998, 320, 12, 0.468, "v0.0.2-audioset/passt-s-f128-p16-s16-ap.468.pt"),
    "passt_s_20s.audioset": (10, 2000, 320, 12, 0.474, "v0.0.5/passt-s-f128-20sec-p16-s10-ap.474-swa.pt"),
    "passt_s_30s.audioset": (10, 3000, 320, 12, 0.473, "v0.0.5/passt-s-f128-30sec-p16-s10-ap.473-swa.pt"),
    "passt_l.audioset_kd": (10, 998, 320, 7, 0.47, "v.0.0.10/passt-l-kd-ap.47.pt"),
}  # fmt: skip


def _wave(seconds: float, batch: int = 2, seed: int = 0, dtype=torch.float32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (0.1 * torch.randn(batch, int(seconds * SR), generator=gen, dtype=torch.float64)).to(dtype)


# ---------------------------------------------------------------------------------------------------------------------
# Frontend
# ---------------------------------------------------------------------------------------------------------------------
def reference_logmel(wave: torch.Tensor, hop: int = 320) -> torch.Tensor:
    """AugmentMelSTFT in eval mode (zoo2.md), in ``wave``'s dtype: (B, N) -> (B, 1, 128, 1 + (N - 1) // hop)."""
    x = F.conv1d(wave[:, None], torch.tensor([[[-0.97, 1.0]]], dtype=wave.dtype))[:, 0]
    window = torch.hann_window(800, periodic=False, dtype=wave.dtype)
    spec = torch.stft(x, 1024, hop_length=hop, win_length=800, window=window, center=True, return_complex=True)
    power = spec.real**2 + spec.imag**2
    banks, _ = kaldi.get_mel_banks(128, 1024, 32000.0, 0.0, 15000.0, 100.0, -500.0, 1.0)
    banks = F.pad(banks, (0, 1)).to(wave.dtype)  # 513 bins, the Nyquist one weighted 0
    return ((torch.log(banks @ power + 1e-5) + 4.5) / 5.0)[:, None]


@pytest.mark.parametrize(("name", "hop"), [("passt_s.audioset", 320), ("passt_s.audioset_hop100", 100)])
def test_frontend_matches_augmentmelstft(name, hop):
    model = ak.create_model(name, **TINY)
    wave = _wave(2.0, dtype=torch.float64)
    ours = model.frontend(wave.float())
    assert ours.shape == (2, 1, 128, 1 + (wave.shape[1] - 1) // hop)
    torch.testing.assert_close(ours, reference_logmel(wave.float(), hop), atol=2e-5, rtol=0)  # same precision
    err = (ours.double() - reference_logmel(wave, hop)).abs().max().item()  # float32 against float64
    assert err < 1e-4, err
    # zoo2.md, measured: 10 s -> 1000 frames, 5 s -> 500 (pre-emphasis drops a sample).
    assert (
        model.frontend_cfg.num_frames(10 * SR) == 10 * SR // hop
        and model.frontend_cfg.num_frames(5 * SR) == 5 * SR // hop
    )


# ---------------------------------------------------------------------------------------------------------------------
# The release layout and an independent forward
# ---------------------------------------------------------------------------------------------------------------------
def release_layout(
    dim: int = 768, depth: int = 12, grid: tuple[int, int] = (12, 99), classes: int = 527
) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the released files (zoo2.md "Checkpoint layout"), in file order."""
    hidden = 4 * dim
    layout: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, dim),
        "dist_token": (1, 1, dim),
        "new_pos_embed": (1, 2, dim),
        "freq_new_pos_embed": (1, dim, grid[0], 1),
        "time_new_pos_embed": (1, dim, 1, grid[1]),
        "patch_embed.proj.weight": (dim, 1, 16, 16),
        "patch_embed.proj.bias": (dim,),
    }
    for i in range(depth):
        p = f"blocks.{i}."
        layout.update({
            p + "norm1.weight": (dim,), p + "norm1.bias": (dim,),
            p + "attn.qkv.weight": (3 * dim, dim), p + "attn.qkv.bias": (3 * dim,),
            p + "attn.proj.weight": (dim, dim), p + "attn.proj.bias": (dim,),
            p + "norm2.weight": (dim,), p + "norm2.bias": (dim,),
            p + "mlp.fc1.weight": (hidden, dim), p + "mlp.fc1.bias": (hidden,),
            p + "mlp.fc2.weight": (dim, hidden), p + "mlp.fc2.bias": (dim,),
        })  # fmt: skip
    layout.update({
        "norm.weight": (dim,), "norm.bias": (dim,),
        "head.0.weight": (dim,), "head.0.bias": (dim,),
        "head.1.weight": (classes, dim), "head.1.bias": (classes,),
        "head_dist.weight": (classes, dim), "head_dist.bias": (classes,),
    })  # fmt: skip
    return layout


def release_state_dict(grid: tuple[int, int], dim: int = 64, depth: int = 2, classes: int = 527, seed: int = 0):
    """Seeded random weights in the release layout, scaled so that every part moves the output."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in release_layout(dim, depth, grid, classes).items():
        if key.endswith(("norm1.weight", "norm2.weight", "norm.weight", "head.0.weight")):
            sd[key] = 1 + 0.1 * torch.randn(shape, generator=gen)
        elif "token" in key or "pos_embed" in key:
            sd[key] = 0.5 * torch.randn(shape, generator=gen)
        else:
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else dim
            sd[key] = (0.05 if len(shape) == 1 else fan_in**-0.5) * torch.randn(shape, generator=gen)
    return sd


def reference_forward(sd: dict, logmel: torch.Tensor, stride: int, heads: int = HEADS):
    """PaSST as zoo2.md describes it, in float64 functional ops. Returns (logits, features, final-norm tokens)."""
    w = {k: v.double() for k, v in sd.items()}
    x = F.conv2d(logmel.double(), w["patch_embed.proj.weight"], w["patch_embed.proj.bias"], stride=stride)
    b, d, _, t = x.shape
    x = x + w["time_new_pos_embed"][..., :t] + w["freq_new_pos_embed"]  # the first t time columns
    x = x.flatten(2).transpose(1, 2)
    cls = w["cls_token"].expand(b, -1, -1) + w["new_pos_embed"][:, :1]
    dist = w["dist_token"].expand(b, -1, -1) + w["new_pos_embed"][:, 1:]
    x = torch.cat([cls, dist, x], dim=1)
    hd = d // heads
    i = 0
    while f"blocks.{i}.norm1.weight" in w:
        p = f"blocks.{i}."
        h = F.layer_norm(x, (d,), w[p + "norm1.weight"], w[p + "norm1.bias"], eps=1e-6)
        q, k, v = F.linear(h, w[p + "attn.qkv.weight"], w[p + "attn.qkv.bias"]).reshape(b, -1, 3, heads, hd).unbind(2)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))  # (B, heads, N, hd)
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(hd), dim=-1)
        x = x + F.linear(
            (att @ v).transpose(1, 2).reshape(b, -1, d), w[p + "attn.proj.weight"], w[p + "attn.proj.bias"]
        )
        h = F.layer_norm(x, (d,), w[p + "norm2.weight"], w[p + "norm2.bias"], eps=1e-6)
        h = F.gelu(F.linear(h, w[p + "mlp.fc1.weight"], w[p + "mlp.fc1.bias"]))
        x = x + F.linear(h, w[p + "mlp.fc2.weight"], w[p + "mlp.fc2.bias"])
        i += 1
    x = F.layer_norm(x, (d,), w["norm.weight"], w["norm.bias"], eps=1e-6)
    features = (x[:, 0] + x[:, 1]) / 2
    logits = F.linear(F.layer_norm(features, (d,), w["head.0.weight"], w["head.0.bias"], eps=1e-5),
                      w["head.1.weight"], w["head.1.bias"])  # fmt: skip
    return logits, features, x


def _grid(name: str) -> tuple[int, int]:
    stride, tdim, *_ = VARIANTS[name]
    return 128 // stride, tdim // stride


def _loaded(name: str, tmp_path, seed: int = 0, wrap: bool = False, **kwargs):
    sd = release_state_dict(_grid(name), seed=seed)
    path = tmp_path / f"{name}-{seed}.pt"
    torch.save({"model": sd} if wrap else sd, path)
    return ak.create_model(name, checkpoint_path=path, **TINY, **kwargs).eval(), sd


def test_release_layout_has_159_tensors():
    assert len(release_layout()) == 159
    model = ak.create_model("passt_s.audioset", **TINY)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == release_layout(64, 2)
    assert list(model.state_dict()) == list(release_layout(64, 2))  # the files' order too


# (name, seconds, time columns used): the whole grid, shorter input (cropped time embedding), other strides/lengths.
CASES = [
    ("passt_s.audioset", 10.0, 99),
    ("passt_s.audioset", 3.0, 29),
    ("passt_s_s16.audioset", 10.0, 62),
    ("passt_s_30s.audioset", 12.0, 119),  # beyond the 10 s models' 99 columns
    pytest.param("passt_s_30s.audioset", 30.0, 299, marks=pytest.mark.slow),  # 3590 tokens: ~5 s in float64
    ("passt_s.audioset_hop100", 2.0, 63),
]


@pytest.mark.parametrize(("name", "seconds", "columns"), CASES)
def test_release_checkpoint_parity(name, seconds, columns, tmp_path):
    model, sd = _loaded(name, tmp_path, wrap=name.endswith("s16.audioset"))
    stride = VARIANTS[name][0]
    wave = _wave(seconds, batch=1 if seconds > 10 else 2)
    logmel = model.frontend(wave)
    assert (logmel.shape[-1] - 16) // stride + 1 == columns
    with torch.no_grad():
        logits = model(wave)
        embedding = model.embed(wave)
        ref_logits, ref_features, _ = reference_forward(sd, logmel, stride)
    assert logits.shape == (wave.shape[0], 527) and embedding.shape == (wave.shape[0], 64)
    err = max((logits.double() - ref_logits).abs().max().item(), (embedding.double() - ref_features).abs().max().item())
    assert err < 1e-4, err
    assert (logits.abs().max() > 0.1 and (logits[0] - logits[-1]).abs().max() > 1e-2) or wave.shape[0] == 1
    torch.testing.assert_close(model.get_classifier()(embedding), logits)


@pytest.mark.parametrize(("name", "seconds"), [("passt_s.audioset", 3.0), ("passt_s_s16.audioset", 10.0)])
def test_embed_frames_are_the_patch_columns(name, seconds, tmp_path):
    """One row per time column: the column's patch tokens (frequency-major after the two global tokens) averaged over
    its 12 (s16: 8) frequency rows, starting every tstride hops; and the frame-level ``ak.embed`` gives those rows."""
    model, sd = _loaded(name, tmp_path)
    stride = VARIANTS[name][0]
    wave = _wave(seconds)
    with torch.no_grad():
        frames = model.embed_frames(wave).embeddings
        _, _, tokens = reference_forward(sd, model.frontend(wave), stride)
    rows = 128 // stride
    columns = (tokens.shape[1] - 2) // rows
    expected = tokens[:, 2:].reshape(wave.shape[0], rows, columns, -1).mean(dim=1)
    assert frames.shape == expected.shape and columns == (model.frontend(wave).shape[-1] - 16) // stride + 1
    assert (frames.double() - expected).abs().max().item() < 1e-4
    assert (frames[:, 0] - frames[:, -1]).abs().max() > 1e-2  # the columns differ: not one vector repeated
    assert model.frame_hop_seconds == pytest.approx(stride * 320 / SR)

    path = tmp_path / "clip.wav"
    sf.write(path, wave[0].numpy(), SR, subtype="FLOAT")  # float samples: the file holds exactly ``wave[0]``
    result = ak.embed([path], model=model, frame_level=True)
    assert result.vectors.shape == (columns, 64)
    assert result.starts[1] == pytest.approx(stride * 0.01)
    assert abs(result.vectors - frames[0].numpy()).max() < 1e-4


def test_head_dist_is_loaded_but_unused(tmp_path):
    model, sd = _loaded("passt_s.audioset", tmp_path)
    assert torch.equal(model.head_dist.weight, sd["head_dist.weight"])
    wave = _wave(2.0)
    with torch.no_grad():
        before = model(wave)
        model.head_dist.weight.mul_(-3.0)
        assert torch.equal(model(wave), before)


def test_loading_is_strict(tmp_path):
    sd = release_state_dict(_grid("passt_s.audioset"))
    bad = dict(sd)
    del bad["blocks.1.attn.qkv.bias"]
    bad["extra.weight"] = torch.zeros(2)
    torch.save(bad, tmp_path / "bad.pt")
    with pytest.raises(CheckpointMismatchError, match=r"blocks\.1\.attn\.qkv\.bias.*extra\.weight"):
        ak.create_model("passt_s.audioset", checkpoint_path=tmp_path / "bad.pt", **TINY)
    # A stride-10 file into the stride-16 model: the grid shapes are named.
    torch.save(sd, tmp_path / "s10.pt")
    with pytest.raises(CheckpointMismatchError, match="freq_new_pos_embed"):
        ak.create_model("passt_s_s16.audioset", checkpoint_path=tmp_path / "s10.pt", **TINY)


def test_new_class_count_keeps_backbone_and_head_norm(tmp_path):
    sd = release_state_dict(_grid("passt_s.audioset"))
    torch.save(sd, tmp_path / "as.pt")
    model = ak.create_model("passt_s.audioset", checkpoint_path=tmp_path / "as.pt", num_classes=5, **TINY).eval()
    assert model.head[1].out_features == 5 and model.head_dist.out_features == 5
    assert torch.equal(model.head[0].weight, sd["head.0.weight"])  # upstream keeps head.0, replaces head.1
    assert torch.equal(model.blocks[1].mlp.fc2.weight, sd["blocks.1.mlp.fc2.weight"])
    assert model(_wave(1.0)).shape == (2, 5)


# ---------------------------------------------------------------------------------------------------------------------
# Input length
# ---------------------------------------------------------------------------------------------------------------------
def test_input_lengths_and_limits():
    model = ak.create_model("passt_s.audioset", **TINY).eval()
    fe = model.frontend_cfg
    # max_samples is the longest waveform whose patch columns fit the 99-column grid; min_samples gives one column.
    assert model.patch_grid == (12, 99) and model.max_samples == 321_600
    assert (fe.num_frames(model.max_samples) - 16) // 10 + 1 == 99
    assert (fe.num_frames(model.max_samples + 1) - 16) // 10 + 1 == 100
    assert fe.num_frames(model.min_samples) == 16 and fe.num_frames(model.min_samples - 1) == 15
    with torch.no_grad():
        model(_wave(model.max_samples / SR, batch=1))
        with pytest.raises(ValueError, match=r"100 patch columns, more than the 99.*321600 samples.*windows"):
            model(torch.zeros(1, model.max_samples + 1))
        assert model(torch.zeros(1, 1000)).shape == (1, 527)  # shorter than one patch: zero-padded, with a warning
    for name in VARIANTS:
        cfg = ak.get_pretrained_cfg(name)
        stride, tdim, hop = VARIANTS[name][:3]
        frames = (tdim // stride) * stride + 15
        assert cfg.frontend.hop_length == hop and cfg.clip_seconds == round(tdim * hop / SR)
        assert cfg.frontend.num_frames(round(cfg.clip_seconds * SR)) <= frames  # a whole clip fits the grid


def test_tag_windows_long_files(make_wav):
    model = ak.create_model("passt_s.audioset", **TINY).eval()
    path = make_wav("long.wav", 25.0, rate=SR)
    (rec,) = ak.tag(path, model, top_k=3, progress=False, num_workers=0)
    assert rec["error"] is None and any("windows" in w for w in rec["warnings"])
    assert [(w["start"], w["end"]) for w in rec["windows"]] == [(0.0, 10.05), (10.05, 20.1), (14.95, 25.0)]
    wave = ak.load_audio(path, sample_rate=SR)
    last = model.predict_proba(wave[None, len(wave) - model.max_samples :])[0]
    top = max(rec["windows"][-1]["labels"], key=lambda x: x["score"])
    assert top["score"] == pytest.approx(float(last.max()), abs=1e-5)


# ---------------------------------------------------------------------------------------------------------------------
# Heads and training mode
# ---------------------------------------------------------------------------------------------------------------------
def test_reset_classifier(tmp_path):
    model, sd = _loaded("passt_s.audioset", tmp_path)
    wave = _wave(1.0)
    with torch.no_grad():
        embedding = model.embed(wave)
    model.reset_classifier(10, label_names=[f"c{i}" for i in range(10)])
    assert isinstance(model.head[0], torch.nn.LayerNorm) and torch.equal(model.head[0].weight, sd["head.0.weight"])
    assert model.head[1].out_features == 10 and model.head_dist.out_features == 10
    head = model.get_classifier()  # stands for a Linear where audiokit expects one
    assert head.out_features == 10 and head.in_features == 64 and head.weight is model.head[1].weight
    fresh = ak.create_model("passt_s.audioset", num_classes=10, **TINY)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in fresh.state_dict().items()}
    with torch.no_grad():
        assert model(wave).shape == (2, 10)
    model.save_pretrained(tmp_path / "ten")
    again = ak.create_model(f"local-dir:{tmp_path / 'ten'}").eval()
    with torch.no_grad():
        assert torch.equal(again(wave), model(wave)) and again.label_names[3] == "c3"
    model.reset_classifier(0)
    with torch.no_grad():
        torch.testing.assert_close(model(wave), embedding)
    assert not [k for k in model.state_dict() if k.startswith("head")]


def test_structured_patchout_in_training_only():
    model = ak.create_model("passt_s.audioset", s_patchout_t=10, s_patchout_f=3, **TINY)
    seen = []
    model.blocks[0].register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[1]))
    wave = _wave(10.0)
    model.train()
    model(wave).sum().backward()
    assert model.patch_embed.proj.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        first, second = model(wave[:, : 3 * SR]), model(wave[:, : 3 * SR])
    assert torch.equal(first, second)  # eval: no patchout, the first time columns
    assert seen == [2 + (12 - 3) * (99 - 10), 2 + 12 * 29, 2 + 12 * 29]


# ---------------------------------------------------------------------------------------------------------------------
# Registered configurations and the full-size model
# ---------------------------------------------------------------------------------------------------------------------
def test_registered_configs():
    assert set(ak.list_models("passt_*")) == set(VARIANTS)
    assert ak.get_pretrained_cfg("passt_s").name == "passt_s.audioset"
    for name, (stride, tdim, hop, depth, score, release) in VARIANTS.items():
        cfg = ak.get_pretrained_cfg(name)
        assert cfg.url == "https://github.com/kkoutini/PaSST/releases/download/" + release
        assert cfg.sha256 is None and cfg.license == "Apache-2.0" and cfg.metrics == {"audioset_map": score}
        assert cfg.task == "multilabel" and cfg.label_set == "audioset" and cfg.classifier == "head"
        layout = release_layout(768, depth, (128 // stride, tdim // stride))
        assert cfg.num_params == sum(math.prod(s) for s in layout.values()), name
        fe = cfg.frontend
        assert (fe.sample_rate, fe.n_fft, fe.win_length, fe.hop_length, fe.n_mels) == (SR, 1024, 800, hop, 128)
        assert (fe.f_min, fe.f_max, fe.window, fe.preemphasis, fe.mel_scale) == (
            0,
            15000,
            "hann_symmetric",
            0.97,
            "kaldi",
        )
        assert (fe.log, fe.log_offset, fe.mean, fe.std) == ("ln", 1e-5, -4.5, 5.0)
        tiny = ak.create_model(name, **TINY)
        assert tiny.patch_grid == (128 // stride, tdim // stride) and len(tiny.blocks) == 2


@pytest.mark.slow
def test_full_size_passt_s():
    model = ak.create_model("passt_s.audioset").eval()
    assert sum(p.numel() for p in model.parameters()) == 86_153_758
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == release_layout()
    eps = {m.eps for m in [*model.blocks.modules(), model.norm] if isinstance(m, torch.nn.LayerNorm)}
    assert eps == {1e-6} and model.head[0].eps == 1e-5 and model.num_features == 768
    with torch.no_grad():
        logits = model(_wave(10.0, batch=1))
    assert logits.shape == (1, 527) and torch.isfinite(logits).all()
