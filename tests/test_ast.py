"""AST: Kaldi fbank frontend parity, checkpoint layouts (original .pth, Hugging Face, ours) and model parity against an
independent functional forward written here from the published architecture description."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

import audiokit as ak
from audiokit._pretrained import FrontendCfg
from audiokit._weights import CheckpointMismatchError
from audiokit.audio.frontend import LogMelFrontend
from audiokit.models import ast as ast_mod

TINY = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 128}


def _wave(seconds: float, batch: int = 2, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return 0.1 * torch.randn(batch, int(seconds * 16000), generator=gen)


# ---------------------------------------------------------------------------------------------------------------------
# Frontend
# ---------------------------------------------------------------------------------------------------------------------
def _reference_fbank(clip: torch.Tensor, max_frames: int, mean: float, std: float) -> torch.Tensor:
    """The original AST preprocessing, written out: kaldi fbank -> zero-pad / truncate -> (x - mean) / (2 std)."""
    from torchaudio.compliance import kaldi

    fb = kaldi.fbank(
        clip[None], htk_compat=True, sample_frequency=16000, use_energy=False, window_type="hanning",
        num_mel_bins=128, dither=0.0, frame_shift=10,
    )  # fmt: skip
    if fb.shape[0] < max_frames:
        fb = torch.cat([fb, torch.zeros(max_frames - fb.shape[0], 128)])
    fb = fb[:max_frames]
    return (fb - mean) / (2 * std)


@pytest.mark.parametrize(
    ("name", "seconds"),
    [("ast_base.audioset", 3.0), ("ast_base.audioset", 12.0), ("ast_base.speechcommands_v2", 1.0),
     ("ast_base.speechcommands_v2", 0.5)],
)  # fmt: skip
def test_frontend_matches_kaldi_and_hf_feature_extractor(name, seconds):
    from transformers import ASTFeatureExtractor

    cfg = ak.get_pretrained_cfg(name).frontend
    mean, std = cfg.mean, cfg.std / 2
    wave = _wave(seconds)
    ours = LogMelFrontend(cfg)(wave)
    assert ours.shape == (2, 1, 128, cfg.max_frames)

    ref = torch.stack([_reference_fbank(c, cfg.max_frames, mean, std).T for c in wave])[:, None]
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)

    fe = ASTFeatureExtractor(max_length=cfg.max_frames, mean=mean, std=std)
    hf = fe([c.numpy() for c in wave], sampling_rate=16000, return_tensors="pt")["input_values"]
    err = (ours[:, 0].transpose(1, 2) - hf).abs().max().item()
    assert err < 1e-4, err
    # Padded rows are zeros in the log domain, so after normalisation they hold -mean / (2 std), not 0.
    if cfg.num_frames(wave.shape[-1]) == cfg.max_frames and seconds * 100 < cfg.max_frames:
        torch.testing.assert_close(ours[0, 0, :, -1], torch.full((128,), -mean / (2 * std)))


def test_frontend_cfg_kaldi_fields():
    cfg = ak.get_pretrained_cfg("ast_base.audioset").frontend
    assert cfg.kind == "kaldi_fbank" and cfg.max_frames == 1024 and cfg.min_samples == 400
    assert cfg.num_frames(160000) == 1024 and cfg.std == 2 * 4.5689974
    assert FrontendCfg.from_dict(cfg.to_dict()) == cfg
    assert FrontendCfg().max_frames is None  # existing configs are unchanged
    with pytest.raises(ValueError, match="center must be False"):
        LogMelFrontend(FrontendCfg(**{**cfg.to_dict(), "center": True}))
    with pytest.raises(ValueError, match="at least 400"):
        LogMelFrontend(cfg)(torch.zeros(1, 399))
    # Unbounded length without max_frames: Kaldi's own frame count.
    free = LogMelFrontend(FrontendCfg(**{**cfg.to_dict(), "max_frames": None}))
    assert free(torch.zeros(1, 16000)).shape == (1, 1, 128, 98)


# ---------------------------------------------------------------------------------------------------------------------
# Checkpoints in the original layout, and an independent forward
# ---------------------------------------------------------------------------------------------------------------------
def _original_state_dict(hidden: int, layers: int, mlp: int, tokens: int, classes: int, seed: int = 0):
    """Random weights in the exact layout of the original ``*.pth`` files (DataParallel ``module.`` prefix)."""
    gen = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.05):
        return scale * torch.randn(*shape, generator=gen)

    sd = {
        "v.cls_token": r(1, 1, hidden, scale=0.5),
        "v.pos_embed": r(1, tokens, hidden, scale=0.5),
        "v.dist_token": r(1, 1, hidden, scale=0.5),
        "v.patch_embed.proj.weight": r(hidden, 1, 16, 16),
        "v.patch_embed.proj.bias": r(hidden),
    }
    for i in range(layers):
        p = f"v.blocks.{i}."
        sd.update({
            p + "norm1.weight": 1 + r(hidden), p + "norm1.bias": r(hidden),
            p + "attn.qkv.weight": r(3 * hidden, hidden, scale=0.2), p + "attn.qkv.bias": r(3 * hidden),
            p + "attn.proj.weight": r(hidden, hidden, scale=0.2), p + "attn.proj.bias": r(hidden),
            p + "norm2.weight": 1 + r(hidden), p + "norm2.bias": r(hidden),
            p + "mlp.fc1.weight": r(mlp, hidden, scale=0.2), p + "mlp.fc1.bias": r(mlp),
            p + "mlp.fc2.weight": r(hidden, mlp, scale=0.2), p + "mlp.fc2.bias": r(hidden),
        })  # fmt: skip
    sd.update({
        "v.norm.weight": 1 + r(hidden), "v.norm.bias": r(hidden),
        "v.head.weight": r(1000, hidden), "v.head.bias": r(1000),
        "v.head_dist.weight": r(1000, hidden), "v.head_dist.bias": r(1000),
        "mlp_head.0.weight": 1 + r(hidden), "mlp_head.0.bias": r(hidden),
        "mlp_head.1.weight": r(classes, hidden, scale=0.5), "mlp_head.1.bias": r(classes),
    })  # fmt: skip
    return {"module." + k: v for k, v in sd.items()}


def _reference_forward(sd: dict, fbank: torch.Tensor, heads: int, stride: int) -> torch.Tensor:
    """AST from the paper / timm 0.4.5 description, in plain functional ops: ``fbank`` is ``(B, 1, F, T)``."""
    w = {k[len("module.") :]: v.double() for k, v in sd.items()}
    x = F.conv2d(fbank.double(), w["v.patch_embed.proj.weight"], w["v.patch_embed.proj.bias"], stride=stride)
    x = x.flatten(2).transpose(1, 2)  # (B, patches, D), frequency-major like the original
    b, _, d = x.shape
    x = torch.cat([w["v.cls_token"].expand(b, -1, -1), w["v.dist_token"].expand(b, -1, -1), x], 1) + w["v.pos_embed"]
    hd = d // heads
    i = 0
    while f"v.blocks.{i}.norm1.weight" in w:
        p = f"v.blocks.{i}."
        h = F.layer_norm(x, (d,), w[p + "norm1.weight"], w[p + "norm1.bias"], eps=1e-6)
        qkv = F.linear(h, w[p + "attn.qkv.weight"], w[p + "attn.qkv.bias"]).reshape(b, -1, 3, heads, hd)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        att = torch.softmax((q @ k.transpose(-2, -1)) * hd**-0.5, dim=-1)
        h = (att @ v).transpose(1, 2).reshape(b, -1, d)
        x = x + F.linear(h, w[p + "attn.proj.weight"], w[p + "attn.proj.bias"])
        h = F.layer_norm(x, (d,), w[p + "norm2.weight"], w[p + "norm2.bias"], eps=1e-6)
        h = F.linear(F.gelu(F.linear(h, w[p + "mlp.fc1.weight"], w[p + "mlp.fc1.bias"])), w[p + "mlp.fc2.weight"],
                     w[p + "mlp.fc2.bias"])  # fmt: skip
        x = x + h
        i += 1
    x = F.layer_norm(x, (d,), w["v.norm.weight"], w["v.norm.bias"], eps=1e-6)
    pooled = (x[:, 0] + x[:, 1]) / 2
    pooled = F.layer_norm(pooled, (d,), w["mlp_head.0.weight"], w["mlp_head.0.bias"], eps=1e-5)
    return F.linear(pooled, w["mlp_head.1.weight"], w["mlp_head.1.bias"])


def _tokens(model) -> int:
    f, t = model.patch_grid
    return 2 + f * t


CASES = [("ast_base.speechcommands_v2", 1.0), ("ast_base.audioset", 10.0), ("ast_base_16x16.audioset", 4.0)]


@pytest.mark.parametrize(("name", "seconds"), CASES)
def test_original_checkpoint_parity(name, seconds, tmp_path):
    model = ak.create_model(name, **TINY)
    cfg = model.pretrained_cfg
    sd = _original_state_dict(64, 2, 128, _tokens(model), cfg.num_classes)
    path = tmp_path / "orig.pth"
    torch.save(sd, path)
    model = ak.create_model(name, checkpoint_path=path, **TINY).eval()
    wave = _wave(seconds)
    with torch.no_grad():
        logits = model(wave)
        ref = _reference_forward(sd, model.frontend(wave), heads=4, stride=model.config.time_stride)
    err = (logits.double() - ref).abs().max().item()
    assert err < 1e-4, err
    assert logits.abs().max() > 0.1  # not a degenerate comparison
    torch.testing.assert_close(model.get_classifier()(model.embed(wave)), logits)


def test_convert_original_state_dict_is_a_pure_key_map():
    sd = {k[len("module.") :]: v for k, v in _original_state_dict(8, 1, 16, 5, 3).items()}
    before = {k: v.clone() for k, v in sd.items()}
    out = ast_mod.convert_original_state_dict(sd)
    assert sd.keys() == before.keys() and all(torch.equal(sd[k], before[k]) for k in sd)  # input untouched
    assert not any(".head." in k or "head_dist" in k for k in out if k.startswith("backbone"))
    assert "v.head.weight" not in out and "v.head_dist.bias" not in out
    qkv_w, qkv_b = sd["v.blocks.0.attn.qkv.weight"], sd["v.blocks.0.attn.qkv.bias"]
    for j, name in enumerate(("q_proj", "k_proj", "v_proj")):
        assert torch.equal(out[f"backbone.layers.0.attention.{name}.weight"], qkv_w[8 * j : 8 * (j + 1)])
        assert torch.equal(out[f"backbone.layers.0.attention.{name}.bias"], qkv_b[8 * j : 8 * (j + 1)])
    expected = {
        "v.cls_token": "backbone.embeddings.cls_token",
        "v.dist_token": "backbone.embeddings.distillation_token",
        "v.pos_embed": "backbone.embeddings.position_embeddings",
        "v.patch_embed.proj.weight": "backbone.embeddings.patch_embeddings.projection.weight",
        "v.blocks.0.norm1.bias": "backbone.layers.0.layernorm_before.bias",
        "v.blocks.0.norm2.weight": "backbone.layers.0.layernorm_after.weight",
        "v.blocks.0.attn.proj.weight": "backbone.layers.0.attention.o_proj.weight",
        "v.blocks.0.mlp.fc1.bias": "backbone.layers.0.mlp.fc1.bias",
        "v.blocks.0.mlp.fc2.weight": "backbone.layers.0.mlp.fc2.weight",
        "v.norm.weight": "backbone.layernorm.weight",
        "mlp_head.0.bias": "head_norm.bias",
        "mlp_head.1.weight": "head.weight",
    }
    for old, new in expected.items():
        assert torch.equal(out[new], sd[old])
    assert len(out) == len(sd) - 4 + 4  # 4 DeiT head tensors dropped; 2 fused tensors became 6


# ---------------------------------------------------------------------------------------------------------------------
# Hugging Face layouts
# ---------------------------------------------------------------------------------------------------------------------
_TO_HF4 = [
    ("backbone.layers.", "audio_spectrogram_transformer.encoder.layer."),
    (".attention.q_proj.", ".attention.attention.query."),
    (".attention.k_proj.", ".attention.attention.key."),
    (".attention.v_proj.", ".attention.attention.value."),
    (".attention.o_proj.", ".attention.output.dense."),
    (".mlp.fc1.", ".intermediate.dense."),
    (".mlp.fc2.", ".output.dense."),
    ("backbone.", "audio_spectrogram_transformer."),
    ("head_norm.", "classifier.layernorm."),
    ("head.", "classifier.dense."),
]


def _to_hf4(sd: dict) -> dict:
    out = {}
    for k, v in sd.items():
        for a, b in _TO_HF4:
            if k.startswith(a) or (not a.startswith(("backbone", "head")) and a in k):
                k = k.replace(a, b, 1)
        out[k] = v.clone()
    return out


def test_hf_checkpoints_give_identical_logits(tmp_path):
    from transformers import ASTForAudioClassification

    name = "ast_base.speechcommands_v2"
    model = ak.create_model(name, **TINY)
    orig = _original_state_dict(64, 2, 128, _tokens(model), 35, seed=3)
    torch.save(orig, tmp_path / "orig.pth")
    model = ak.create_model(name, checkpoint_path=tmp_path / "orig.pth", **TINY).eval()
    wave = _wave(1.0)
    with torch.no_grad():
        logits = model(wave)
        fbank = model.frontend(wave)

    # transformers 4.x file names, in a hub-style directory.
    hf4 = _to_hf4(model.state_dict())
    assert "audio_spectrogram_transformer.encoder.layer.1.attention.attention.query.weight" in hf4
    assert "audio_spectrogram_transformer.encoder.layer.1.output.dense.bias" in hf4
    # A transformers directory is built from its config.json (there one layer_norm_eps serves the head too, so the
    # logits differ from the original's): every tensor must land where the original's went.
    hf_cfg = model.config.__class__(**{**model.config.to_dict(), "num_labels": 35})
    hub_dir = tmp_path / "hub"
    hub_dir.mkdir()
    save_file(hf4, hub_dir / "model.safetensors")
    (hub_dir / "config.json").write_text(json.dumps(hf_cfg.to_dict()))
    again = ak.create_model(name, checkpoint_path=hub_dir, **TINY).eval()
    assert again.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in again.state_dict().items())

    # transformers 5.x in-memory names: load them into the real HF class (eps set to the original's) and compare.
    hf = ASTForAudioClassification(hf_cfg).eval()
    hf.classifier.layernorm.eps = 1e-5
    missing, unexpected = hf.load_state_dict(hf4, strict=False)  # 4.x names: transformers maps them on from_pretrained
    hf5 = {
        k.replace("backbone.", "audio_spectrogram_transformer.", 1)
        .replace("head_norm.", "classifier.layernorm.", 1)
        .replace("head.", "classifier.dense.", 1)
        if k.startswith(("backbone.", "head_norm.", "head."))
        else k: v
        for k, v in model.state_dict().items()
    }
    hf.load_state_dict(hf5, strict=True)
    assert set(hf5) == set(hf.state_dict())
    with torch.no_grad():
        hf_logits = hf(input_values=fbank[:, 0].transpose(1, 2)).logits
    torch.testing.assert_close(hf_logits, logits, atol=1e-5, rtol=1e-5)
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")
    again = ak.create_model(name, checkpoint_path=tmp_path, **TINY).eval()
    with torch.no_grad():
        assert torch.equal(again(wave), logits)
    assert missing or unexpected  # sanity: the 4.x names really differ from the 5.x ones


def test_checkpoint_directory_without_weights_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors"):
        ak.create_model("ast_base.speechcommands_v2", checkpoint_path=tmp_path, **TINY)


def test_wrong_checkpoint_names_keys(tmp_path):
    model = ak.create_model("ast_base.speechcommands_v2", **TINY)
    sd = _original_state_dict(64, 2, 128, _tokens(model), 35)
    del sd["module.v.blocks.1.norm2.weight"]
    sd["module.v.extra.weight"] = torch.zeros(3)
    torch.save(sd, tmp_path / "bad.pth")
    with pytest.raises(CheckpointMismatchError, match=r"layers\.1\.layernorm_after\.weight.*v\.extra\.weight"):
        ak.create_model("ast_base.speechcommands_v2", checkpoint_path=tmp_path / "bad.pth", **TINY)
    # A full-size checkpoint into a tiny model: shape mismatches are named.
    torch.save(_original_state_dict(64, 2, 128, _tokens(model) + 1, 35), tmp_path / "grid.pth")
    with pytest.raises(CheckpointMismatchError, match="position_embeddings"):
        ak.create_model("ast_base.speechcommands_v2", checkpoint_path=tmp_path / "grid.pth", **TINY)


def test_new_class_count_keeps_backbone(tmp_path):
    model = ak.create_model("ast_base.speechcommands_v2", **TINY)
    sd = _original_state_dict(64, 2, 128, _tokens(model), 35)
    torch.save(sd, tmp_path / "orig.pth")
    model = ak.create_model("ast_base.speechcommands_v2", checkpoint_path=tmp_path / "orig.pth", num_classes=5, **TINY)
    assert model.get_classifier().out_features == 5
    assert torch.equal(model.head_norm.weight, sd["module.mlp_head.0.weight"])


# ---------------------------------------------------------------------------------------------------------------------
# Registered configurations and the full-size model
# ---------------------------------------------------------------------------------------------------------------------
def test_registered_configs():
    sc = ak.get_pretrained_cfg("ast_base.speechcommands_v2")
    assert sc.task == "multiclass" and sc.num_classes == 35 and sc.frontend.max_frames == 128
    names = sc.get_label_names()
    assert len(names) == 35 and names[:4] == ("backward", "follow", "five", "bed") and names[-1] == "one"
    as_ = ak.get_pretrained_cfg("ast_base.audioset")
    assert as_.task == "multilabel" and as_.label_set == "audioset" and as_.classifier == "head"
    assert as_.hf_hub_id == "MIT/ast-finetuned-audioset-10-10-0.4593" and as_.url.endswith("0.4593.pth?dl=1")
    assert math.isclose(as_.frontend.mean, -4.2677393) and math.isclose(sc.frontend.mean, -6.845978)
    for stride in (12, 14, 16):
        assert ak.get_pretrained_cfg(f"ast_base_{stride}x{stride}.audioset").model_kwargs["fstride"] == stride


@pytest.mark.slow
def test_full_size_ast_base():
    model = ak.create_model("ast_base.audioset").eval()
    assert sum(p.numel() for p in model.parameters()) == 86_594_063
    assert model.patch_grid == (12, 101) and model.num_features == 768 and model.min_samples == 400
    eps = {m.eps for m in model.backbone.modules() if isinstance(m, torch.nn.LayerNorm)}
    assert eps == {1e-6} and model.head_norm.eps == 1e-5
    with torch.no_grad():
        logits = model(_wave(10.0, batch=1))
    assert logits.shape == (1, 527) and torch.isfinite(logits).all()


def test_tag_long_file(make_wav):
    model = ak.create_model("ast_base.audioset", **TINY).eval()
    path = make_wav("long.wav", 25.0, rate=16000)
    (rec,) = ak.tag(path, model, top_k=3, window=10.0, progress=False, num_workers=0)
    assert rec["error"] is None and len(rec["labels"]) == 3
    assert [(w["start"], w["end"]) for w in rec["windows"]] == [(0.0, 10.0), (10.0, 20.0), (15.0, 25.0)]
    # Without a window the file is cut into windows of the model's fixed input (1024 frames = 10.255 s), never
    # truncated to its first 10 s; a window longer than that is refused.
    (whole,) = ak.tag(path, model, top_k=3, progress=False, num_workers=0)
    assert whole["error"] is None and any("windows" in w for w in whole["warnings"])
    assert [(w["start"], w["end"]) for w in whole["windows"]] == [(0.0, 10.255), (10.255, 20.51), (14.745, 25.0)]
    wave = ak.load_audio(path, sample_rate=16000)
    last = model.predict_proba(wave[None, len(wave) - model.max_samples :])[0]  # the end-aligned last window
    top = max(whole["windows"][-1]["labels"], key=lambda x: x["score"])
    assert top["score"] == pytest.approx(float(last.max()), abs=1e-5)
    with pytest.raises(ValueError, match=r"longer than ast_base\.audioset's fixed input"):
        ak.tag(path, model, window=20.0, progress=False, num_workers=0)
