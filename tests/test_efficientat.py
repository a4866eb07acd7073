"""EfficientAT MN / DyMN against the upstream facts in shared/reference/models.md §3.

- layouts: parameter counts equal the numbers measured on the original classes; tensor names, order and shapes equal
  an independent derivation of the original checkpoint layout;
- parity: checkpoints written in the original layout load through ``create_model(checkpoint_path=...)`` and give the
  logits of a forward pass written here from scratch with ``torch.nn.functional`` (frontend included);
- real weights: the released mn04 checkpoint loads strictly and tags real speech (FSDD) as Speech, noise as noise;
- errors: a checkpoint for another model is refused with the offending keys named.
"""

from __future__ import annotations

import copy
import hashlib
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torchaudio.compliance import kaldi

import audiokit as ak
from audiokit.models.efficientat import DynamicMobileNetAT, MobileNetAT
from tests._calibration import calibrate_batchnorm

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MN04_FILE = SHARED / "weights" / "efficientat" / "mn04_as_mAP_432.pt"
MN04_SHA256 = "899a8c6217063f6941793102a2780b3dd788ab11fce468d9cf5f0577c453321c"
FSDD = SHARED / "data" / "fsdd" / "recordings"
SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")

# models.md §3.2, "params [probe]": measured by instantiating the original classes.
PROBE_PARAMS = {
    "efficientat_mn01": 123_783,
    "efficientat_mn02": 324_695,
    "efficientat_mn04": 983_599,
    "efficientat_mn05": 1_431_239,
    "efficientat_mn10": 4_876_831,
    "efficientat_mn20": 17_909_287,
    "efficientat_mn30": 39_086_367,
    "efficientat_mn40": 68_427_303,
    "efficientat_dymn04": 1_961_239,
    "efficientat_dymn10": 10_548_479,
    "efficientat_dymn20": 39_966_143,
}
WIDTHS = {name: int(name.rsplit("mn", 1)[1]) / 10 for name in PROBE_PARAMS}

# models.md §3.2: the MobileNetV3-Large body (in, kernel, expanded, out, squeeze-excite, stride); blocks 1-6 use ReLU,
# 7-15 Hardswish.
BODY = [
    (16, 3, 16, 16, False, 1), (16, 3, 64, 24, False, 2), (24, 3, 72, 24, False, 1), (24, 5, 72, 40, True, 2),
    (40, 5, 120, 40, True, 1), (40, 5, 120, 40, True, 1), (40, 3, 240, 80, False, 2), (80, 3, 200, 80, False, 1),
    (80, 3, 184, 80, False, 1), (80, 3, 184, 80, False, 1), (80, 3, 480, 112, True, 1), (112, 3, 672, 112, True, 1),
    (112, 5, 672, 160, True, 2), (160, 5, 960, 160, True, 1), (160, 5, 960, 160, True, 1),
]  # fmt: skip
RELU_BLOCKS = 6
BN_EPS = 1e-3

Layout = dict[str, tuple[tuple[int, ...], int]]  # key -> (shape, fan-in used to draw realistic random weights)


# ---------------------------------------------------------------------------------------------------------------------
# The original checkpoint layouts, derived independently from models.md
# ---------------------------------------------------------------------------------------------------------------------
def _round8(v: float) -> int:
    r = max(8, int(v + 4) // 8 * 8)
    return r + 8 if r < 0.9 * v else r


def _bn_keys(layout: Layout, prefix: str, channels: int) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        layout[f"{prefix}.{name}"] = ((channels,), 0)
    layout[f"{prefix}.num_batches_tracked"] = ((), 0)


def _conv_bn(layout: Layout, prefix: str, c_in: int, c_out: int, k: int, groups: int = 1) -> None:
    layout[f"{prefix}.0.weight"] = ((c_out, c_in // groups, k, k), c_in // groups * k * k)
    _bn_keys(layout, f"{prefix}.1", c_out)


def _linear(layout: Layout, prefix: str, c_in: int, c_out: int) -> None:
    layout[f"{prefix}.weight"] = ((c_out, c_in), c_in)
    layout[f"{prefix}.bias"] = ((c_out,), 0)


def _head(layout: Layout, c_last: int, w: float, num_classes: int) -> None:
    _linear(layout, "classifier.2", c_last, _round8(1280 * w))
    _linear(layout, "classifier.5", _round8(1280 * w), num_classes)


def upstream_mn_layout(w: float, num_classes: int = 527) -> Layout:
    layout: Layout = {}
    _conv_bn(layout, "features.0", 1, _round8(16 * w), 3)
    for i, (c_in, k, c_exp, c_out, se, _stride) in enumerate(BODY, start=1):
        c_in, c_exp, c_out = _round8(c_in * w), _round8(c_exp * w), _round8(c_out * w)
        step = 0
        if c_exp != c_in:
            _conv_bn(layout, f"features.{i}.block.{step}", c_in, c_exp, 1)
            step += 1
        _conv_bn(layout, f"features.{i}.block.{step}", c_exp, c_exp, k, groups=c_exp)
        step += 1
        if se:
            squeeze = _round8(c_exp // 4)
            _linear(layout, f"features.{i}.block.{step}.conc_se_layers.0.fc1", c_exp, squeeze)
            _linear(layout, f"features.{i}.block.{step}.conc_se_layers.0.fc2", squeeze, c_exp)
            step += 1
        _conv_bn(layout, f"features.{i}.block.{step}", c_exp, c_out, 1)
    c_last = _round8(160 * w)
    _conv_bn(layout, "features.16", c_last, 6 * c_last, 1)
    _head(layout, 6 * c_last, w, num_classes)
    return layout


def context_dim(c_exp: int, w: float) -> int:
    return min(max(_round8(c_exp // 4), _round8(32 * w)), _round8(128 * w))


def upstream_dymn_layout(w: float, num_classes: int = 527) -> Layout:
    layout: Layout = {}

    def dyconv(prefix: str, c_in: int, c_out: int, k: int, groups: int, h: int) -> None:
        layout[f"{prefix}.weight"] = ((1, 1, 4, c_out * (c_in // groups) * k * k), c_in // groups * k * k)
        _linear(layout, f"{prefix}.residuals.0", h, 4)

    for i, (c_in, k, c_exp, c_out, _se, _stride) in enumerate(BODY):
        c_in, c_exp, c_out = _round8(c_in * w), _round8(c_exp * w), _round8(c_out * w)
        h, p = context_dim(c_exp, w), f"layers.{i}"
        if c_exp != c_in:
            dyconv(f"{p}.exp_conv", c_in, c_exp, 1, 1, h)
            _bn_keys(layout, f"{p}.exp_norm", c_exp)
        dyconv(f"{p}.depth_conv", c_exp, c_exp, k, c_exp, h)
        _bn_keys(layout, f"{p}.depth_norm", c_exp)
        layout[f"{p}.depth_act.lambdas"] = ((4,), 0)
        layout[f"{p}.depth_act.init_v"] = ((4,), 0)
        _linear(layout, f"{p}.depth_act.coef_net.0", h, 4 * c_exp)
        dyconv(f"{p}.proj_conv", c_exp, c_out, 1, 1, h)
        _bn_keys(layout, f"{p}.proj_norm", c_out)
        layout[f"{p}.context_gen.joint_conv.weight"] = ((h, c_in, 1, 1), c_in)
        _bn_keys(layout, f"{p}.context_gen.joint_norm", h)
        for axis in ("f", "t"):
            layout[f"{p}.context_gen.conv_{axis}.weight"] = ((c_exp, h, 1, 1), h)
            layout[f"{p}.context_gen.conv_{axis}.bias"] = ((c_exp,), 0)
    _conv_bn(layout, "in_c", 1, _round8(16 * w), 3)
    c_last = _round8(160 * w)
    _conv_bn(layout, "out_c", c_last, 6 * c_last, 1)
    _head(layout, 6 * c_last, w, num_classes)
    return layout


def random_checkpoint(layout: Layout, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights with trained-network statistics (He-scaled kernels, positive running variances, BN affine
    near identity), so activations neither vanish nor explode through 15 blocks."""
    gen = torch.Generator().manual_seed(seed)

    def randn(shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=gen)

    state: dict[str, torch.Tensor] = {}
    for key, (shape, fan_in) in layout.items():
        leaf = key.rsplit(".", 1)[1]
        is_bn = f"{key.rsplit('.', 1)[0]}.running_var" in layout
        if leaf == "num_batches_tracked":
            state[key] = torch.tensor(123456)
        elif leaf == "running_var":
            state[key] = 0.5 + torch.rand(shape, generator=gen)
        elif leaf == "running_mean":
            state[key] = 0.2 * randn(shape)
        elif leaf == "lambdas":
            state[key] = torch.tensor([1.0, 1.0, 0.5, 0.5])
        elif leaf == "init_v":
            state[key] = torch.tensor([1.0, 0.0, 0.0, 0.0])
        elif is_bn and leaf == "weight":
            state[key] = 1.0 + 0.2 * randn(shape)
        elif leaf == "bias":
            state[key] = 0.1 * randn(shape)
        else:
            state[key] = randn(shape) * math.sqrt(2.0 / fan_in)
    return state


# ---------------------------------------------------------------------------------------------------------------------
# An independent forward pass (torch.nn.functional only, tensors read by the original key names)
# ---------------------------------------------------------------------------------------------------------------------
def reference_logmel(wave: torch.Tensor, hop: int = 320, n_mels: int = 128) -> torch.Tensor:
    """models.md §3.1 step by step: (B, N) at 32 kHz -> (B, 1, n_mels, 1 + (N - 1) // hop), in ``wave``'s dtype."""
    kernel = torch.tensor([[[-0.97, 1.0]]], dtype=wave.dtype)
    x = F.conv1d(wave[:, None, :], kernel)[:, 0]  # y[m] = x[m+1] - 0.97 x[m]
    spec = torch.stft(
        x, n_fft=1024, hop_length=hop, win_length=800, window=torch.hann_window(800, periodic=False, dtype=wave.dtype),
        center=True, pad_mode="reflect", return_complex=True,
    )  # fmt: skip
    power = spec.real**2 + spec.imag**2
    banks, _ = kaldi.get_mel_banks(n_mels, 1024, 32000.0, 0.0, 15000.0, 100.0, -500.0, 1.0)
    banks = torch.cat([banks, torch.zeros(n_mels, 1)], dim=1).to(wave.dtype)  # the Nyquist bin gets weight zero
    mel = banks @ power
    return ((torch.log(mel + 1e-5) + 4.5) / 5.0)[:, None]


def _bn(x: torch.Tensor, sd: dict[str, torch.Tensor], p: str) -> torch.Tensor:
    return F.batch_norm(
        x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"], sd[f"{p}.bias"], False, 0.0, BN_EPS
    )


def _conv_bn_f(x: torch.Tensor, sd: dict[str, torch.Tensor], p: str, stride: int = 1, depthwise: bool = False):
    w = sd[f"{p}.0.weight"]
    x = F.conv2d(x, w, stride=stride, padding=(w.shape[-1] - 1) // 2, groups=w.shape[0] if depthwise else 1)
    return _bn(x, sd, f"{p}.1")


def _act(i: int):
    return F.relu if i < RELU_BLOCKS else F.hardswish


def _head_f(x: torch.Tensor, sd: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    pooled = F.adaptive_avg_pool2d(x, 1).flatten(1)
    embedding = F.hardswish(F.linear(pooled, sd["classifier.2.weight"], sd["classifier.2.bias"]))
    return F.linear(embedding, sd["classifier.5.weight"], sd["classifier.5.bias"]), embedding


def reference_mn(sd: dict[str, torch.Tensor], spec: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = F.hardswish(_conv_bn_f(spec, sd, "features.0", stride=2))
    for i, (*_, stride) in enumerate(BODY):
        act, p, inp, step = _act(i), f"features.{i + 1}.block", x, 0
        if sd[f"{p}.0.0.weight"].shape[-1] == 1:  # a 1x1 first step is the expansion
            x = act(_conv_bn_f(x, sd, f"{p}.0"))
            step = 1
        x = act(_conv_bn_f(x, sd, f"{p}.{step}", stride=stride, depthwise=True))
        step += 1
        se = f"{p}.{step}.conc_se_layers.0"
        if f"{se}.fc1.weight" in sd:
            s = F.relu(F.linear(x.mean(dim=(2, 3)), sd[f"{se}.fc1.weight"], sd[f"{se}.fc1.bias"]))
            s = torch.sigmoid(F.linear(s, sd[f"{se}.fc2.weight"], sd[f"{se}.fc2.bias"]))
            x = x * s[:, :, None, None]
            step += 1
        x = _conv_bn_f(x, sd, f"{p}.{step}")
        if stride == 1 and x.shape == inp.shape:
            x = x + inp
    x = F.hardswish(_conv_bn_f(x, sd, "features.16"))
    return _head_f(x, sd)


def _dyconv_f(x, sd, p, h_c, temperature, stride=1, depthwise=False):
    """Dy-Conv one example at a time: softmax(Linear(h_c) / T) mixes the 4 stored kernels."""
    flat = sd[f"{p}.weight"][0, 0]  # (4, out * in/groups * k * k)
    c_in = x.shape[1]
    outs = []
    logits = F.linear(h_c, sd[f"{p}.residuals.0.weight"], sd[f"{p}.residuals.0.bias"])
    for b in range(x.shape[0]):
        att = torch.softmax(logits[b] / temperature, dim=0)
        mixed = (att[:, None] * flat).sum(0)
        if depthwise:
            k = math.isqrt(mixed.numel() // c_in)
            kernel, groups = mixed.reshape(c_in, 1, k, k), c_in
        else:
            kernel, groups = mixed.reshape(-1, c_in, 1, 1), 1
        pad = (kernel.shape[-1] - 1) // 2
        outs.append(F.conv2d(x[b : b + 1], kernel, stride=stride, padding=pad, groups=groups))
    return torch.cat(outs)


def reference_dy_block(sd, p, x, *, stride: int, act, temperature: float) -> torch.Tensor:
    """models.md §3.2, a DY_Block from its tensors: context, Dy-Conv expand/depthwise/project, Dy-ReLU-B, coord. att."""
    n_f = x.shape[2]
    seq = torch.cat([x.mean(3, keepdim=True), x.mean(2, keepdim=True).permute(0, 1, 3, 2)], dim=2)  # (B, C, F+T, 1)
    g = F.hardswish(_bn(F.conv2d(seq, sd[f"{p}.context_gen.joint_conv.weight"]), sd, f"{p}.context_gen.joint_norm"))
    h_c = g.mean(dim=(2, 3))
    h_f, h_t = g[:, :, :n_f], g[:, :, n_f:]  # both (B, H, L, 1)
    if stride == 2:  # 3-wide average pooling with stride 2 along the sequence, zero padding counted
        h_f = F.avg_pool2d(h_f, (3, 1), (2, 1), (1, 0), count_include_pad=True)
        h_t = F.avg_pool2d(h_t, (3, 1), (2, 1), (1, 0), count_include_pad=True)
    g_f = F.conv2d(h_f, sd[f"{p}.context_gen.conv_f.weight"], sd[f"{p}.context_gen.conv_f.bias"])
    g_t = F.conv2d(h_t, sd[f"{p}.context_gen.conv_t.weight"], sd[f"{p}.context_gen.conv_t.bias"]).permute(0, 1, 3, 2)

    inp, out = x, x
    if f"{p}.exp_conv.weight" in sd:
        out = act(_bn(_dyconv_f(out, sd, f"{p}.exp_conv", h_c, temperature), sd, f"{p}.exp_norm"))
    out = _bn(_dyconv_f(out, sd, f"{p}.depth_conv", h_c, temperature, stride, depthwise=True), sd, f"{p}.depth_norm")
    relu_net = f"{p}.depth_act.coef_net.0"
    theta = 2 * torch.sigmoid(F.linear(h_c, sd[f"{relu_net}.weight"], sd[f"{relu_net}.bias"])) - 1
    coef = theta.reshape(x.shape[0], out.shape[1], 4) * sd[f"{p}.depth_act.lambdas"] + sd[f"{p}.depth_act.init_v"]
    a1, a2, b1, b2 = (coef[:, :, j, None, None] for j in range(4))
    out = torch.maximum(out * a1 + b1, out * a2 + b2)
    out = out * torch.sigmoid(g_f) * torch.sigmoid(g_t)
    out = _bn(_dyconv_f(out, sd, f"{p}.proj_conv", h_c, temperature), sd, f"{p}.proj_norm")
    return out + inp if (stride == 1 and out.shape == inp.shape) else out


def reference_dymn(sd, spec, temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    x = F.hardswish(_conv_bn_f(spec, sd, "in_c", stride=2))
    for i, (*_, stride) in enumerate(BODY):
        x = reference_dy_block(sd, f"layers.{i}", x, stride=stride, act=_act(i), temperature=temperature)
    x = F.hardswish(_conv_bn_f(x, sd, "out_c"))
    return _head_f(x, sd)


def _test_audio(seconds: float = 2.0, batch: int = 2) -> torch.Tensor:
    """A chirp plus noise per example (different content per row), 32 kHz."""
    gen = torch.Generator().manual_seed(7)
    t = torch.arange(int(seconds * 32000)) / 32000
    rows = [0.3 * torch.sin(2 * math.pi * (200 + 900 * (b + 1) * t) * t) for b in range(batch)]
    return torch.stack(rows) + 0.05 * torch.randn(batch, t.numel(), generator=gen)


def _save(tmp_path: Path, state: dict[str, torch.Tensor], name: str) -> Path:
    path = tmp_path / name
    torch.save(state, path)
    return path


def _sd(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return model.state_dict()


# ---------------------------------------------------------------------------------------------------------------------
# 1. Layouts and parameter counts
# ---------------------------------------------------------------------------------------------------------------------
def test_every_width_is_registered_with_the_published_facts():
    archs = {n.split(".")[0] for n in ak.list_models("efficientat_*")}
    assert archs == set(PROBE_PARAMS)
    for arch, params in PROBE_PARAMS.items():
        cfg = ak.get_pretrained_cfg(arch)
        assert cfg.name == f"{arch}.audioset" and cfg.num_params == params
        assert cfg.url.startswith("https://github.com/fschmid56/EfficientAT/releases/download/v0.0.1/")
        assert (cfg.num_classes, cfg.task, cfg.label_set) == (527, "multilabel", "audioset")
        assert cfg.classifier == "classifier.5"
        assert cfg.clip_seconds == 10 and cfg.license == "MIT" and 0.29 < cfg.metrics["audioset_map"] < 0.5
    assert ak.get_pretrained_cfg("efficientat_mn04").sha256 == MN04_SHA256
    assert ak.get_pretrained_cfg("efficientat_mn10").url.endswith("/mn10_as_mAP_471.pt")
    assert ak.get_pretrained_cfg("efficientat_mn40.audioset_ext").url.endswith("/mn40_as_ext_mAP_487.pt")
    assert ak.get_pretrained_cfg("efficientat_dymn20").url.endswith("/dymn20_as_mAP_493.pt")


def test_frontend_cfgs_match_the_original_preprocessing():
    fe = ak.get_pretrained_cfg("efficientat_mn10").frontend
    assert (fe.sample_rate, fe.n_fft, fe.win_length, fe.window) == (32000, 1024, 800, "hann_symmetric")
    assert (fe.hop_length, fe.n_mels) == (320, 128)
    assert (fe.mel_scale, fe.f_min, fe.f_max, fe.preemphasis) == ("kaldi", 0, 15000, 0.97)
    assert (fe.log, fe.log_offset) == ("ln", 1e-5)
    assert (fe.mean, fe.std, fe.stft, fe.center) == (-4.5, 5.0, "fft", True)
    assert fe.num_frames(10 * 32000) == 1000
    for tag, hop, mels in [("audioset_hop5", 160, 128), ("audioset_hop25", 800, 128), ("audioset_mels40", 320, 40),
                           ("audioset_mels256", 320, 256)]:  # fmt: skip
        variant = ak.get_pretrained_cfg(f"efficientat_mn10.{tag}").frontend
        assert (variant.hop_length, variant.n_mels, variant.win_length) == (hop, mels, 800)
    assert ak.get_pretrained_cfg("efficientat_mn10").tag == "audioset"  # the default tag


@pytest.mark.parametrize("arch", list(PROBE_PARAMS))
def test_parameter_count_and_state_dict_layout_equal_the_original(arch):
    model = ak.create_model(arch)
    assert sum(p.numel() for p in model.parameters()) == PROBE_PARAMS[arch]
    w = WIDTHS[arch]
    expected = upstream_dymn_layout(w) if "dymn" in arch else upstream_mn_layout(w)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert list(ours) == list(expected), "tensor names or their order differ from the original checkpoint"
    assert ours == {k: shape for k, (shape, _) in expected.items()}


def test_mn10_layout_examples_from_the_reference():
    sd = _sd(ak.create_model("efficientat_mn10"))
    keys = list(sd)
    assert len(sd) == 312
    assert keys[0] == "features.0.0.weight" and sd[keys[0]].shape == (16, 1, 3, 3)
    bn = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
    assert keys[1:6] == [f"features.0.1.{n}" for n in bn]
    assert sd["features.1.block.0.0.weight"].shape == (16, 1, 3, 3)
    assert sd["features.1.block.1.0.weight"].shape == (16, 16, 1, 1)
    assert sd["features.4.block.2.conc_se_layers.0.fc1.weight"].shape == (24, 72)
    assert sd["features.16.0.weight"].shape == (960, 160, 1, 1)
    assert sd["classifier.2.weight"].shape == (1280, 960)
    assert keys[-2:] == ["classifier.5.weight", "classifier.5.bias"] and sd["classifier.5.weight"].shape == (527, 1280)


def test_dymn10_layout_examples_from_the_reference():
    sd = _sd(ak.create_model("efficientat_dymn10"))
    keys = list(sd)
    assert len(sd) == 578
    assert keys[0] == "layers.0.depth_conv.weight" and sd[keys[0]].shape == (1, 1, 4, 144)
    assert keys[1] == "layers.0.depth_conv.residuals.0.weight" and sd[keys[1]].shape == (4, 32)
    assert sd["layers.1.exp_conv.weight"].shape == (1, 1, 4, 1024)
    assert torch.equal(sd["layers.1.depth_act.lambdas"], torch.tensor([1.0, 1.0, 0.5, 0.5]))
    assert torch.equal(sd["layers.1.depth_act.init_v"], torch.tensor([1.0, 0.0, 0.0, 0.0]))
    assert sd["layers.1.depth_act.coef_net.0.weight"].shape == (256, 32)
    assert sd["layers.1.context_gen.joint_conv.weight"].shape == (32, 16, 1, 1)
    assert sd["layers.1.context_gen.conv_f.weight"].shape == (64, 32, 1, 1)
    assert sd["out_c.0.weight"].shape == (960, 160, 1, 1)
    assert (sd["classifier.2.weight"].shape, sd["classifier.5.weight"].shape) == ((1280, 960), (527, 1280))
    groups = [k.split(".")[0] for k in keys]
    assert groups == sorted(groups, key=["layers", "in_c", "out_c", "classifier"].index)  # original module order
    assert not any("exp_conv" in k for k in keys if k.startswith("layers.0."))  # block 0 does not expand


def test_head_layout_and_embedding_width():
    model = ak.create_model("efficientat_mn04").eval()
    assert isinstance(model, MobileNetAT) and model.num_features == 512
    head = model.classifier
    steps = ["AdaptiveAvgPool2d", "Flatten", "Linear", "Hardswish", "Dropout", "Linear"]
    assert [type(m).__name__ for m in head] == steps
    assert head[4].p == 0.2 and model.get_classifier() is head[5]
    wave = _test_audio(10.0)
    with torch.no_grad():
        fmap = model.forward_features(wave)
        assert fmap.shape == (2, 384, 4, 32)  # 128 x 1000 log-mel downsampled 32x
        assert model.embed(wave).shape == (2, 512)
    embedder = ak.create_model("efficientat_mn04", num_classes=0).eval()
    assert isinstance(embedder.classifier[5], torch.nn.Identity)
    with torch.no_grad():
        assert embedder(wave).shape == (2, 512)


# ---------------------------------------------------------------------------------------------------------------------
# 2. Parity with an independent forward pass
# ---------------------------------------------------------------------------------------------------------------------
def test_frontend_equals_the_reference_steps():
    model = ak.create_model("efficientat_mn04")
    wave = _test_audio(3.0)
    ours = model.frontend(wave)
    ref = reference_logmel(wave)
    assert ours.shape == ref.shape == (2, 1, 128, 300)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    hop5 = ak.create_model("efficientat_mn10.audioset_hop5")
    torch.testing.assert_close(hop5.frontend(wave), reference_logmel(wave, hop=160), atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", ["efficientat_mn04", "efficientat_mn01"])
def test_mn_checkpoint_in_the_original_layout_gives_reference_logits(arch, tmp_path):
    state = random_checkpoint(upstream_mn_layout(WIDTHS[arch]), seed=1)
    path = _save(tmp_path, state, "mn_as.pt")
    model = ak.create_model(f"{arch}.audioset", checkpoint_path=path).eval()
    wave = _test_audio(2.0)
    with torch.no_grad():
        logits, embedding = model(wave), model.embed(wave)
        ref_logits, ref_embedding = reference_mn(state, reference_logmel(wave))
    assert ref_logits.std() > 0.1 and (ref_logits[0] - ref_logits[1]).abs().max() > 0.01  # a test that can fail
    print(f"{arch} parity: max |logit diff| = {(logits - ref_logits).abs().max().item():.2e}")
    torch.testing.assert_close(logits, ref_logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(embedding, ref_embedding, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(model.predict_proba(wave), torch.sigmoid(ref_logits), atol=1e-5, rtol=1e-4)


def test_dy_block_with_expansion_and_stride_equals_the_reference():
    model = ak.create_model("efficientat_dymn04").eval()
    state = random_checkpoint(upstream_dymn_layout(0.4), seed=2)
    model.load_state_dict(state)
    block_index = 3  # 24 -> 72 (expanded) -> 40 channels, 5x5 depthwise, stride 2, ReLU
    block = model.layers[block_index]
    p = f"layers.{block_index}"
    c_in = _round8(BODY[block_index][0] * 0.4)
    assert f"{p}.exp_conv.weight" in state and BODY[block_index][-1] == 2
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, c_in, 17, 26, generator=gen)  # odd and even sizes exercise the pooling edges
    with torch.no_grad():
        ours = block(x)
        ref = reference_dy_block(state, p, x, stride=2, act=F.relu, temperature=1.0)
        assert ours.shape == ref.shape == (3, _round8(40 * 0.4), 9, 13)
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
        # Each example is convolved with its own kernel mixture: batching does not mix examples.
        torch.testing.assert_close(block(x[1:2]), ours[1:2], atol=1e-5, rtol=1e-5)


def _fitted_dymn04_state(wave: torch.Tensor, temperature: float) -> dict[str, torch.Tensor]:
    """``random_checkpoint`` of dymn04 with the BatchNorm statistics of ``wave`` at ``temperature``, as training on
    such audio would give. With the random statistics the two clips' logits differ by only 1e-6, so a per-clip error
    (frontend, Dy-Conv mixing) could not show; statistics fitted at another temperature blow the logits up to 1e9."""
    model = ak.create_model("efficientat_dymn04.audioset", temperature=temperature)
    model.load_state_dict(random_checkpoint(upstream_dymn_layout(0.4), seed=4))
    return calibrate_batchnorm(model, wave).state_dict()


def _float64(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.double() if v.is_floating_point() else v for k, v in state.items()}


def test_dymn_checkpoint_in_the_original_layout_gives_reference_logits(tmp_path):
    """The network is compared in float64 on both sides. These random DyMN weights are chaotic: every block roughly
    doubles a perturbation of its input (2^15 over the body), so float32 rounding of ~3e-7 per block, which differs
    between AVX2 and AVX-512 kernels, reaches ~5e-4 in the logits. A float32 reference therefore agreed only on a host
    whose kernels round like the model's; float64 rounding stays ~1e-12 after the same amplification, on any host."""
    wave = _test_audio(1.5)
    state = _fitted_dymn04_state(wave, temperature=1.0)
    path = _save(tmp_path, state, "dymn04_as.pt")
    model = ak.create_model("efficientat_dymn04.audioset", checkpoint_path=path).eval()
    assert isinstance(model, DynamicMobileNetAT)
    with torch.no_grad():
        ref_logmel = reference_logmel(wave.double())
        # The frontend is float32 by design; its own parity is tested against librosa above.
        torch.testing.assert_close(model.frontend(wave).double(), ref_logmel, atol=1e-4, rtol=0)
        model64 = copy.deepcopy(model).double()
        features = model64.forward_backbone(ref_logmel)
        logits, embedding = model64.forward_head(features), model64.forward_head(features, pre_logits=True)
        ref_logits, ref_embedding = reference_dymn(_float64(state), ref_logmel, temperature=1.0)
        assert ref_logits.std() > 0.1 and (ref_logits[0] - ref_logits[1]).abs().max() > 0.1  # a test that can fail
        print(f"dymn04 parity (float64): max |logit diff| = {(logits - ref_logits).abs().max().item():.2e}")
        torch.testing.assert_close(logits, ref_logits, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(embedding, ref_embedding, atol=1e-6, rtol=1e-6)
        # The float32 model runs the same graph: model(wave) is the backbone on its own frontend's output.
        torch.testing.assert_close(model(wave), model.forward_head(model.forward_backbone(model.frontend(wave))))

        # The temperature is not in the checkpoint; it changes the output, and T=30 still matches the reference.
        hot_state = _fitted_dymn04_state(wave, temperature=30.0)
        model64.load_state_dict(hot_state)
        cold = model64.forward_head(model64.forward_backbone(ref_logmel))
        model64.set_temperature(30.0)
        hot = model64.forward_head(model64.forward_backbone(ref_logmel))
        ref_hot, _ = reference_dymn(_float64(hot_state), ref_logmel, temperature=30.0)
        assert (ref_hot[0] - ref_hot[1]).abs().max() > 0.1
    assert (hot - cold).abs().max() > 1e-3
    torch.testing.assert_close(hot, ref_hot, atol=1e-6, rtol=1e-6)


def test_dymn_temperature_defaults_to_one_for_audioset_weights(tmp_path):
    for arch in ("efficientat_dymn04", "efficientat_dymn10"):
        cfg = ak.get_pretrained_cfg(arch)
        assert cfg.model_kwargs.get("temperature", 1.0) == 1.0
        model = ak.create_model(f"{arch}.audioset")
        assert model.temperature == 1.0
        assert all(m.temperature == 1.0 for m in model.modules() if hasattr(m, "num_kernels"))
    assert ak.create_model("efficientat_dymn04", temperature=30.0).temperature == 30.0
    model = ak.create_model("efficientat_dymn04")
    model.set_temperature(5.0)
    model.save_pretrained(tmp_path / "hot")
    assert ak.create_model(f"local-dir:{tmp_path / 'hot'}").temperature == 5.0
    with pytest.raises(ValueError):
        model.set_temperature(0.0)


# ---------------------------------------------------------------------------------------------------------------------
# 3. The real mn04 checkpoint on real audio
# ---------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def real_mn04():
    if not MN04_FILE.exists():
        pytest.skip(f"{MN04_FILE} is absent (../shared holds the released mn04 checkpoint)")
    digest = hashlib.sha256(MN04_FILE.read_bytes()).hexdigest()
    assert digest == MN04_SHA256 == ak.get_pretrained_cfg("efficientat_mn04").sha256
    return ak.create_model("efficientat_mn04.audioset", checkpoint_path=MN04_FILE).eval()


def _fsdd_files(n: int = 20) -> list[Path]:
    if not FSDD.is_dir():
        pytest.skip(f"{FSDD} is absent (../shared holds the FSDD recordings)")
    files = [FSDD / f"{k % 10}_{SPEAKERS[k % len(SPEAKERS)]}_{(7 * k) % 50}.wav" for k in range(n)]
    missing = [f.name for f in files if not f.exists()]
    if missing:
        pytest.skip(f"FSDD recordings missing: {missing[:3]}")
    return files


def _top(probs: torch.Tensor, names: tuple[str, ...], k: int = 3) -> list[tuple[str, float]]:
    values, indices = probs.topk(k)
    return [(names[i], round(v.item(), 3)) for v, i in zip(values, indices)]


def test_real_mn04_checkpoint_loads_strictly(real_mn04):
    original = torch.load(MN04_FILE, map_location="cpu", weights_only=True)
    ours = real_mn04.state_dict()
    assert list(original) == list(ours) and len(ours) == 312
    assert all(torch.equal(original[k], ours[k]) for k in ours)


def test_real_mn04_hears_speech_in_fsdd(real_mn04):
    files = _fsdd_files(20)
    assert len({f.name.split("_")[1] for f in files}) == len(SPEAKERS)
    names = real_mn04.label_names
    assert names[0] == "Speech"
    hits = 0
    for i, path in enumerate(files):
        wave = ak.load_audio(path, sample_rate=32000)
        probs = real_mn04.predict_proba(wave[None])[0]
        top = _top(probs, names)
        hits += "Speech" in [name for name, _ in top]
        if i < 5:
            print(f"{path.name}: {top}")
    assert hits >= 16, f"Speech in the top 3 for only {hits}/20 spoken digits"


def test_real_mn04_does_not_hear_speech_in_noise_or_a_tone(real_mn04):
    names = real_mn04.label_names
    gen = torch.Generator().manual_seed(0)
    noise = 0.1 * torch.randn(1, 2 * 32000, generator=gen)
    probs = real_mn04.predict_proba(noise)[0]
    top = _top(probs, names)
    print(f"white noise: {top}")
    assert top[0][0] != "Speech" and probs[0] < 0.1
    assert {"White noise", "Static", "Noise", "Pink noise"} & {name for name, _ in top}
    t = torch.arange(2 * 32000) / 32000
    tone = real_mn04.predict_proba((0.3 * torch.sin(2 * math.pi * 440 * t))[None])[0]
    print(f"440 Hz sine: {_top(tone, names)}")
    assert names[int(tone.argmax())] == "Sine wave"


# ---------------------------------------------------------------------------------------------------------------------
# 4. Checkpoints that do not fit
# ---------------------------------------------------------------------------------------------------------------------
def test_checkpoint_of_another_width_is_refused_naming_the_keys(tmp_path):
    path = _save(tmp_path, random_checkpoint(upstream_mn_layout(1.0)), "mn10_as_mAP_471.pt")
    with pytest.raises(ak.CheckpointMismatchError, match=r"shape mismatch") as err:
        ak.create_model("efficientat_mn04.audioset", checkpoint_path=path)
    assert "features.0.0.weight (16, 1, 3, 3) vs model (8, 1, 3, 3)" in str(err.value)


def test_checkpoint_with_a_renamed_key_is_refused_naming_it(tmp_path):
    state = random_checkpoint(upstream_mn_layout(0.4))
    state["features.4.block.2.se.fc1.weight"] = state.pop("features.4.block.2.conc_se_layers.0.fc1.weight")
    path = _save(tmp_path, state, "renamed.pt")
    with pytest.raises(ak.CheckpointMismatchError) as err:
        ak.create_model("efficientat_mn04.audioset", checkpoint_path=path)
    message = str(err.value)
    assert "missing features.4.block.2.conc_se_layers.0.fc1.weight" in message
    assert "unexpected features.4.block.2.se.fc1.weight" in message


def test_dymn_checkpoint_into_mn_is_refused(tmp_path):
    path = _save(tmp_path, random_checkpoint(upstream_dymn_layout(0.4)), "dymn04_as.pt")
    with pytest.raises(ak.CheckpointMismatchError, match=r"missing features\.0\.0\.weight.*unexpected layers\.0\."):
        ak.create_model("efficientat_mn04.audioset", checkpoint_path=path)


def test_data_parallel_prefix_is_accepted(tmp_path):
    state = random_checkpoint(upstream_mn_layout(0.1), seed=5)
    path = _save(tmp_path, {f"module.{k}": v for k, v in state.items()}, "wrapped.pt")
    model = ak.create_model("efficientat_mn01.audioset", checkpoint_path=path)
    assert torch.equal(model.state_dict()["classifier.5.weight"], state["classifier.5.weight"])


def test_new_class_count_keeps_classifier_2_and_replaces_classifier_5(tmp_path):
    state = random_checkpoint(upstream_mn_layout(0.4), seed=6)
    path = _save(tmp_path, state, "mn04_as.pt")
    model = ak.create_model("efficientat_mn04.audioset", checkpoint_path=path, num_classes=50)
    sd = model.state_dict()
    assert torch.equal(sd["classifier.2.weight"], state["classifier.2.weight"])  # the pretrained hidden layer stays
    assert sd["classifier.5.weight"].shape == (50, 512) and model.num_classes == 50
