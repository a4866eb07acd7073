"""HTS-AT against the upstream facts in shared/reference/zoo2.md, section "HTS-AT".

- checkpoints: random weights in the release layout (a PyTorch-Lightning checkpoint of SEDWrapper, every key under
  ``sed_model.``, 200 tensors at full size, with the stored relative-position indices and shift masks computed here)
  load strictly, as does predict.py's stripped layout; files of another family, with a key missing, a wrong shape or
  a wrong stored buffer are refused;
- numerics: the frontend against librosa (STFT, Slaney mel, dB) and a float64 forward written here with
  torch.nn.functional from the description (DFT conv with the file's own matrices, bn0, bicubic stretch to 1024
  frames, 4 chunks stacked along frequency, Swin blocks with shifted windows and relative position bias, patch
  merging, token-semantic regrouping and the (2, 3) frame convolution), on a small configuration (dim 16, depths
  2-2-2-2) with the released input geometry;
- frame outputs: their means are the clip outputs, their times follow the stretch; long files are windowed by
  ``ak.tag``; ``reset_classifier``; SpecAugmentation only in training.

Upstream itself (RetroCirce/HTS-Audio-Transformer at 2e29471, model/htsat.py with torchlibrosa 0.0.9, torch 2.14.1,
CPU) was run once outside this suite on the same random full-size weights and waveforms (10 s, 5 s, 10.235 s and
2 s of noise) loaded into audiokit from the Lightning checkpoint: clipwise_output, framewise_output (every 32nd
row) and latent_output were bit-identical to predict_proba, predict_frames and embed (largest difference 0.0).
"""

from __future__ import annotations

import functools
import logging
import math

import librosa
import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

import audiokit as ak
from audiokit._weights import CheckpointMismatchError
from audiokit.layers import HeadConfig

SR = 32000
HOP = 320
SMALL = {"embed_dim": 16, "depths": (2, 2, 2, 2), "num_heads": (2, 2, 4, 8)}
FULL = {"embed_dim": 96, "depths": (2, 2, 6, 2), "num_heads": (4, 8, 16, 32)}
WINDOW = 8
GRID = 64  # 256 / patch 4


def _wave(seconds: float, batch: int = 2, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    wave = 0.1 * torch.randn(batch, round(seconds * SR), generator=gen)
    wave[1:] *= 0.2  # another level: the clips' outputs differ
    return wave


# ---------------------------------------------------------------------------------------------------------------------
# The release layout, its derived buffers and random weights in it
# ---------------------------------------------------------------------------------------------------------------------
def relative_position_index(window: int) -> torch.Tensor:
    """Index into the ``(2w - 1)^2`` bias table of each (query, key) pair of a window, row-major positions."""
    pos = [(r, c) for r in range(window) for c in range(window)]
    return torch.tensor([[(qr - kr + window - 1) * (2 * window - 1) + (qc - kc + window - 1) for kr, kc in pos]
                         for qr, qc in pos])  # fmt: skip


def region_labels(side: int, window: int, shift: int) -> torch.Tensor:
    """Label of each position of the shifted map: 3 x 3 regions split at ``side - window`` and ``side - shift``."""
    bands = torch.tensor([0 if i < side - window else 1 if i < side - shift else 2 for i in range(side)])
    return bands[:, None] * 3 + bands[None, :]


def windows_of(x: torch.Tensor, window: int) -> torch.Tensor:
    """``(B, H, W, C)`` -> ``(B, windows, window * window, C)``, windows and their positions row-major."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // window) * (w // window), window * window, c)


def unwindow(x: torch.Tensor, window: int, side: int) -> torch.Tensor:
    b, _, _, c = x.shape
    x = x.reshape(b, side // window, side // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, side, side, c)


def shift_mask(side: int, window: int) -> torch.Tensor:
    """``(windows, N, N)``: 0 within a region, -100 across regions (upstream's value)."""
    labels = windows_of(region_labels(side, window, window // 2)[None, :, :, None].float(), window)[0, :, :, 0]
    return torch.where(labels[:, :, None] == labels[:, None, :], 0.0, -100.0)


def release_layout(embed_dim: int, depths, num_heads, classes: int = 527) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the model inside upstream's checkpoints (zoo2.md "Checkpoint layout"), derived buffers
    included, in file order."""
    layout: dict[str, tuple[int, ...]] = {
        "spectrogram_extractor.stft.conv_real.weight": (513, 1, 1024),
        "spectrogram_extractor.stft.conv_imag.weight": (513, 1, 1024),
        "logmel_extractor.melW": (513, 64),
        "bn0.weight": (64,), "bn0.bias": (64,), "bn0.running_mean": (64,), "bn0.running_var": (64,),
        "bn0.num_batches_tracked": (),
        "patch_embed.proj.weight": (embed_dim, 1, 4, 4), "patch_embed.proj.bias": (embed_dim,),
        "patch_embed.norm.weight": (embed_dim,), "patch_embed.norm.bias": (embed_dim,),
    }  # fmt: skip
    for i, (depth, heads) in enumerate(zip(depths, num_heads, strict=True)):
        d, side = embed_dim * 2**i, GRID // 2**i
        for j in range(depth):
            p = f"layers.{i}.blocks.{j}."
            if j % 2 and side > WINDOW:
                layout[p + "attn_mask"] = ((side // WINDOW) ** 2, WINDOW**2, WINDOW**2)
            layout.update({
                p + "norm1.weight": (d,), p + "norm1.bias": (d,),
                p + "attn.relative_position_bias_table": ((2 * WINDOW - 1) ** 2, heads),
                p + "attn.relative_position_index": (WINDOW**2, WINDOW**2),
                p + "attn.qkv.weight": (3 * d, d), p + "attn.qkv.bias": (3 * d,),
                p + "attn.proj.weight": (d, d), p + "attn.proj.bias": (d,),
                p + "norm2.weight": (d,), p + "norm2.bias": (d,),
                p + "mlp.fc1.weight": (4 * d, d), p + "mlp.fc1.bias": (4 * d,),
                p + "mlp.fc2.weight": (d, 4 * d), p + "mlp.fc2.bias": (d,),
            })  # fmt: skip
        if i < len(depths) - 1:
            layout.update({
                f"layers.{i}.downsample.reduction.weight": (2 * d, 4 * d),
                f"layers.{i}.downsample.norm.weight": (4 * d,), f"layers.{i}.downsample.norm.bias": (4 * d,),
            })  # fmt: skip
    top = embed_dim * 2 ** (len(depths) - 1)
    layout.update({
        "norm.weight": (top,), "norm.bias": (top,),
        "tscam_conv.weight": (classes, top, 2, 3), "tscam_conv.bias": (classes,),
        "head.weight": (classes, classes), "head.bias": (classes,),
    })  # fmt: skip
    return layout


def torchlibrosa_matrices() -> dict[str, torch.Tensor]:
    """torchlibrosa's frozen frontend: ``cos`` / ``-sin`` DFT rows times the periodic Hann window, librosa's Slaney
    mel matrix (50-14000 Hz) transposed; float32 as torchlibrosa stores them."""
    n = np.arange(1024)
    k = np.arange(513)[:, None]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * n / 1024)
    mel = librosa.filters.mel(sr=SR, n_fft=1024, n_mels=64, fmin=50, fmax=14000).T
    return {
        "spectrogram_extractor.stft.conv_real.weight": torch.from_numpy(
            (np.cos(2 * np.pi * k * n / 1024) * window).astype(np.float32)[:, None]),
        "spectrogram_extractor.stft.conv_imag.weight": torch.from_numpy(
            (-np.sin(2 * np.pi * k * n / 1024) * window).astype(np.float32)[:, None]),
        "logmel_extractor.melW": torch.from_numpy(mel.astype(np.float32)),
    }  # fmt: skip


def release_state_dict(config=SMALL, classes: int = 527, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random weights in the release layout, scaled so that every part moves the output; the derived buffers
    hold what upstream computes, the frontend torchlibrosa's matrices. A fresh dict (its tensors shared)."""
    return dict(_release_state_dict("full" if config == FULL else "small", classes, seed))


@functools.cache
def _release_state_dict(size: str, classes: int, seed: int) -> dict[str, torch.Tensor]:
    config = FULL if size == "full" else SMALL
    gen = torch.Generator().manual_seed(seed)
    frontend = torchlibrosa_matrices()
    sd: dict[str, torch.Tensor] = {}
    for key, shape in release_layout(config["embed_dim"], config["depths"], config["num_heads"], classes).items():
        if key in frontend:
            sd[key] = frontend[key]
        elif key.endswith("relative_position_index"):
            sd[key] = relative_position_index(WINDOW)
        elif key.endswith("attn_mask"):
            sd[key] = shift_mask(int(math.sqrt(shape[0])) * WINDOW, WINDOW)
        elif key == "bn0.num_batches_tracked":
            sd[key] = torch.tensor(12345)
        elif key == "bn0.running_mean":
            sd[key] = -40 + 10 * torch.randn(shape, generator=gen)
        elif key == "bn0.running_var":
            sd[key] = 100 * (1 + torch.rand(shape, generator=gen))
        elif key.endswith(("norm1.weight", "norm2.weight", "norm.weight", "bn0.weight")):
            sd[key] = 1 + 0.1 * torch.randn(shape, generator=gen)
        elif key.endswith("relative_position_bias_table"):
            sd[key] = 0.5 * torch.randn(shape, generator=gen)
        elif len(shape) == 1:
            sd[key] = 0.05 * torch.randn(shape, generator=gen)
        else:
            sd[key] = math.prod(shape[1:]) ** -0.5 * torch.randn(shape, generator=gen)
    return sd


def lightning_checkpoint(sd: dict[str, torch.Tensor]) -> dict:
    """What pytorch-lightning 1.5.9 writes for SEDWrapper (the network is its ``sed_model``)."""
    return {
        "epoch": 41,
        "global_step": 123456,
        "pytorch-lightning_version": "1.5.9",
        "state_dict": {"sed_model." + k: v for k, v in sd.items()},
        "callbacks": {"ModelCheckpoint{'monitor': 'mAP', 'mode': 'max'}": {"best_model_score": torch.tensor(0.47)}},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]}],
        "lr_schedulers": [{"base_lrs": [1e-3], "last_epoch": 41}],
    }


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    """The small configuration's Lightning checkpoint, its state dict, and a model loaded from it (not to be
    modified by the tests that share it)."""
    sd = release_state_dict()
    path = tmp_path_factory.mktemp("htsat") / "release.ckpt"
    torch.save(lightning_checkpoint(sd), path)
    return ak.create_model("htsat.audioset", checkpoint_path=path, **SMALL).eval(), sd, path


def _loaded(tmp_path, sd=None, config=SMALL, name: str = "release.ckpt", **kwargs):
    sd = release_state_dict(config) if sd is None else sd
    path = tmp_path / name
    torch.save(lightning_checkpoint(sd), path)
    return ak.create_model("htsat.audioset", checkpoint_path=path, **config, **kwargs).eval(), sd


# ---------------------------------------------------------------------------------------------------------------------
# An independent forward (float64, torch.nn.functional, tensors read by their release names)
# ---------------------------------------------------------------------------------------------------------------------
def reference_logmel(sd: dict, wave: torch.Tensor) -> torch.Tensor:
    """torchlibrosa Spectrogram + LogmelFilterBank with the file's matrices, then bn0: ``(B, T, 64)``."""
    w = {k: v.double() for k, v in sd.items()}
    x = F.pad(wave.double()[:, None], (512, 512), mode="reflect")
    real = F.conv1d(x, w["spectrogram_extractor.stft.conv_real.weight"], stride=HOP)
    imag = F.conv1d(x, w["spectrogram_extractor.stft.conv_imag.weight"], stride=HOP)
    mel = (real**2 + imag**2).transpose(1, 2) @ w["logmel_extractor.melW"]  # (B, T, 64)
    db = 10 * torch.log10(mel.clamp(min=1e-10))
    return (db - w["bn0.running_mean"]) / torch.sqrt(w["bn0.running_var"] + 1e-5) * w["bn0.weight"] + w["bn0.bias"]


def reference_image(logmel: torch.Tensor) -> torch.Tensor:
    """``(B, T, 64)`` -> ``(B, 256, 256)``: stretched to 1024 frames, chunk c (frames 256c..256c+255) as rows
    64c..64c+63 (mel bins), its frames as columns."""
    if logmel.shape[1] != 1024:
        logmel = F.interpolate(logmel[:, None], (1024, 64), mode="bicubic", align_corners=True)[:, 0]
    return torch.cat([logmel[:, 256 * c : 256 * (c + 1)].transpose(1, 2) for c in range(4)], dim=1)


def reference_block(w: dict, p: str, x: torch.Tensor, heads: int, shift: int) -> torch.Tensor:
    b, side, _, d = x.shape
    window = min(WINDOW, side)
    if side <= WINDOW:
        shift = 0
    h = F.layer_norm(x, (d,), w[p + "norm1.weight"], w[p + "norm1.bias"])
    if shift:
        h = torch.roll(h, (-shift, -shift), dims=(1, 2))
    win = windows_of(h, window)  # (B, nW, N, d)
    n = window * window
    q, k, v = F.linear(win, w[p + "attn.qkv.weight"], w[p + "attn.qkv.bias"]).reshape(
        b, -1, n, 3, heads, d // heads).permute(3, 0, 1, 4, 2, 5)  # fmt: skip
    att = q @ k.transpose(-2, -1) / math.sqrt(d // heads)  # (B, nW, heads, N, N)
    table = w[p + "attn.relative_position_bias_table"]  # ((2w-1)^2, heads)
    att = att + table[relative_position_index(window)].permute(2, 0, 1)
    if shift:
        att = att + shift_mask(side, window).double()[None, :, None]
    out = (torch.softmax(att, dim=-1) @ v).permute(0, 1, 3, 2, 4).reshape(b, -1, n, d)
    out = unwindow(F.linear(out, w[p + "attn.proj.weight"], w[p + "attn.proj.bias"]), window, side)
    if shift:
        out = torch.roll(out, (shift, shift), dims=(1, 2))
    x = x + out
    h = F.layer_norm(x, (d,), w[p + "norm2.weight"], w[p + "norm2.bias"])
    return x + F.linear(F.gelu(F.linear(h, w[p + "mlp.fc1.weight"], w[p + "mlp.fc1.bias"])),
                        w[p + "mlp.fc2.weight"], w[p + "mlp.fc2.bias"])  # fmt: skip


def reference_forward(sd: dict, wave: torch.Tensor, config=SMALL) -> dict[str, torch.Tensor]:
    """HTS-AT as zoo2.md describes it. Returns frame logits (B, 32, C), clip logits, latent (B, D), frame embeddings."""
    w = {k: v.double() for k, v in sd.items()}
    image = reference_image(reference_logmel(sd, wave))[:, None]
    x = F.conv2d(image, w["patch_embed.proj.weight"], w["patch_embed.proj.bias"], stride=4).permute(0, 2, 3, 1)
    x = F.layer_norm(x, (x.shape[-1],), w["patch_embed.norm.weight"], w["patch_embed.norm.bias"])
    for i, (depth, heads) in enumerate(zip(config["depths"], config["num_heads"], strict=True)):
        for j in range(depth):
            x = reference_block(w, f"layers.{i}.blocks.{j}.", x, heads, WINDOW // 2 if j % 2 else 0)
        if i < len(config["depths"]) - 1:
            p = f"layers.{i}.downsample."
            x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
            x = F.linear(F.layer_norm(x, (x.shape[-1],), w[p + "norm.weight"], w[p + "norm.bias"]),
                         w[p + "reduction.weight"])  # fmt: skip
    x = F.layer_norm(x, (x.shape[-1],), w["norm.weight"], w["norm.bias"])  # (B, 8, 8, D): rows chunk-major
    # Frame t is column t % 8 of chunk t // 8, whose two rows are token rows 2 (t // 8) and 2 (t // 8) + 1.
    grouped = torch.stack([x[:, 2 * (t // 8) : 2 * (t // 8) + 2, t % 8] for t in range(32)], dim=-1)  # (B, 2, D, 32)
    grouped = grouped.transpose(1, 2)  # (B, D, 2, 32)
    frames = F.conv2d(grouped, w["tscam_conv.weight"], w["tscam_conv.bias"], padding=(0, 1))[:, :, 0].transpose(1, 2)
    return {
        "frame_logits": frames,
        "logits": frames.mean(dim=1),
        "latent": grouped.mean(dim=(2, 3)),
        "frame_embeddings": grouped.mean(dim=2).transpose(1, 2),
    }


# ---------------------------------------------------------------------------------------------------------------------
# Layout and loading
# ---------------------------------------------------------------------------------------------------------------------
def _ours(layout: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """The release layout in audiokit's names: frontend renamed, derived buffers recomputed rather than stored."""
    names = {"spectrogram_extractor.stft.conv_real.weight": "frontend.dft_real",
             "spectrogram_extractor.stft.conv_imag.weight": "frontend.dft_imag",
             "logmel_extractor.melW": "frontend.mel_fb"}  # fmt: skip
    return {names.get(k, k): v for k, v in layout.items() if not k.endswith(("relative_position_index", "attn_mask"))}


def test_state_dict_is_the_release_layout():
    model = ak.create_model("htsat.audioset", **SMALL)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == _ours(release_layout(**SMALL))


def test_lightning_checkpoint_loads_strictly_and_says_what_it_dropped(release, caplog):
    _, _, path = release
    with caplog.at_level(logging.INFO, logger="audiokit.models.htsat"):
        ak.create_model("htsat.audioset", checkpoint_path=path, **SMALL)
    # 8 relative position indices and the shift masks of the 3 shifted blocks of stages 0-2 (stage 3 is one window).
    assert "11 stored relative_position_index / attn_mask buffers" in caplog.text
    assert "upstream's forward does not use it" in caplog.text


@pytest.mark.parametrize(("seconds", "frames"), [(10.0, 1001), (3.0, 301), (327_679 / SR, 1024)])
def test_lightning_checkpoint_parity(seconds, frames, release):
    model, sd, _ = release
    wave = _wave(seconds)
    assert model.frontend_cfg.num_frames(wave.shape[1]) == frames
    with torch.no_grad():  # embed is the mean of embed_frames (test_frame_outputs_average_to_the_clip_outputs)
        logits, frame_logits = model(wave), model.forward_frames(wave)
        frame_embeddings = model.embed_frames(wave).embeddings
    ref = reference_forward(sd, wave)
    for ours, key in ((logits, "logits"), (frame_logits, "frame_logits"), (frame_embeddings, "frame_embeddings")):
        assert ours.shape == ref[key].shape, key
        err = (ours.double() - ref[key]).abs().max().item()
        assert err < 2e-4 * max(1.0, ref[key].abs().max().item()), (key, err)
    assert logits.abs().max() > 0.1 and (logits[0] - logits[1]).abs().max() > 1e-2  # informative weights
    assert (frame_logits[:, 0] - frame_logits[:, -1]).abs().max() > 1e-2  # the frames differ


def test_predict_py_layout_loads_the_same(release, tmp_path):
    model, sd, _ = release
    torch.save(sd, tmp_path / "stripped.pt")  # predict.py strips "sed_model." and loads strictly
    again = ak.create_model("htsat.audioset", checkpoint_path=tmp_path / "stripped.pt", **SMALL).eval()
    wave = _wave(2.0)
    with torch.no_grad():
        assert torch.equal(model(wave), again(wave))


def test_frontend_matrices_come_from_the_file(tmp_path):
    """The file's DFT and mel matrices are the ones used (here a mel matrix scaled by 2: +3.01 dB before bn0)."""
    sd = release_state_dict()
    sd["logmel_extractor.melW"] = 2 * sd["logmel_extractor.melW"]
    model, _ = _loaded(tmp_path, sd)
    assert torch.equal(model.frontend.mel_fb, sd["logmel_extractor.melW"])
    assert torch.equal(model.frontend.dft_real, sd["spectrogram_extractor.stft.conv_real.weight"])
    wave = _wave(1.0)
    with torch.no_grad():
        ours = model.logmel(wave)[:, 0]
    torch.testing.assert_close(ours.double(), reference_logmel(sd, wave), atol=1e-3, rtol=0)
    assert not any(p.requires_grad for p in model.frontend.parameters())  # frozen, as torchlibrosa's


def test_frontend_and_fold_match_librosa():
    """Spectrogram, mel and dB against librosa (float64), then the stretch and the chunk stacking."""
    model = ak.create_model("htsat.audioset", **SMALL).eval()
    sd = {"bn0.weight": model.bn0.weight, "bn0.bias": model.bn0.bias}
    wave = _wave(3.0)
    power = np.abs(librosa.stft(wave.double().numpy(), n_fft=1024, hop_length=HOP, window="hann", center=True,
                                pad_mode="reflect")) ** 2  # fmt: skip
    mel = librosa.filters.mel(sr=SR, n_fft=1024, n_mels=64, fmin=50, fmax=14000) @ power  # (B, 64, T)
    db = torch.from_numpy(librosa.power_to_db(mel, ref=1.0, amin=1e-10, top_db=None)).transpose(1, 2)
    with torch.no_grad():
        ours = model.frontend(wave)[:, 0].transpose(1, 2).double()
        # Quiet bins carry float32 round-off: compare where the signal is, in dB.
        assert (ours - db).abs().max().item() < 2e-3
        logmel = model.logmel(wave)
        image = model.fold(logmel)
    stats = (model.bn0.running_mean, model.bn0.running_var)
    expected = (db - stats[0].double()) / torch.sqrt(stats[1].double() + 1e-5) * sd["bn0.weight"].double()
    expected = expected + sd["bn0.bias"].double()
    assert (logmel[:, 0].double() - expected).abs().max().item() < 1e-3
    assert image.shape == (2, 1, 256, 256)
    # float32 against float64 bicubic: the float32 source coordinates of a 301 -> 1024 stretch are off by ~1e-5
    # frames, times a spectrogram that moves by O(10) per frame.
    torch.testing.assert_close(image[:, 0].double(), reference_image(logmel[:, 0].double()), atol=1e-3, rtol=0)


def test_frame_times_follow_the_stretch():
    """With ``align_corners=True`` grid position ``j`` of the 1024 samples STFT frame ``j (T - 1) / 1023`` (torch's
    definition), centred at that many hops; output frame ``i`` starts at position ``32 i``. Checked against a ramp
    (the frame index) folded by the model: PyTorch's bicubic kernel (a = -0.75) does not reproduce a ramp exactly,
    but to within 0.1 frame, well below what align_corners=False would give (up to 0.5 frame at the end)."""
    model = ak.create_model("htsat.audioset", **SMALL).eval()
    for samples in (10 * SR, 5 * SR, model.max_samples, 100_000):
        frames = model.frontend_cfg.num_frames(samples)
        times = model.frame_times(samples)
        positions = torch.arange(33, dtype=torch.float64) * 32 * (frames - 1) / 1023
        assert times.shape == (32, 2) and torch.equal(times[1:, 0], times[:-1, 1])
        torch.testing.assert_close(times[:, 0], positions[:-1] * HOP / SR, atol=1e-12, rtol=0)
        torch.testing.assert_close(times[:, 1], positions[1:] * HOP / SR, atol=1e-12, rtol=0)
        ramp = torch.arange(frames, dtype=torch.float64)[None, None, :, None].expand(1, 1, frames, 64)
        image = model.fold(ramp)[0, 0]  # rows: 4 chunks of 64 mel bins; columns: 256 grid positions per chunk
        sampled = torch.cat([image[64 * c] for c in range(4)])  # the frame index each of the 1024 positions holds
        assert (sampled[::32] - positions[:-1]).abs().max() < 0.1
    assert model.frame_times(10 * SR)[1, 0].item() == pytest.approx(32 * 1000 / 1023 * HOP / SR)
    assert model.frame_hop_seconds == pytest.approx(0.32)  # max_samples: 1024 frames, no stretch


def test_frame_outputs_average_to_the_clip_outputs(release):
    model = release[0]
    wave = _wave(4.0, batch=1)
    with torch.no_grad():
        frame_logits = model.forward_frames(wave)
        torch.testing.assert_close(frame_logits.mean(dim=1), model(wave))
        torch.testing.assert_close(model.embed_frames(wave).embeddings.mean(dim=1), model.embed(wave))
    predicted = model.predict_frames(wave)
    assert predicted.probabilities.shape == (1, 32, 527)
    torch.testing.assert_close(predicted.probabilities, torch.sigmoid(frame_logits))
    torch.testing.assert_close(predicted.times, model.frame_times(wave.shape[1]))
    torch.testing.assert_close(model.predict_proba(wave), torch.sigmoid(frame_logits.mean(dim=1)))


# ---------------------------------------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------------------------------------
def test_refuses_other_families_and_damaged_files(tmp_path):
    sd = release_state_dict()
    cnn14 = {"spectrogram_extractor.stft.conv_real.weight": sd["spectrogram_extractor.stft.conv_real.weight"],
             "bn0.weight": torch.ones(64), "conv_block1.conv1.weight": torch.zeros(64, 1, 3, 3),
             "fc_audioset.weight": torch.zeros(527, 2048)}  # fmt: skip
    torch.save({"model": cnn14}, tmp_path / "cnn14.pth")
    with pytest.raises(CheckpointMismatchError, match=r"not an HTS-AT checkpoint.*another family"):
        ak.create_model("htsat.audioset", checkpoint_path=tmp_path / "cnn14.pth", **SMALL)

    missing = dict(sd)
    del missing["layers.1.blocks.0.attn.qkv.bias"]
    torch.save(lightning_checkpoint(missing), tmp_path / "missing.ckpt")
    with pytest.raises(CheckpointMismatchError, match=r"missing layers\.1\.blocks\.0\.attn\.qkv\.bias"):
        ak.create_model("htsat.audioset", checkpoint_path=tmp_path / "missing.ckpt", **SMALL)

    shape = dict(sd)
    shape["layers.2.downsample.reduction.weight"] = torch.zeros(128, 64)
    torch.save(lightning_checkpoint(shape), tmp_path / "shape.ckpt")
    with pytest.raises(CheckpointMismatchError, match=r"layers\.2\.downsample\.reduction\.weight \(128, 64\)"):
        ak.create_model("htsat.audioset", checkpoint_path=tmp_path / "shape.ckpt", **SMALL)

    # The full-size release into the small configuration: the widths are named.
    full = {k: torch.zeros(s) for k, s in release_layout(**FULL).items()}
    full.update({k: v for k, v in release_state_dict().items() if "position_index" in k or "attn_mask" in k})
    torch.save(lightning_checkpoint(full), tmp_path / "full.ckpt")
    with pytest.raises(CheckpointMismatchError, match=r"patch_embed\.proj\.weight \(96, 1, 4, 4\)"):
        ak.create_model("htsat.audioset", checkpoint_path=tmp_path / "full.ckpt", **SMALL)


@pytest.mark.parametrize(
    ("key", "damage", "match"),
    [
        ("layers.0.blocks.1.attn_mask", lambda t: t.roll(1, 0), "differ from those this model computes"),
        ("layers.2.blocks.0.attn.relative_position_index", lambda t: t.flip(0), "differ from those"),
        ("layers.3.blocks.1.attn_mask", None, "runs unshifted"),
    ],
)
def test_stored_buffers_must_match_the_geometry(key, damage, match, tmp_path):
    sd = release_state_dict()
    sd[key] = damage(sd[key]) if damage else shift_mask(16, WINDOW)[:1]
    torch.save(lightning_checkpoint(sd), tmp_path / "bad.ckpt")
    with pytest.raises(CheckpointMismatchError, match=match):
        ak.create_model("htsat.audioset", checkpoint_path=tmp_path / "bad.ckpt", **SMALL)


# ---------------------------------------------------------------------------------------------------------------------
# Heads, lengths and training mode
# ---------------------------------------------------------------------------------------------------------------------
def test_head_is_loaded_but_unused(tmp_path):
    model, sd = _loaded(tmp_path)
    assert torch.equal(model.head.weight, sd["head.weight"])
    wave = _wave(1.0)
    with torch.no_grad():
        before = model(wave)
        model.head.weight.mul_(-3.0)
        assert torch.equal(model(wave), before)


def test_new_class_count_keeps_the_backbone(tmp_path, caplog):
    sd = release_state_dict()
    torch.save(lightning_checkpoint(sd), tmp_path / "as.ckpt")
    with caplog.at_level(logging.INFO):
        model = ak.create_model("htsat.audioset", checkpoint_path=tmp_path / "as.ckpt", num_classes=50, **SMALL)
    assert "head (unused by forward) re-initialised for 50 classes" in caplog.text
    assert "tscam_conv.weight" in caplog.text  # the builder names the re-initialised classifier
    assert model.tscam_conv.out_features == 50 and model.head.weight.shape == (50, 50)
    assert torch.equal(model.layers[3].blocks[1].mlp.fc2.weight, sd["layers.3.blocks.1.mlp.fc2.weight"])
    assert model.eval()(_wave(1.0)).shape == (2, 50)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        embedder = ak.create_model("htsat.audioset", checkpoint_path=tmp_path / "as.ckpt", num_classes=0, **SMALL)
    assert "head (unused by forward) dropped: the model has no classifier" in caplog.text
    assert torch.equal(embedder.norm.weight, sd["norm.weight"]) and embedder.num_classes == 0


def test_reset_classifier(tmp_path):
    model, _ = _loaded(tmp_path)
    wave = _wave(1.0)
    with torch.no_grad():
        embedding = model.embed(wave)
    model.reset_classifier(10, label_names=[f"c{i}" for i in range(10)])
    head = model.get_classifier()
    assert head is model.tscam_conv and head.out_features == 10 and head.in_features == 128
    assert model.head.weight.shape == (10, 10)
    fresh = ak.create_model("htsat.audioset", num_classes=10, **SMALL)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in fresh.state_dict().items()}
    with torch.no_grad():
        assert model(wave).shape == (2, 10) and model.forward_frames(wave).shape == (2, 32, 10)
    model.save_pretrained(tmp_path / "ten")
    again = ak.create_model(f"local-dir:{tmp_path / 'ten'}").eval()
    with torch.no_grad():
        assert torch.equal(again(wave), model(wave)) and again.label_names[3] == "c3"

    # An MLP on the clip embedding: forward is that MLP of embed; there are no frame outputs then.
    model.reset_classifier(4, head=HeadConfig(hidden=[8], activation="gelu"))
    with torch.no_grad():
        torch.testing.assert_close(model(wave), model.get_classifier()(model.embed(wave)))
    with pytest.raises(ValueError, match="frame-level outputs need the token-semantic classifier"):
        model.predict_frames(wave)

    model.reset_classifier(0)
    with torch.no_grad():
        torch.testing.assert_close(model(wave), embedding)
    assert not [k for k in model.state_dict() if k.startswith(("head", "tscam_conv"))]


def test_input_lengths_and_limits():
    model = ak.create_model("htsat.audioset", **SMALL).eval()
    fe = model.frontend_cfg
    assert model.max_samples == 327_679
    assert fe.num_frames(model.max_samples) == 1024 and fe.num_frames(model.max_samples + 1) == 1025
    with torch.no_grad():
        with pytest.raises(ValueError, match=r"1025 spectrogram frames.*327679 samples.*max_samples.*windows"):
            model(torch.zeros(1, model.max_samples + 1))
        assert model(torch.zeros(1, 100)).shape == (1, 527)  # shorter than the STFT needs: zero-padded, warned


def test_tag_windows_long_files(make_wav):
    model = ak.create_model("htsat.audioset", **SMALL).eval()
    path = make_wav("long.wav", 25.0, rate=SR)
    (rec,) = ak.tag(path, model, top_k=3, progress=False, num_workers=0)
    assert rec["error"] is None and any("windows" in w for w in rec["warnings"])
    limit = model.max_samples / SR
    assert [(w["start"], w["end"]) for w in rec["windows"]] == [
        (0.0, pytest.approx(limit)), (pytest.approx(limit), pytest.approx(2 * limit)), (pytest.approx(25 - limit), 25.0)
    ]  # fmt: skip
    wave = ak.load_audio(path, sample_rate=SR)
    last = model.predict_proba(wave[None, len(wave) - model.max_samples :])[0]
    top = max(rec["windows"][-1]["labels"], key=lambda x: x["score"])
    assert top["score"] == pytest.approx(float(last.max()), abs=1e-5)


def test_frame_level_embed(release, tmp_path):
    model = release[0]
    wave = _wave(model.max_samples / SR, batch=1)
    path = tmp_path / "clip.wav"
    sf.write(path, wave[0].numpy(), SR, subtype="FLOAT")
    result = ak.embed([path], model=model, frame_level=True)
    with torch.no_grad():
        frames = model.embed_frames(wave).embeddings[0]
    assert result.vectors.shape == (32, 16 * 8) and result.starts[1] == pytest.approx(0.32)
    assert abs(result.vectors - frames.numpy()).max() < 1e-4
    # A shorter clip is stretched onto the grid: its rows are shorter than 0.32 s and the times say so.
    short = tmp_path / "short.wav"
    sf.write(short, wave[0, : 5 * SR].numpy(), SR, subtype="FLOAT")
    result = ak.embed([short], model=model, frame_level=True)
    spans = model.frame_times(5 * SR)
    assert result.starts.tolist() == pytest.approx(spans[:, 0].tolist())
    assert result.ends.tolist() == pytest.approx(spans[:, 1].clamp(max=5.0).tolist())  # none past the file's end
    assert result.starts[1] == pytest.approx(32 * 500 / 1023 * HOP / SR)  # 501 STFT frames over 1024 positions


def test_spec_augment_in_training_only():
    model = ak.create_model("htsat.audioset", **SMALL)
    seen: list[torch.Tensor] = []
    model.patch_embed.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    wave = _wave(10.0)
    model.train()
    model(wave).sum().backward()
    assert model.patch_embed.proj.weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():
        first, second = model(wave), model(wave)
    assert torch.equal(first, second)
    # Training zeroed whole stripes of the normalised log-mel (before the stretch): zero rows of 1024 positions
    # are frequency stripes; evaluation leaves none.
    train_image, eval_image = seen[0], seen[1]

    def zero_mel_rows(image):
        return int((image[:, 0].reshape(2, 4, 64, 256).abs().amax(dim=(1, 3)) == 0).sum())

    assert zero_mel_rows(train_image) > 0 and zero_mel_rows(eval_image) == 0


def test_registered_config():
    assert ak.list_models("htsat*") == ["htsat.audioset"]
    cfg = ak.get_pretrained_cfg("htsat")
    assert cfg.url is None and cfg.license == "MIT" and cfg.metrics == {"audioset_map": 0.471}
    assert cfg.num_params == 31_325_143 and cfg.clip_seconds == 10.0 and cfg.task == "multilabel"
    assert cfg.classifier == "tscam_conv" and len(cfg.get_label_names()) == 527
    assert "HTSAT_AudioSet_Saved_1.ckpt" in cfg.notes and "htsat_audioset_pretrain.ckpt" in cfg.notes
    fe = cfg.frontend
    assert (fe.sample_rate, fe.n_fft, fe.hop_length, fe.n_mels, fe.f_min, fe.f_max) == (SR, 1024, HOP, 64, 50, 14000)
    assert (fe.window, fe.center, fe.pad_mode, fe.stft, fe.log, fe.amin) == (
        "hann", True, "reflect", "dft_conv", "db", 1e-10)  # fmt: skip
    assert (fe.mel_scale, fe.mel_norm, fe.stored_in_checkpoint) == ("slaney", "slaney", True)


@pytest.mark.slow
def test_full_size_htsat(tmp_path):
    """The released architecture: upstream's 200 tensors, 31,325,143 parameters (zoo2.md, measured), a 10 s forward
    from a full-size Lightning checkpoint."""
    layout = release_layout(**FULL)
    assert len(layout) == 200
    buffers = ("running_mean", "running_var", "num_batches_tracked", "relative_position_index", "attn_mask")
    upstream_parameters = sum(math.prod(s) for k, s in layout.items() if not k.endswith(buffers))
    assert upstream_parameters == 31_325_143
    sd = release_state_dict(FULL)
    torch.save(lightning_checkpoint(sd), tmp_path / "full.ckpt")
    model = ak.create_model("htsat.audioset", checkpoint_path=tmp_path / "full.ckpt").eval()
    assert sum(p.numel() for p in model.parameters()) == 31_325_143
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == _ours(layout)
    wave = _wave(10.0, batch=1)
    with torch.no_grad():
        logits = model(wave)
    ref = reference_forward(sd, wave, FULL)["logits"]
    assert logits.shape == (1, 527) and torch.isfinite(logits).all()
    assert (logits.double() - ref).abs().max().item() < 2e-4 * max(1.0, ref.abs().max().item())
