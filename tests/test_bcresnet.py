"""BC-ResNet: the reference code's state-dict layout, parity with an independent functional forward, real weights.

The reference forward below is written from the architecture description (frontend: torchaudio's MelSpectrogram and
ln(x + 1e-6); SubSpectralNorm as a reshape around batch_norm) and reads the tensors by their reference-code names, so
it checks both the numbers and the name mapping of ``audiokit.models.bcresnet``.
"""

from __future__ import annotations

import hashlib

import pytest
import torch
import torch.nn.functional as F

import audiokit as ak
from tests._calibration import informative
from tests.conftest import FSDD, SHARED, require_shared

VARIANTS = {  # registry suffix -> (base width b, parameter count of the reference network)
    "1": (8, 9_232),
    "1_5": (12, 17_154),
    "2": (16, 27_284),
    "3": (24, 54_168),
    "6": (48, 187_812),
    "8": (64, 321_068),
}
WEIGHTS = SHARED / "weights" / "bcresnet"
SHA256 = {
    "bcresnet8_gsc12.pth": "eb04d0eff740486630b5b8f97f24595d0dbcaa0e3fbc96190eb7f57c8b758928",
    "bcresnet1_gsc12.pth": "08352433fbf9130d528b63b08e9c8d67c258c01a86653381a3628e44a4e374ff",
}
LABELS = ("_silence_", "_unknown_", "down", "go", "left", "no", "off", "on", "right", "stop", "up", "yes")


def _widths(b: int) -> list[int]:
    return [2 * b, b, int(1.5 * b), 2 * b, int(2.5 * b), 4 * b]


def reference_layout(b: int, num_classes: int = 12) -> dict[str, tuple[int, ...]]:
    """Names and shapes of a reference-code checkpoint, in order, from the architecture description."""
    layout: dict[str, tuple[int, ...]] = {}

    def bn(prefix: str, n: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            layout[f"{prefix}.{name}"] = (n,)
        layout[f"{prefix}.num_batches_tracked"] = ()

    c = _widths(b)
    layout["cnn_head.0.weight"] = (c[0], 1, 5, 5)
    bn("cnn_head.1", c[0])
    for stage, depth in enumerate((2, 2, 4, 4)):
        for block in range(depth):
            p = f"BCBlocks.{stage}.{block}"
            c_in, c_out = (c[stage] if block == 0 else c[stage + 1]), c[stage + 1]
            j = 0
            if block == 0:  # transition: 1x1 conv changing the width
                layout[f"{p}.f2.0.block.0.weight"] = (c_out, c_in, 1, 1)
                bn(f"{p}.f2.0.block.1", c_out)
                j = 1
            layout[f"{p}.f2.{j}.block.0.weight"] = (c_out, 1, 3, 1)
            bn(f"{p}.f2.{j}.block.1.ssnorm", 5 * c_out)
            layout[f"{p}.f1.0.block.0.weight"] = (c_out, 1, 1, 3)
            bn(f"{p}.f1.0.block.1", c_out)
            layout[f"{p}.f1.1.weight"] = (c_out, c_out, 1, 1)
    layout["classifier.0.weight"] = (c[4], 1, 5, 5)
    layout["classifier.1.weight"] = (c[5], c[4], 1, 1)
    bn("classifier.2", c[5])
    layout["classifier.5.weight"] = (num_classes, c[5], 1, 1)
    layout["classifier.5.bias"] = (num_classes,)
    return layout


def random_reference_checkpoint(b: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """A checkpoint in the reference layout with trained-looking statistics (not unit/zero BN buffers)."""
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for name, shape in reference_layout(b).items():
        if name.endswith("num_batches_tracked"):
            state[name] = torch.tensor(1000)
        elif name.endswith("running_var"):
            state[name] = 0.5 + torch.rand(shape, generator=gen)
        elif name.endswith("running_mean"):
            state[name] = 0.2 * torch.randn(shape, generator=gen)
        elif name.endswith(".bias") and len(shape) == 1:
            state[name] = 0.1 * torch.randn(shape, generator=gen)
        elif len(shape) == 1:  # BN weight
            state[name] = 1.0 + 0.2 * torch.randn(shape, generator=gen)
        else:  # conv weight, roughly variance-preserving
            fan_in = max(1, int(torch.tensor(shape[1:]).prod()))
            state[name] = torch.randn(shape, generator=gen) * (2.0 / fan_in) ** 0.5
    return state


def reference_forward(state: dict[str, torch.Tensor], wave: torch.Tensor) -> torch.Tensor:
    """Logits from a reference-layout state dict with torch.nn.functional ops only (eval mode)."""
    import torchaudio

    def bn(x: torch.Tensor, p: str) -> torch.Tensor:
        return F.batch_norm(
            x, state[f"{p}.running_mean"], state[f"{p}.running_var"], state[f"{p}.weight"], state[f"{p}.bias"],
            training=False, eps=1e-5,
        )  # fmt: skip

    wave = F.pad(wave, (0, 16000 - wave.shape[-1]))
    mel = torchaudio.transforms.MelSpectrogram(16000, n_fft=512, win_length=480, hop_length=160, n_mels=40)(wave)
    x = torch.log(mel + 1e-6)[:, None]  # (B, 1, 40, 101)
    x = F.relu(bn(F.conv2d(x, state["cnn_head.0.weight"], stride=(2, 1), padding=2), "cnn_head.1"))
    for stage, depth in enumerate((2, 2, 4, 4)):
        d = 2**stage
        for block in range(depth):
            p = f"BCBlocks.{stage}.{block}"
            h, j = x, 0
            if block == 0:
                h = F.relu(bn(F.conv2d(h, state[f"{p}.f2.0.block.0.weight"]), f"{p}.f2.0.block.1"))
                j = 1
            stride = 2 if block == 0 and stage in (1, 2) else 1
            c = h.shape[1]
            h = F.conv2d(h, state[f"{p}.f2.{j}.block.0.weight"], stride=(stride, 1), padding=(1, 0), groups=c)
            n, _, nf, nt = h.shape
            h = bn(h.reshape(n, c * 5, nf // 5, nt), f"{p}.f2.{j}.block.1.ssnorm").reshape(n, c, nf, nt)
            t = h.mean(dim=2, keepdim=True)
            t = F.conv2d(t, state[f"{p}.f1.0.block.0.weight"], padding=(0, d), dilation=(1, d), groups=c)
            t = F.conv2d(F.silu(bn(t, f"{p}.f1.0.block.1")), state[f"{p}.f1.1.weight"])
            out = h + t
            x = F.relu(out if block == 0 else out + x)
    c = x.shape[1]
    x = F.conv2d(x, state["classifier.0.weight"], padding=(0, 2), groups=c)
    x = F.relu(bn(F.conv2d(x, state["classifier.1.weight"]), "classifier.2"))
    x = x.mean(dim=(2, 3), keepdim=True)
    return F.conv2d(x, state["classifier.5.weight"], state["classifier.5.bias"]).flatten(1)


# -- layout ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("suffix", list(VARIANTS))
def test_param_counts_and_reference_layout(suffix):
    b, num_params = VARIANTS[suffix]
    name = f"bcresnet_{suffix}.speechcommands"
    model = ak.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == num_params == model.pretrained_cfg.num_params
    assert model.num_features == 4 * b
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    expected = reference_layout(b)
    assert len(expected) == len(ours) == 195
    expected["classifier.5.weight"] = (12, 4 * b)  # a Linear here, a 1x1 conv in the reference code
    assert list(ours) == list(expected) and ours == expected
    assert model.label_names == LABELS


def test_representative_shapes_bcresnet8():
    shapes = {k: tuple(v.shape) for k, v in ak.create_model("bcresnet_8").state_dict().items()}
    assert shapes["cnn_head.0.weight"] == (128, 1, 5, 5)
    assert shapes["BCBlocks.0.0.f2.0.block.0.weight"] == (64, 128, 1, 1)
    assert shapes["BCBlocks.0.0.f2.1.block.1.ssnorm.running_var"] == (320,)
    assert shapes["BCBlocks.1.1.f2.0.block.0.weight"] == (96, 1, 3, 1)
    assert shapes["BCBlocks.3.3.f1.0.block.0.weight"] == (160, 1, 1, 3)
    assert shapes["BCBlocks.3.3.f1.1.weight"] == (160, 160, 1, 1)
    assert shapes["classifier.0.weight"] == (160, 1, 5, 5)
    assert shapes["classifier.1.weight"] == (256, 160, 1, 1)
    assert shapes["classifier.5.bias"] == (12,)


def test_registry_metadata():
    cfg = ak.get_pretrained_cfg("bcresnet_8")
    assert cfg.name == "bcresnet_8.speechcommands" and cfg.task == "multiclass" and cfg.num_classes == 12
    assert cfg.url is None and not cfg.has_weights and "checkpoint_path" in cfg.notes
    assert cfg.metrics == {"gsc_v1_acc": 0.980, "gsc_v2_acc": 0.987} and cfg.clip_seconds == 1.0
    assert "patent" in cfg.license.lower()
    fe = cfg.frontend
    assert (fe.sample_rate, fe.n_fft, fe.win_length, fe.hop_length, fe.n_mels) == (16000, 512, 480, 160, 40)
    assert (fe.mel_scale, fe.mel_norm, fe.log, fe.log_offset, fe.window) == ("htk", None, "ln", 1e-6, "hann")


# -- parity ----------------------------------------------------------------------------------------------------------
def test_parity_with_functional_reference(tmp_path):
    state = random_reference_checkpoint(8, seed=3)
    path = tmp_path / "bcresnet1_reference_layout.pth"
    torch.save(state, path)
    model = ak.create_model("bcresnet_1.speechcommands", checkpoint_path=path).eval()
    gen = torch.Generator().manual_seed(7)
    wave = 0.1 * torch.randn(3, 16000, generator=gen)
    wave[2, 9000:] = 0.0  # a clip that ends early
    with torch.no_grad():
        ours = model(wave)
        ref = reference_forward(state, wave)
        short = model(wave[:, :12000])  # padded to 1 s inside the model
        ref_short = reference_forward(state, wave[:, :12000])
    assert ours.shape == (3, 12)
    assert ref.abs().max() > 1.0  # a non-degenerate comparison
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(short, ref_short, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(model.get_classifier()(model.embed(wave)), ours)


def test_wrapped_and_prefixed_checkpoints_load(tmp_path):
    state = random_reference_checkpoint(12, seed=1)
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    model = ak.create_model("bcresnet_1_5", checkpoint_path=path)
    torch.testing.assert_close(model.classifier[5].weight, state["classifier.5.weight"].flatten(1))
    torch.testing.assert_close(model.BCBlocks[2][3].f2[0].block[1].ssnorm.running_var,
                               state["BCBlocks.2.3.f2.0.block.1.ssnorm.running_var"])  # fmt: skip


def test_longer_than_one_second_is_refused():
    model = ak.create_model("bcresnet_1").eval()
    with pytest.raises(ValueError, match=r"at most 16000 samples.*--window 1"):
        model(torch.zeros(1, 16001))
    assert model.max_samples == 16000


def test_wrong_width_checkpoint_names_the_keys(tmp_path):
    path = tmp_path / "bcresnet2.pth"
    torch.save(random_reference_checkpoint(16), path)
    with pytest.raises(ak.CheckpointMismatchError, match=r"shape mismatch.*cnn_head\.0\.weight \(32, 1, 5, 5\)"):
        ak.create_model("bcresnet_1", checkpoint_path=path)


# -- real weights (trained with the reference code; kept in ../shared) -----------------------------------------------
def _checkpoint(filename: str):
    path = require_shared(WEIGHTS / filename)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHA256[filename]
    return path


def _fsdd_clips(count: int = 30) -> list[tuple[str, torch.Tensor]]:
    files = sorted(require_shared(FSDD).glob("*.wav"))[::100][:count]
    clips = []
    for f in files:
        wave = ak.load_audio(f, sample_rate=16000)[:16000]  # the odd recording over 1 s: its first second
        clips.append((f.name, wave))
    return clips


@pytest.mark.parametrize(("filename", "arch", "min_unknown"), [
    ("bcresnet8_gsc12.pth", "bcresnet_8", 0.85),
    ("bcresnet1_gsc12.pth", "bcresnet_1", 0.7),
])  # fmt: skip
def test_real_weights(filename, arch, min_unknown):
    path = _checkpoint(filename)
    raw = torch.load(path, map_location="cpu", weights_only=True)
    model = ak.create_model(arch, checkpoint_path=path).eval()
    assert list(raw) == list(model.state_dict())  # the reference order, every tensor used

    gen = torch.Generator().manual_seed(0)
    quiet = 1e-4 * torch.randn(2, 16000, generator=gen)
    assert model.predict_proba(quiet).argmax(-1).tolist() == [0, 0]  # _silence_

    clips = _fsdd_clips()
    assert len(clips) == 30
    batch = torch.stack([F.pad(w, (0, 16000 - w.shape[-1])) for _, w in clips])
    probs = model.predict_proba(batch)
    torch.testing.assert_close(probs[:1], model.predict_proba(clips[0][1][None]))  # padding in the model = ours
    with torch.no_grad():  # trained weights through the functional reference (raw file, conv classifier)
        torch.testing.assert_close(model(batch[:4]), reference_forward(raw, batch[:4]), atol=1e-4, rtol=1e-5)
    top = []
    for (name, _), row in zip(clips, probs):
        p, i = row.topk(2)
        top.append((name, [(model.label_names[k], round(float(v), 3)) for v, k in zip(p, i)]))
    unknown = sum(t[1][0][0] == "_unknown_" for t in top) / len(top)
    print(f"\n{arch}: {unknown:.0%} of {len(top)} FSDD digits -> _unknown_; first five: {top[:5]}")
    assert unknown >= min_unknown, top


def test_real_bcresnet8_does_not_fit_bcresnet1():
    path = _checkpoint("bcresnet8_gsc12.pth")
    with pytest.raises(ak.CheckpointMismatchError, match=r"does not fit bcresnet_1.*shape mismatch.*cnn_head"):
        ak.create_model("bcresnet_1", checkpoint_path=path)


def test_tag_windows_a_long_file_for_the_fixed_one_second_input(make_wav):
    """A 2.5 s file through a 1 s model is tagged in 1 s windows (never truncated, never an error)."""
    model = informative("bcresnet_1.speechcommands")  # as created, every window scores 1.0000 for "yes"
    path = make_wav("long.wav", 2.5, rate=16000)
    (record,) = ak.tag(path, model, top_k=2, progress=False, num_workers=0)
    assert record["error"] is None
    assert [(w["start"], w["end"]) for w in record["windows"]] == [(0.0, 1.0), (1.0, 2.0), (1.5, 2.5)]
    wave = ak.load_audio(path, sample_rate=16000)
    expected = model.predict_proba(wave[None, 16000:32000])[0]
    best = record["windows"][1]["labels"][0]
    assert best["label"] == model.label_names[int(expected.argmax())]
    assert best["score"] == pytest.approx(float(expected.max()), abs=1e-5)
