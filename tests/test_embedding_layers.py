"""Named embedding points: ``model.embed(x, layer=...)`` and ``model.embedding_layers``, per family.

Every point is checked against an independent computation: the tensors the network's own modules produce, captured
with forward hooks during a plain forward pass, pooled here in float64 (``pooled`` for EfficientAT is upstream's
``F.adaptive_avg_pool2d`` of the last feature map, its ``features``). The sizes listed by ``embedding_layers`` are the
sizes ``embed`` returns, and bad names and indices are one-line errors.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import audiokit as ak
from tests.conftest import MN04_CHECKPOINT, require_shared


# -- helpers -----------------------------------------------------------------------------------------------------------
def _calibrated(name: str, seconds: float, seed: int = 0, **kwargs) -> nn.Module:
    """A random model with unit-gain Linear layers and BatchNorm statistics measured on noise, in eval mode: fresh
    initialisations leave some families' activations near 1e-8, where any comparison would pass."""
    torch.manual_seed(seed)
    model = ak.create_model(name, **kwargs)
    generator = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=module.in_features**-0.5, generator=generator)
    for module in norms:
        module.reset_running_stats()
        module.momentum = None  # cumulative average over the calibration batches
    if norms:
        model.train()
        with torch.no_grad():
            model(0.2 * torch.randn(4, int(seconds * model.sample_rate), generator=generator))
        for module in norms:
            module.momentum = 0.1
    return model.eval()


def _wave(model: nn.Module, seconds: float, batch: int = 2, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return 0.2 * torch.randn(batch, int(seconds * model.sample_rate), generator=generator)


@contextlib.contextmanager
def _capture(modules: dict, pre: bool = False) -> Iterator[dict]:
    """Record every output (or, with ``pre``, first input) of each named module, one entry per call."""
    store: dict = {key: [] for key in modules}
    handles = []
    for key, module in modules.items():

        def hook(_m, args, out=None, key=key):
            value = args[0] if pre else (out[0] if isinstance(out, tuple) else out)
            store[key].append(value.detach().clone())

        handles.append(module.register_forward_pre_hook(hook) if pre else module.register_forward_hook(hook))
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


def _mean(x: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Mean in float64 as a sum over the positions divided by their count (not the code path under test)."""
    count = 1
    for d in dims:
        count *= x.shape[d]
    return x.double().sum(dim=dims) / count


def _assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    expected = expected.double()
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = expected.abs().max().item()
    assert scale > 1e-3, f"degenerate reference (max |x| = {scale:.2e})"
    err = (actual.double() - expected).abs().max().item()
    assert err <= 1e-4 * max(1.0, scale), err


def _check_sizes(model: nn.Module, wave: torch.Tensor) -> dict:
    """Every listed point, embedded: its width is the listed size; negative block indices count back."""
    layers = model.embedding_layers
    assert list(layers)[-1] == "pre_logits" and layers["pre_logits"] == model.num_features
    out = {}
    with torch.no_grad():
        for key, size in layers.items():
            out[key] = model.embed(wave, layer=key)
            assert out[key].shape == (wave.shape[0], size), (key, out[key].shape, size)
        default = model.embed(wave)
    assert torch.equal(default, out["pre_logits"])
    blocks = [k for k in layers if isinstance(k, int)]
    assert blocks == list(range(blocks[0], blocks[-1] + 1))
    assert torch.equal(model.embed(wave, layer=-1), out[blocks[-1]])
    assert torch.equal(model.embed(wave, layer=-len(blocks)), out[blocks[0]])
    return out


# -- EfficientAT -------------------------------------------------------------------------------------------------------
def _efficientat_maps(model: nn.Module) -> dict:
    """Upstream's ``return_fmaps`` order: the stem, the 15 blocks, the last 1x1 conv."""
    if hasattr(model, "features"):  # MN
        return {i: model.features[i] for i in range(17)}
    return {0: model.in_c, **{i + 1: block for i, block in enumerate(model.layers)}, 16: model.out_c}


@pytest.mark.parametrize("name", ["efficientat_mn01.audioset", "efficientat_dymn04.audioset"])
def test_efficientat_points_equal_the_hooked_feature_maps(name):
    model = _calibrated(name, seconds=1.0)
    wave = _wave(model, 0.5)
    out = _check_sizes(model, wave)
    assert out["pooled"].shape[1] == model.feature_channels and out["pre_logits"].shape[1] == model.num_features
    with (
        torch.no_grad(),
        _capture(_efficientat_maps(model)) as maps,
        _capture({"fc": model.classifier[2]}, pre=True) as fc_in,
    ):
        model(wave)
    # Upstream's `features`: adaptive average pool of the last feature map, flattened.
    _assert_close(out["pooled"], F.adaptive_avg_pool2d(maps[16][0].double(), 1).flatten(1))
    _assert_close(out["pooled"], fc_in["fc"][0])  # and what the head's first Linear receives
    for k in range(16):
        _assert_close(out[k], _mean(maps[k][0], (2, 3)))


def test_real_mn04_pooled_is_upstreams_384_d_features():
    path = require_shared(MN04_CHECKPOINT)
    model = ak.create_model("efficientat_mn04.audioset", checkpoint_path=path).eval()
    layers = model.embedding_layers
    assert layers["pooled"] == 384 and layers["pre_logits"] == 512 and layers[15] == 64 and len(layers) == 18
    wave = _wave(model, 2.0)
    with torch.no_grad(), _capture({16: model.features[16], 3: model.features[3]}) as maps:
        logits = model(wave)
        pooled = model.embed(wave, layer="pooled")
        block3 = model.embed(wave, layer=3)
    _assert_close(pooled, F.adaptive_avg_pool2d(maps[16][0].double(), 1).flatten(1))
    _assert_close(block3, _mean(maps[3][0], (2, 3)))
    # The released head maps the pooled vector to the logits: pooled really is what the classifier consumes.
    _assert_close(model.classifier[2:](pooled), logits)


# -- BC-ResNet ---------------------------------------------------------------------------------------------------------
def test_bcresnet_blocks_count_across_stages():
    model = _calibrated("bcresnet_1.speechcommands", seconds=1.0)
    wave = _wave(model, 0.8)
    out = _check_sizes(model, wave)
    blocks = [block for stage in model.BCBlocks for block in stage]
    assert sorted(k for k in model.embedding_layers if isinstance(k, int)) == list(range(len(blocks) + 1))
    modules = {0: model.cnn_head, **{i + 1: block for i, block in enumerate(blocks)}}
    with torch.no_grad(), _capture(modules) as maps, _capture({"pool": model.classifier[4]}) as pool:
        model(wave)
    for k in modules:
        _assert_close(out[k], _mean(maps[k][0], (2, 3)))
    _assert_close(out["pooled"], pool["pool"][0].flatten(1))
    assert torch.equal(out["pooled"], out["pre_logits"])


# -- AST, PaSST, SSAST (DeiT-style tokens: cls, dist, then the patches) ------------------------------------------------
def _check_tokens(model: nn.Module, out: dict, final: list, blocks: dict) -> None:
    tokens = final[0]
    _assert_close(out["cls"], tokens[:, 0])
    _assert_close(out["dist"], tokens[:, 1])
    _assert_close(out["mean"], _mean(tokens[:, 2:], (1,)))
    for k, states in blocks.items():
        _assert_close(out[k], _mean(states[0][:, 2:], (1,)))


def test_ast_tokens_and_hidden_states():
    tiny = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 128}
    model = _calibrated("ast_base.speechcommands_v2", seconds=1.0, **tiny)
    wave = _wave(model, 1.0)
    out = _check_sizes(model, wave)
    backbone = model.backbone
    modules = {0: backbone.embeddings, **{i + 1: layer for i, layer in enumerate(backbone.layers)}}
    with torch.no_grad(), _capture(modules) as states, _capture({"norm": backbone.layernorm}) as final:
        model(wave)
    _check_tokens(model, out, final["norm"], states)
    tokens = final["norm"][0]
    _assert_close(out["pooled"], (tokens[:, 0].double() + tokens[:, 1]) / 2)
    _assert_close(out["pre_logits"], model.head_norm(out["pooled"]))


def test_passt_tokens_and_blocks():
    model = _calibrated("passt_s.audioset", seconds=1.0, embed_dim=64, depth=2, num_heads=4)
    wave = _wave(model, 1.5)
    out = _check_sizes(model, wave)
    modules = {0: model.pos_drop, **{i + 1: block for i, block in enumerate(model.blocks)}}
    with torch.no_grad(), _capture(modules) as states, _capture({"norm": model.norm}) as final:
        model(wave)
    _check_tokens(model, out, final["norm"], states)
    tokens = final["norm"][0]
    _assert_close(out["pooled"], (tokens[:, 0].double() + tokens[:, 1]) / 2)
    assert torch.equal(out["pooled"], out["pre_logits"])  # the head's LayerNorm is part of the final layer


def test_ssast_tokens_blocks_and_frame_layers_agree():
    model = _calibrated("ssast_tiny_patch.ssl", seconds=1.0, embed_dim=64, depth=2, num_heads=2)
    wave = _wave(model, 1.0)
    out = _check_sizes(model, wave)
    modules = {0: model.pos_drop, **{i + 1: block for i, block in enumerate(model.blocks)}}
    with torch.no_grad(), _capture(modules) as states, _capture({"norm": model.norm}) as final:
        model(wave)
    _check_tokens(model, out, final["norm"], states)
    assert torch.equal(out["pooled"], out["mean"]) and torch.equal(out["pooled"], out["pre_logits"])  # ft_avgtok
    # embed_frames numbers layers the same way: block k's tokens, per time column.
    rows, columns = model.patch_grid
    for k in (0, 2, -1):
        per_column = _mean(states[k % 3][0][:, 2:].reshape(2, rows, columns, -1), (1,))
        frames = model.embed_frames(wave, layer=k).embeddings
        _assert_close(frames, per_column[:, : frames.shape[1]])


# -- HTS-AT ------------------------------------------------------------------------------------------------------------
def test_htsat_stages_before_patch_merging():
    small = {"embed_dim": 16, "depths": (2, 2, 2, 2), "num_heads": (2, 2, 4, 8)}
    model = _calibrated("htsat.audioset", seconds=1.0, **small)
    wave = _wave(model, 1.0)
    out = _check_sizes(model, wave)
    assert [model.embedding_layers[k] for k in range(5)] == [16, 16, 32, 64, 128]
    modules = {0: model.pos_drop, **{i + 1: stage.blocks[-1] for i, stage in enumerate(model.layers)}}
    with torch.no_grad(), _capture(modules) as states, _capture({"norm": model.norm}) as final:
        model(wave)
    for k in modules:
        _assert_close(out[k], _mean(states[k][0], (1, 2)))  # (B, H, W, C): every token of the folded image
    _assert_close(out["pooled"], _mean(final["norm"][0], (1, 2)))  # latent_output
    assert torch.equal(out["pooled"], out["pre_logits"])


# -- SAT ---------------------------------------------------------------------------------------------------------------
SAT_SMALL = {"embed_dim": 32, "depth": 2, "num_heads": 2}
SAT_CASES = {
    # name, kwargs, seconds: several pieces each, so the memory (streaming) and the piece batching (ViT) both matter
    "stream_mean": ("sat_tiny_2s.audioset", SAT_SMALL, 4.0),
    "stream_token": ("sat_tiny_1s.audioset", {**SAT_SMALL, "cache_length": 64, "pooling": "token"}, 2.5),
    "vit": ("sat_vit_tiny.audioset", {**SAT_SMALL, "target_length": 128}, 3.0),
}


@pytest.mark.parametrize("case", list(SAT_CASES))
def test_sat_blocks_per_piece_then_averaged(case):
    name, kwargs, seconds = SAT_CASES[case]
    model = _calibrated(name, seconds=1.0, **kwargs)
    wave = _wave(model, seconds)
    out = _check_sizes(model, wave)
    first = {0: model.blocks[0]}
    outputs = {i + 1: block for i, block in enumerate(model.blocks)}
    with torch.no_grad(), _capture(first, pre=True) as inputs, _capture(outputs) as states:
        model(wave)
    states.update(inputs)
    skip = 1 if model.pooling == "token" else 0
    batch = wave.shape[0]
    for k, calls in states.items():
        # Streaming: one call per piece, (B, N, D) each; the ViT baseline: one call over (pieces * B, N, D).
        per_piece = torch.cat(calls, dim=0)[:, skip:]
        pooled = _mean(per_piece, (1,)).reshape(-1, batch, per_piece.shape[-1])
        assert pooled.shape[0] > 1  # several pieces
        _assert_close(out[k], pooled.mean(dim=0))
    assert torch.equal(out["pooled"], out["pre_logits"])


# -- VGGish ------------------------------------------------------------------------------------------------------------
def test_vggish_conv_layers_and_pca(tmp_path):
    from tests.test_vggish import write_pca_file

    pca = tmp_path / "pca.pth"
    write_pca_file(pca)
    model = _calibrated("vggish.audioset", seconds=1.0, postprocess=True, pca_params_path=pca)
    with torch.device("meta"):
        plain = ak.create_model("vggish.audioset")
    assert "postprocessed" not in plain.embedding_layers and "postprocessed" in model.embedding_layers
    assert list(model.embedding_layers)[:6] == [1, 2, 3, 4, 5, 6]
    wave = _wave(model, 2.0)
    out = _check_sizes(model, wave)
    relus = [m for i, m in enumerate(model.features) if i and isinstance(model.features[i - 1], nn.Conv2d)]
    modules = {i + 1: relu for i, relu in enumerate(relus)}
    with torch.no_grad(), _capture(modules) as states, _capture({"raw": model.embeddings}) as raw:
        model(wave)
    examples = model.num_examples(wave.shape[1])
    assert examples == 2
    for k in modules:
        per_example = _mean(states[k][0], (2, 3)).reshape(2, examples, -1)
        _assert_close(out[k], per_example.mean(dim=1))
    _assert_close(out["raw"], raw["raw"][0].reshape(2, examples, -1).double().mean(dim=1))
    assert torch.equal(out["postprocessed"], out["pooled"]) and torch.equal(out["pooled"], out["pre_logits"])
    assert not torch.allclose(out["raw"], out["postprocessed"])


# -- errors ------------------------------------------------------------------------------------------------------------
def test_bad_layers_are_one_line_errors_naming_the_choices():
    model = ak.create_model("bcresnet_1.speechcommands").eval()
    wave = torch.zeros(1, 16000)
    cases = [
        ("features", ValueError, "no embedding layer 'features'; embedding_layers: 0..12 (blocks), 'pooled'"),
        (13, ValueError, "block 13 is out of range: blocks are 0..12 (-13..-1 count back"),
        (-14, ValueError, "block -14 is out of range"),
        (1.0, TypeError, "layer must be a block index or a name, got float"),
        (True, TypeError, "got True"),
    ]
    for layer, kind, text in cases:
        with pytest.raises(kind) as info:
            model.embed(wave, layer=layer)
        message = str(info.value)
        assert text in message and "\n" not in message, message
        assert kind is TypeError or "bcresnet_1.speechcommands" in message
    with torch.device("meta"):  # names and indices are checked before anything runs
        vggish = ak.create_model("vggish.audioset")
        with pytest.raises(ValueError, match=r"block 0 is out of range: blocks are 1\.\.6"):
            vggish.embed(torch.zeros(1, 16000), layer=0)
        with pytest.raises(ValueError, match="'raw', 'pooled', 'pre_logits'"):
            vggish.embed(torch.zeros(1, 16000), layer="postprocessed")  # only with postprocess=True


def test_embedding_layers_need_no_forward():
    with torch.device("meta"):
        model = ak.create_model("efficientat_mn10.audioset")
    assert model.embedding_layers["pooled"] == 960 and model.embedding_layers["pre_logits"] == 1280


# -- PANNs -------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["panns_cnn6.audioset", "panns_mobilenetv1.audioset"])
def test_panns_pooled_is_the_head_pooling_before_fc1_and_blocks_are_hooked(name):
    model = _calibrated(name, seconds=2.0)
    wave = _wave(model, 1.5)
    out = _check_sizes(model, wave)
    if hasattr(model, "features"):  # MobileNetV1: the stem and 13 separable blocks
        modules = dict(enumerate(model.features))
    else:
        modules = {i: getattr(model, f"conv_block{i}") for i in range(1, 5)}
    with torch.no_grad(), _capture(modules) as maps, _capture({"fc1": model.fc1}, pre=True) as fc1_in:
        model(wave)
    last = maps[max(modules)][0].double()  # (B, C, T', F')
    by_time = _mean(last, (3,))
    _assert_close(out["pooled"], by_time.amax(dim=2) + _mean(by_time, (2,)))  # PANNs' head: max + mean over time
    _assert_close(out["pooled"], fc1_in["fc1"][0])
    _assert_close(out["pre_logits"], torch.relu(model.fc1(out["pooled"])))
    for k in modules:
        _assert_close(out[k], _mean(maps[k][0], (2, 3)))


# -- frame embeddings --------------------------------------------------------------------------------------------------
def _last_map(model: nn.Module) -> tuple[nn.Module, int]:
    """The module whose output is each CNN's last feature map before time pooling, and its frequency axis."""
    if hasattr(model, "BCBlocks"):  # BC-ResNet: after the classifier's convolutions and ReLU, frequency collapsed
        return model.classifier[3], 2
    if hasattr(model, "conv_block4") and not hasattr(model, "conv_block5"):  # Cnn6 / Cnn10
        return model.conv_block4, 3
    return model.features[16], 2  # EfficientAT MN: the final 1x1 conv block


@pytest.mark.parametrize(
    "name, seconds",
    [("efficientat_mn01.audioset", 2.0), ("panns_cnn6.audioset", 2.0), ("bcresnet_1.speechcommands", 1.0)],
)
def test_cnn_frames_are_the_last_feature_maps_time_steps_with_their_times(name, seconds):
    model = _calibrated(name, seconds=seconds)
    wave = _wave(model, seconds)
    module, freq_axis = _last_map(model)
    with torch.no_grad(), _capture({"map": module}) as maps:
        frames = model.embed_frames(wave)
    reference = _mean(maps["map"][0], (freq_axis,))  # (B, C, T')
    _assert_close(frames.embeddings, reference.transpose(1, 2))
    count = reference.shape[-1]
    hop = model.frame_hop_seconds
    torch.testing.assert_close(frames.times, (torch.arange(count, dtype=torch.float64) + 0.5) * hop)
    assert frames.hop_seconds == pytest.approx(hop) and frames.times.dtype == torch.float64
    # The frames span the clip: the last one's centre lies within one hop of its end.
    assert abs(float(frames.times[-1]) - seconds) <= hop
    with pytest.raises(ValueError, match=r"layer must be None"):
        model.embed_frames(wave, layer=1)


def test_cnn_frame_hops_are_the_time_strides():
    # 32 mel hops of 10 ms for EfficientAT, Cnn14 and MobileNetV1; 16 for Cnn6/Cnn10 (four poolings); BC-ResNet keeps
    # the frame rate. Strided convolutions (EfficientAT) round the frame count up, average pooling (PANNs) down.
    cases = [("efficientat_mn04.audioset", 0.32, "up"), ("panns_cnn14.audioset", 0.32, "down"),
             ("panns_cnn10.audioset", 0.16, "down"), ("panns_mobilenetv1.audioset", 0.32, "down"),
             ("bcresnet_8.speechcommands", 0.01, "up")]  # fmt: skip
    for name, hop, rounding in cases:
        model = ak.create_model(name).eval()
        assert model.frame_hop_seconds == pytest.approx(hop), name
        wave = torch.zeros(1, model.sample_rate)  # 1 s: 101 mel frames
        with torch.no_grad():
            count = model.embed_frames(wave).embeddings.shape[1]
        stride = round(hop / 0.01)
        mel_frames = model.frontend_cfg.num_frames(wave.shape[-1])
        assert count == (-(-mel_frames // stride) if rounding == "up" else mel_frames // stride), (name, count)


def test_ast_frames_are_time_columns_of_the_patch_grid():
    tiny = {"hidden_size": 64, "num_layers": 2, "num_heads": 4, "intermediate_size": 128}
    model = _calibrated("ast_base.speechcommands_v2", seconds=1.0, **tiny)
    rows, columns = model.patch_grid
    full = _wave(model, model.frontend_cfg.max_frames * 0.01 + 0.015)  # fills the fixed grid
    backbone = model.backbone
    with torch.no_grad(), _capture({"norm": backbone.layernorm, 1: backbone.layers[0]}) as states:
        frames = model.embed_frames(full)
        first_block = model.embed_frames(full, layer=1)
    # transformers lays the patches out frequency-major: token 2 + f * columns + t.
    grid = states["norm"][0][:, 2:].reshape(full.shape[0], rows, columns, -1)
    _assert_close(frames.embeddings, _mean(grid, (1,)))
    hidden = states[1][-1][:, 2:].reshape(full.shape[0], rows, columns, -1)
    _assert_close(first_block.embeddings, _mean(hidden, (1,)))
    torch.testing.assert_close(frames.times, (torch.arange(columns, dtype=torch.float64) + 0.5) * 0.1)
    with torch.no_grad():
        _assert_close(frames.embeddings.mean(dim=1), model.embed(full, layer="mean"))
        # A shorter clip gives only the columns whose patches start inside it (the rest is zero padding).
        short = model.embed_frames(full[:, : 16000 // 2])
    real_frames = 1 + (8000 - 400) // 160
    assert short.embeddings.shape[1] == (real_frames - 16) // 10 + 1 == len(short.times)


def test_families_without_frames_say_so():
    model = ak.create_model("efficientat_mn01.audioset")
    assert model.has_frame_embeddings
    from audiokit.models._base import AudioClassifier

    class NoTimeAxis(type(model)):
        forward_frame_embeddings = AudioClassifier.forward_frame_embeddings

    plain = NoTimeAxis.__new__(NoTimeAxis)
    plain.__dict__.update(model.__dict__)
    assert not plain.has_frame_embeddings
    with pytest.raises(ValueError, match=r"efficientat_mn01\.audioset has no frame embeddings"):
        plain.embed_frames(torch.zeros(1, 32000))
