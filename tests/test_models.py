"""Registry sweep: every registered model honours the contract, on random weights.

For each name: the parameter count equals the published one, forward works on 1 s and 10 s of audio, logits are the
classifier applied to the embedding, a clip's result does not depend on its batch, a new head trains, a pure embedder
returns the embedding, and save_pretrained / local-dir: round-trips bit-exactly.

The contract's comparisons run on random weights whose outputs move with the input (``_random_model``); freshly
created weights of several families give outputs that no comparison could tell apart.
"""

from __future__ import annotations

import pytest
import torch

import audiokit as ak
from tests._calibration import informative

ALL_MODELS = ak.list_models()
BIG = {"efficientat_mn30", "efficientat_mn40", "efficientat_dymn20", "panns_cnn14", "panns_cnn14_16k",
       "panns_wavegram_logmel_cnn14", "ast_base", "ast_base_12x12", "ast_base_14x14", "ast_base_16x16",
       "wav2vec2_base", "hubert_base", "wavlm_base", "vggish", "htsat"}  # fmt: skip
# PaSST: every variant is a ViT-B (or the 7-block PaSST-L) at ~5-20 s a forward here; tests/test_passt.py checks the
# family on a small configuration in the default run.
BIG |= {name.split(".")[0] for name in ak.list_models("passt_*")}
# SSAST: ViT-B (-S, -Ti) embedders over 1214 tokens (frame models 1025) at ~4 s a Base forward here.
BIG |= {name.split(".")[0] for name in ak.list_models("ssast_*")}


def _marks(name: str):
    return [pytest.mark.slow] if name.split(".")[0] in BIG else []


SWEEP = [pytest.param(name, marks=_marks(name), id=name) for name in ALL_MODELS]
# AST's stride variants are the ast_base module with another patch grid: what is theirs is the parameter count and a
# forward over the whole input on that grid (test_ast_stride_variants_at_their_full_input; test_ast checks 16x16
# parity with an independent forward). Running the rest of the contract on them repeats ast_base's code path at
# ~20 s each on 2 CPU cores.
AST_STRIDE_VARIANTS = ("ast_base_12x12", "ast_base_14x14", "ast_base_16x16")
# PaSST likewise: every variant is the one PaSST module with another stride, input length, depth or frontend hop; the
# contract runs on passt_s.audioset (at 10-40 s a ViT-B forward here; the family's numerics are tested on a small
# configuration in tests/test_passt.py), the variants are checked for what is theirs: size and positional grid.
# (Names, not SWEEP's params: these meta-device checks take milliseconds and run without the full-size slow mark.)
PASST_VARIANTS = [name for name in ALL_MODELS if name.startswith("passt_") and name != "passt_s.audioset"]
# SSAST likewise: the releases are one module at three widths and two patch shapes, the ESC-50 tags the same weights
# with a 512-frame input; the contract runs on the Tiny patch and frame models (both geometries, ~5 s a test here
# against ~30 s for a Base; the Base-Patch release is built, loaded and run at full size in
# tests/test_ssast.py's slow test), the others are checked for their size and positional grid (tests/test_ssast.py
# checks the family's numerics on a small configuration).
SSAST_CONTRACT = ("ssast_tiny_patch.ssl", "ssast_tiny_frame.ssl")
SSAST_VARIANTS = [name for name in ALL_MODELS if name.startswith("ssast_") and name not in SSAST_CONTRACT]
# SAT: forward over a clip of several pieces returns the logit of the mean of the pieces' probabilities (upstream's
# output, so that predict_proba and tag report it), which no Linear of the clip embedding gives: the contract runs in
# tests/test_sat.py with that identity on small configurations; here every variant is checked for its size and grid.
SAT_VARIANTS = [name for name in ALL_MODELS if name.startswith("sat_")]
# torchaudio's bundles: the Wav2Vec2 / HuBERT / WavLM modules the contract runs on under their Hugging Face names,
# at up to 2.2e9 parameters (XLS-R 2B); tests/test_torchaudio_bundles.py checks each one's size and layout against
# torchaudio's own model on the meta device and the family's numerics against torchaudio on small configurations.
TORCHAUDIO_BUNDLES = [name for name in ALL_MODELS if name.split(".")[1].startswith("torchaudio")]
CONTRACT_SWEEP = [
    param
    for param in SWEEP
    if param.values[0].split(".")[0] not in AST_STRIDE_VARIANTS
    and param.values[0] not in PASST_VARIANTS
    and param.values[0] not in SSAST_VARIANTS
    and param.values[0] not in SAT_VARIANTS
    and param.values[0] not in TORCHAUDIO_BUNDLES
]
AST_VARIANT_SWEEP = [param for param in SWEEP if param.values[0].split(".")[0] in AST_STRIDE_VARIANTS]
# input_tdim (frames the grid was made for) and stride of each release, from the PaSST repository's default_cfgs.
PASST_GRIDS = {"passt_s": (998, 10), "passt_s_s12": (998, 12), "passt_s_s14": (998, 14), "passt_s_s16": (998, 16),
               "passt_s_20s": (2000, 10), "passt_s_30s": (3000, 10), "passt_l": (998, 10)}  # fmt: skip
PASST_HOP_GRIDS = {"audioset_hop100": 3200, "audioset_hop160": 2000}


def _random_model(name: str) -> torch.nn.Module:
    """Random weights whose outputs move with the input, in eval mode.

    As created, EfficientAT gives logits of 1e-9 (DyMN 1e-16) and probabilities 0.5000000 for every input, PANNs
    Cnn14 / Wavegram / MobileNetV1 logits that differ by 2e-6 (MobileNetV1: 0) between two noise clips, and BC-ResNet
    a one-hot softmax, the same for both clips: the comparisons below would pass whatever either side computed. AST
    and wav2vec2 are informative as created (logits O(1) that differ by 3e-2 to 0.8 between the clips of ``_audio``)
    and would take seconds to calibrate, so they stay as created.
    """
    if name.startswith(("ast_", "wav2vec2_", "hubert_", "wavlm_")):
        return ak.create_model(name).eval()
    return informative(name)


def _audio(model, seconds: float, batch: int = 2) -> torch.Tensor:
    """Noise at a different level in each clip (0.1, 0.02), so that the clips' outputs differ clearly."""
    gen = torch.Generator().manual_seed(1)
    level = torch.tensor([0.1, 0.02])[:batch, None]
    return level * torch.randn(batch, int(seconds * model.sample_rate), generator=gen)


def test_registry_is_populated_with_the_issue_families():
    archs = {name.split(".")[0] for name in ALL_MODELS}
    for expected in ["panns_cnn6", "panns_cnn10", "panns_cnn14", "panns_cnn14_16k", "panns_mobilenetv1",
                     "efficientat_mn04", "efficientat_mn10", "efficientat_mn40", "efficientat_dymn10"]:  # fmt: skip
        assert expected in archs


@pytest.mark.parametrize("name", CONTRACT_SWEEP)
def test_contract(name, tmp_path):
    cfg = ak.get_pretrained_cfg(name)
    model = _random_model(name)
    assert sum(p.numel() for p in model.parameters()) == cfg.num_params
    assert model.sample_rate == cfg.sample_rate and model.num_classes == cfg.num_classes == len(model.label_names)

    # Forward on 1 s and 10 s (fixed-length models: half and all of their input); logits = classifier(embedding);
    # probabilities = the task's activation.
    lengths = (1.0, 10.0) if model.max_samples is None else (0.5, model.max_samples / model.sample_rate)
    for seconds in lengths:
        wave = _audio(model, seconds)
        with torch.no_grad():
            logits = model(wave)
            embedding = model.embed(wave)
        outputs = cfg.num_classes or model.num_features  # a pure embedder (0 classes) returns its embedding
        assert logits.shape == (2, outputs) and embedding.shape == (2, model.num_features)
        assert torch.isfinite(logits).all()
        if cfg.architecture in ("htsat", "panns_cnn14_decisionlevelmax"):
            # HTS-AT's classifier (tscam_conv) is a convolution over the token map that sees its two frequency rows
            # apart and zero-pads the first and last frame, and Cnn14_DecisionLevelMax classifies every segment
            # before its maximum over time, so their clip logits are no function of the pooled embedding: the
            # contract is that the head turns the backbone output into the logits and, before the classifier, into
            # the embedding.
            with torch.no_grad():
                features = model.forward_features(model.prepare_waveform(wave))
            torch.testing.assert_close(model.forward_head(features), logits)
            torch.testing.assert_close(model.forward_head(features, pre_logits=True), embedding)
        else:
            torch.testing.assert_close(model.get_classifier()(embedding), logits)
        if seconds == lengths[0]:  # the cheaper length for the checks that need more forward passes
            short_wave, short_logits, short_embedding = wave, logits, embedding
    assert (short_logits[0] - short_logits[1]).abs().max() > 1e-3  # the two clips differ: comparisons can fail
    if cfg.num_classes:
        expected = torch.sigmoid(short_logits) if cfg.task == "multilabel" else torch.softmax(short_logits, -1)
        torch.testing.assert_close(model.predict_proba(short_wave), expected)
    else:
        with pytest.raises(ValueError, match="use embed"):
            model.predict_proba(short_wave)
    # A clip's result does not depend on what it is batched with (to rounding, which grows with the logits' size).
    scale = max(1.0, short_logits.abs().max().item())
    with torch.no_grad():
        torch.testing.assert_close(model(short_wave[1:]), short_logits[1:], atol=1e-4 * scale, rtol=1e-4)

    # Pure embedder.
    model.reset_classifier(0)
    with torch.no_grad():
        torch.testing.assert_close(model(short_wave), short_embedding, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", AST_VARIANT_SWEEP)
def test_ast_stride_variants_at_their_full_input(name):
    cfg = ak.get_pretrained_cfg(name)
    model = _random_model(name)
    assert sum(p.numel() for p in model.parameters()) == cfg.num_params
    wave = _audio(model, model.max_samples / model.sample_rate)
    with torch.no_grad():
        logits = model(wave)
    assert logits.shape == (2, cfg.num_classes) and torch.isfinite(logits).all()
    assert (logits[0] - logits[1]).abs().max() > 1e-3  # the whole grid reaches the output: the clips differ


@pytest.mark.parametrize("name", PASST_VARIANTS)
def test_passt_variants_have_their_size_and_grid(name):
    arch, tag = name.split(".")
    tdim, stride = PASST_GRIDS[arch]
    tdim = PASST_HOP_GRIDS.get(tag, tdim)
    with torch.device("meta"):  # shapes only: a ViT-B's random initialisation costs seconds on 2 cores
        model = ak.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == ak.get_pretrained_cfg(name).num_params
    assert tuple(model.time_new_pos_embed.shape) == (1, 768, 1, tdim // stride)
    assert tuple(model.freq_new_pos_embed.shape) == (1, 768, 128 // stride, 1)
    assert len(model.blocks) == (7 if arch == "passt_l" else 12)


@pytest.mark.parametrize("name", SSAST_VARIANTS)
def test_ssast_variants_have_their_size_and_grid(name):
    cfg = ak.get_pretrained_cfg(name)
    with torch.device("meta"):  # shapes only, as for PaSST
        model = ak.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == cfg.num_params
    frame = "_frame" in name
    kernel, stride = ((128, 2), (128, 1)) if frame else ((16, 16), (10, 10))
    frames = 512 if name.endswith(".ssl_esc50") else 1024
    grid = ((128 - kernel[0]) // stride[0] + 1, (frames - kernel[1]) // stride[1] + 1)
    assert model.patch_embed.proj.kernel_size == kernel and model.patch_embed.proj.stride == stride
    assert tuple(model.pos_embed.shape) == (1, 2 + grid[0] * grid[1], model.embed_dim) and len(model.blocks) == 12


# (piece frames, memory frames, pooling) of each release, from upstream's models/audiotransformer.py.
SAT_GEOMETRY = {"sat_tiny_2s": (192, 192, "mean"), "sat_tiny_1s": (96, 96, "mean"), "sat_small_2s": (192, 192, "token"),
                "sat_small_1s": (192, 192, "token"), "sat_base_2s": (192, 192, "mean"), "sat_base_1s": (96, 96, "mean"),
                "sat_vit_tiny": (1012, 0, "mean"), "sat_vit_small": (1012, 0, "token"),
                "sat_vit_base": (1012, 0, "mean")}  # fmt: skip


@pytest.mark.parametrize("name", SAT_VARIANTS)
def test_sat_variants_have_their_size_and_grid(name):
    arch = name.split(".")[0]
    target, cache, pooling = SAT_GEOMETRY[arch]
    with torch.device("meta"):  # shapes only
        model = ak.create_model(name)
    dim = {"tiny": 192, "small": 384, "base": 768}[arch.removeprefix("sat_vit_").removeprefix("sat_").split("_")[0]]
    assert sum(p.numel() for p in model.parameters()) == ak.get_pretrained_cfg(name).num_params
    assert tuple(model.time_pos_embed.shape) == (1, dim, 1, (target + cache) // 16)
    assert tuple(model.freq_pos_embed.shape) == (1, dim, 4, 1) and len(model.blocks) == 12
    assert (model.pooling, model.target_length, model.cache_length) == (pooling, target, cache)
    assert ("blocks.0.attn.qkv.weight" in model.state_dict()) == (cache == 0)  # the baselines' fused qkv


@pytest.mark.parametrize("name", CONTRACT_SWEEP)
def test_new_head_trains_and_round_trips(name, tmp_path):
    model = ak.create_model(name, num_classes=3, label_names=["a", "b", "c"])
    assert model.label_names == ("a", "b", "c") and model.get_classifier().out_features == 3
    model.train()
    wave = _audio(model, 1.0, batch=2)
    loss = torch.nn.functional.cross_entropy(model(wave), torch.tensor([0, 2]))
    loss.backward()
    head = model.get_classifier()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0
    first = next(p for p in model.parameters() if p.requires_grad and p.dim() >= 2)
    assert first.grad is not None and first.grad.abs().sum() > 0, "gradient does not reach the first layer"

    model.eval()
    model.save_pretrained(tmp_path / "saved")
    again = ak.create_model(f"local-dir:{tmp_path / 'saved'}").eval()
    assert again.label_names == ("a", "b", "c") and again.pretrained_cfg == model.pretrained_cfg
    ours, theirs = model.state_dict(), again.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    with torch.no_grad():
        assert torch.equal(model(wave), again(wave))
