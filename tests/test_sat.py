"""SAT (Streaming Audio Transformers): release layout, frontend, full-clip forward and streaming against an independent
re-derivation of upstream's computation (RicherMans/SAT, facts in zoo2.md §3), written here in torch.nn.functional
and torchaudio, with the weights read by their release names.

Small configurations (dim 32, depth 2, 2 heads; SAT's 16x16 patches and 64 mel bands) keep the default run fast; the
released SAT-T 2 s is checked at full size in the one slow test.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
import torchaudio

import audiokit as ak
from audiokit._weights import CheckpointMismatchError
from audiokit.cli import main
from audiokit.models.sat import load_release_checkpoint

SR = 16000
# key: (registered architecture, upstream entry point, small-model arguments, piece frames, memory frames,
#       token pooling, streaming)
SMALL = {"embed_dim": 32, "depth": 2, "num_heads": 2}
CONFIGS = {
    # 2 s geometry: 192-frame pieces, 192 frames (48 tokens) of memory.
    "2s_mean": ("sat_tiny_2s", "SAT_T_2s", {**SMALL}, 192, 192, False, True),
    # 1 s pieces with a shorter memory (64 frames = 16 tokens of a 24-token piece) and a class token.
    "1s_token": ("sat_tiny_1s", "SAT_T_1s", {**SMALL, "cache_length": 64, "pooling": "token"}, 96, 64, True, True),
    # The non-streaming baseline: fused qkv, 1012-frame pieces cut to 128 here, zero-padded last piece.
    "vit": ("sat_vit_tiny", "audiotransformer_tiny", {**SMALL, "target_length": 128}, 128, 0, False, False),
}


# ---------------------------------------------------------------------------------------------------------------------
# The release layout, written independently of audiokit's modules
# ---------------------------------------------------------------------------------------------------------------------
def release_state(dim: int, depth: int, columns: int, token: bool, streaming: bool, classes: int = 527, seed: int = 0):
    """Random tensors under upstream's names and shapes (``Streaming_AudioTransformer`` / ``AudioTransformer``),
    scaled so that activations stay O(1) and the outputs move with the input."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.1):
        return scale * torch.randn(*shape, generator=g)

    sd = {}
    if token:
        sd["cls_token"] = r(1, 1, dim, scale=0.5)
        sd["token_pos_embed"] = r(1, dim, scale=0.5)
    sd["time_pos_embed"] = r(1, dim, 1, columns, scale=0.5)
    sd["freq_pos_embed"] = r(1, dim, 4, 1, scale=0.5)
    sd["front_end.0.spectrogram.window"] = torch.hann_window(512)
    sd["front_end.0.mel_scale.fb"] = torchaudio.functional.melscale_fbanks(
        257, 0.0, 8000.0, 64, SR, norm=None, mel_scale="htk"
    )
    sd["init_bn.1.weight"] = 1 + r(64)
    sd["init_bn.1.bias"] = r(64)
    sd["init_bn.1.running_mean"] = -45 + 10 * torch.randn(64, generator=g)
    sd["init_bn.1.running_var"] = 200 + 100 * torch.rand(64, generator=g)
    sd["init_bn.1.num_batches_tracked"] = torch.tensor(1000)
    sd["patch_embed.proj.weight"] = r(dim, 1, 16, 16, scale=1 / 16)
    sd["patch_embed.proj.bias"] = r(dim)
    for i in range(depth):
        p = f"blocks.{i}."
        for norm in ("norm1", "norm2"):
            sd[p + norm + ".weight"], sd[p + norm + ".bias"] = 1 + r(dim), r(dim)
        if streaming:
            sd[p + "attn.to_q.weight"], sd[p + "attn.to_q.bias"] = r(dim, dim, scale=dim**-0.5), r(dim)
            sd[p + "attn.to_kv.weight"], sd[p + "attn.to_kv.bias"] = r(2 * dim, dim, scale=dim**-0.5), r(2 * dim)
        else:
            sd[p + "attn.qkv.weight"], sd[p + "attn.qkv.bias"] = r(3 * dim, dim, scale=dim**-0.5), r(3 * dim)
        sd[p + "attn.proj.weight"], sd[p + "attn.proj.bias"] = r(dim, dim, scale=dim**-0.5), r(dim)
        sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"] = r(4 * dim, dim, scale=dim**-0.5), r(4 * dim)
        sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"] = r(dim, 4 * dim, scale=(4 * dim) ** -0.5), r(dim)
    sd["norm.weight"], sd["norm.bias"] = 1 + r(dim), r(dim)
    sd["outputlayer.0.weight"], sd["outputlayer.0.bias"] = 1 + r(dim), r(dim)
    sd["outputlayer.1.weight"], sd["outputlayer.1.bias"] = r(classes, dim, scale=2 * dim**-0.5), r(classes) - 1
    return sd


def small_release(key: str, seed: int = 0):
    _, upstream, kwargs, target, cache, token, streaming = CONFIGS[key]
    sd = release_state(32, 2, (target + cache) // 16, token, streaming, seed=seed)
    model_args = {k: v for k, v in kwargs.items()}
    return sd, {"model": upstream, "model_args": model_args, "chunk_length": 4.0}


@pytest.fixture(scope="module", params=list(CONFIGS))
def small(request, tmp_path_factory):
    """(config key, a small model loaded strictly from its release file, the release state dict)."""
    key = request.param
    arch, _, kwargs, *_ = CONFIGS[key]
    sd, config = small_release(key)
    path = tmp_path_factory.mktemp("sat") / f"{key}.pt"
    torch.save({"model": sd, "config": config}, path)
    model = ak.create_model(f"{arch}.audioset", **kwargs).eval()
    load_release_checkpoint(model, path)
    return key, model, sd


# ---------------------------------------------------------------------------------------------------------------------
# The independent reference (float64 transformer on torchaudio's float32 spectrogram, as upstream computes it)
# ---------------------------------------------------------------------------------------------------------------------
def ref_logmel(sd, wave: torch.Tensor) -> torch.Tensor:
    """One clip ``(n,)`` -> init_bn-normalised log-mel ``(64, frames)`` in float64."""
    mel = torchaudio.transforms.MelSpectrogram(
        sample_rate=SR, n_fft=512, win_length=512, hop_length=160, f_min=0.0, f_max=8000.0, n_mels=64, center=True
    )(wave.float()[None])
    db = torchaudio.transforms.AmplitudeToDB(top_db=120)(mel)[0].double()
    mean, var = sd["init_bn.1.running_mean"].double(), sd["init_bn.1.running_var"].double()
    w, b = sd["init_bn.1.weight"].double(), sd["init_bn.1.bias"].double()
    return (db - mean[:, None]) / torch.sqrt(var[:, None] + 1e-5) * w[:, None] + b[:, None]


def _ln(x, sd, name, eps):
    return F.layer_norm(x, x.shape[-1:], sd[name + ".weight"].double(), sd[name + ".bias"].double(), eps)


def _lin(x, sd, name):
    return F.linear(x, sd[name + ".weight"].double(), sd[name + ".bias"].double())


def _attend(q, k, v, heads):
    n, d = q.shape
    q, k, v = (t.reshape(t.shape[0], heads, d // heads).transpose(0, 1) for t in (q, k, v))
    weights = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(d // heads), dim=-1)
    return (weights @ v).transpose(0, 1).reshape(n, d)


def ref_piece(sd, spec, memory, heads, token, memory_tokens, streaming):
    """One piece ``(64, frames)`` -> (probabilities, pooled embedding, next memory), upstream's rules re-derived."""
    d = sd["time_pos_embed"].shape[1]
    x = F.conv2d(
        spec[None, None], sd["patch_embed.proj.weight"].double(), sd["patch_embed.proj.bias"].double(), stride=16
    )
    t = x.shape[-1]
    time_pos, freq_pos = sd["time_pos_embed"].double(), sd["freq_pos_embed"].double()
    x = x + time_pos[..., :t] + freq_pos
    tokens = x[0].reshape(d, 4 * t).T  # token index = row * t + column
    if memory is not None:
        # The first layer's memory is given the last m time embeddings and the frequency embeddings again.
        m = memory[0].shape[0] // 4
        grid = memory[0].reshape(4, m, d) + time_pos[0, :, 0, -m:].T[None] + freq_pos[0, :, :, 0].T[:, None]
        memory = [grid.reshape(4 * m, d), *memory[1:]]
    if token:
        tokens = torch.cat([sd["cls_token"].double()[0] + sd["token_pos_embed"].double(), tokens])
    inputs = []
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    for i in range(depth):
        p = f"blocks.{i}."
        inputs.append(tokens)
        h = _ln(tokens, sd, p + "norm1", 1e-6)
        if streaming:
            context = h if memory is None else torch.cat([_ln(memory[i], sd, p + "norm1", 1e-6), h])
            q = _lin(h, sd, p + "attn.to_q")
            kv = _lin(context, sd, p + "attn.to_kv")
            k, v = kv[:, :d], kv[:, d:]
        else:
            q, k, v = _lin(h, sd, p + "attn.qkv").split(d, dim=-1)
        tokens = tokens + _lin(_attend(q, k, v, heads), sd, p + "attn.proj")
        hidden = F.gelu(_lin(_ln(tokens, sd, p + "norm2", 1e-6), sd, p + "mlp.fc1"))
        tokens = tokens + _lin(hidden, sd, p + "mlp.fc2")
    tokens = _ln(tokens, sd, "norm", 1e-6)
    pooled = tokens[0] if token else tokens.mean(0)
    logits = _lin(_ln(pooled, sd, "outputlayer.0", 1e-5), sd, "outputlayer.1")
    if not streaming:
        return torch.sigmoid(logits), pooled, None
    old = memory if memory is not None else [torch.zeros(0, d, dtype=torch.float64)] * depth
    new = [torch.cat([o, n])[-memory_tokens:] for o, n in zip(old, inputs)]
    return torch.sigmoid(logits), pooled, new


def ref_clip(key, sd, spec, memory=None):
    """A clip's normalised log-mel -> (mean of the pieces' probabilities, per-piece embeddings, memory after)."""
    _, _, kwargs, target, cache, token, streaming = CONFIGS[key]
    heads, frames = kwargs["num_heads"], spec.shape[-1]
    if streaming:
        # Pieces of `target` frames, a shorter last one dropped; the whole clip when it fits in one piece.
        pieces = (
            [spec] if frames <= target else [spec[:, s : s + target] for s in range(0, frames - target + 1, target)]
        )
    elif frames <= target + 15:
        pieces = [spec]
    else:
        count = math.ceil(frames / target)
        padded = F.pad(spec, (0, count * target - frames))  # zeros after init_bn
        pieces = [padded[:, s * target : (s + 1) * target] for s in range(count)]
        if frames % target == 0:
            pieces = pieces[:-1]  # upstream's AudioTransformer drops an exactly full last piece
    probs, embeddings = [], []
    for piece in pieces:
        p, e, new = ref_piece(sd, piece, memory, heads, token, 4 * (cache // 16), streaming)
        memory = new if streaming else None
        probs.append(p)
        embeddings.append(e)
    return torch.stack(probs).mean(0), torch.stack(embeddings), memory


def ref_stream(key, sd, wave, chunk_samples):
    """inference.py: memory primed once with cache_length/100 s of silence, then each chunk its own spectrogram
    (the baselines: each chunk alone)."""
    _, _, _, _, cache, _, streaming = CONFIGS[key]
    memory = None
    if streaming:
        _, _, memory = ref_clip(key, sd, ref_logmel(sd, torch.zeros(int(cache / 100 * SR))))
    outputs = []
    for chunk in wave.split(chunk_samples):
        probs, _, memory = ref_clip(key, sd, ref_logmel(sd, chunk), memory)
        outputs.append(probs)
    return torch.stack(outputs)


def signal(seconds: float, seed: int = 0, level: float = 0.3) -> torch.Tensor:
    """A chirp with an envelope over noise: changes over time, so that the memory and every piece matter."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * SR), dtype=torch.float64) / SR
    tone = torch.sin(2 * math.pi * (300 + 400 * t) * t) * (1 + torch.sin(2 * math.pi * 0.6 * t + seed))
    return (level * (tone + 0.3 * torch.randn(t.shape, generator=g, dtype=torch.float64))).float()


# ---------------------------------------------------------------------------------------------------------------------
# Frontend
# ---------------------------------------------------------------------------------------------------------------------
def test_frontend_equals_torchaudio_per_clip_and_not_batch_wide():
    model = ak.create_model("sat_tiny_2s.audioset", **SMALL)
    # Each ends in 0.5 s of digital silence (-100 dB before any floor).
    loud, quiet = signal(3.0, seed=1, level=3.0), 1e-3 * signal(3.0, seed=2)
    loud[-8000:], quiet[-8000:] = 0.0, 0.0
    batch = torch.stack([loud, quiet])
    ours = model.frontend(batch)[:, 0]
    mel = torchaudio.transforms.MelSpectrogram(SR, n_fft=512, win_length=512, hop_length=160, f_min=0.0, f_max=8000.0,
                                               n_mels=64)  # fmt: skip
    to_db = torchaudio.transforms.AmplitudeToDB(top_db=120)
    for i, clip in enumerate(batch):
        reference = to_db(mel(clip[None]))[0]
        assert ours.shape[1:] == reference.shape == (64, 301)
        torch.testing.assert_close(ours[i], reference, atol=2e-3, rtol=0)  # dB of float32 powers
    # The floor bites on the loud clip (its peak is above +20 dB) and not on the quiet one ...
    assert ours[0].min() == ours[0].max() - 120 and ours[1].min() == -100
    # ... while torchaudio on the 3-D batch takes one floor for both clips (the loud one's), which audiokit does not.
    batched = to_db(mel(batch))
    assert (batched[1] - to_db(mel(quiet[None]))[0]).abs().max() > 10


# ---------------------------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------------------------
def test_release_layout_loads_strictly(small, tmp_path):
    key, model, sd = small
    ours = model.state_dict()
    buffers = {"front_end.0.spectrogram.window", "front_end.0.mel_scale.fb"}
    assert set(ours) == set(sd) - buffers
    assert all(torch.equal(ours[k], sd[k]) for k in ours)
    # A bare state dict, through create_model, loads the same tensors.
    path = tmp_path / "bare.pt"
    torch.save(sd, path)
    arch, _, kwargs, *_ = CONFIGS[key]
    again = ak.create_model(f"{arch}.audioset", checkpoint_path=path, **kwargs)
    assert all(torch.equal(again.state_dict()[k], sd[k]) for k in ours)


def test_refusals_name_the_problem(tmp_path):
    sd, config = small_release("2s_mean")
    kwargs = CONFIGS["2s_mean"][2]

    missing = dict(sd)
    del missing["blocks.1.mlp.fc2.bias"]
    torch.save({"model": missing, "config": config}, tmp_path / "missing.pt")
    with pytest.raises(CheckpointMismatchError, match=r"missing blocks\.1\.mlp\.fc2\.bias"):
        ak.create_model("sat_tiny_2s.audioset", checkpoint_path=tmp_path / "missing.pt", **kwargs)

    # A 1 s file (12 time columns) for a 2 s name (24), as a bare state dict: no config to name it, so its time grid
    # does (with the config, the config's check below speaks first).
    one_second, _ = small_release("1s_token")
    torch.save(one_second, tmp_path / "1s.pt")
    with pytest.raises(ValueError, match=r"time_pos_embed has 10 time columns.*sat_tiny_2s\.audioset has 24"):
        ak.create_model("sat_tiny_2s.audioset", checkpoint_path=tmp_path / "1s.pt", **kwargs)

    # Same shapes, but the file's config names another variant: SAT-S 1 s and 2 s share every shape upstream.
    torch.save({"model": sd, "config": {**config, "model": "SAT_T_1s"}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match=r"SAT_T_1s \(audiokit's sat_tiny_1s\).*sat_tiny_2s\.audioset is .*SAT_T_2s"):
        ak.create_model("sat_tiny_2s.audioset", checkpoint_path=tmp_path / "other.pt", **kwargs)
    model = ak.create_model("sat_tiny_2s.audioset", **kwargs)
    torch.save({"model": sd, "config": {**config, "model_args": {**kwargs, "target_length": 96}}}, tmp_path / "a.pt")
    with pytest.raises(ValueError, match=r"model_args target_length=96, which sat_tiny_2s\.audioset has as 192"):
        load_release_checkpoint(model, tmp_path / "a.pt")

    # A frontend of another kind (Slaney-normalised mel banks) stored in the file.
    slaney = dict(sd)
    slaney["front_end.0.mel_scale.fb"] = torchaudio.functional.melscale_fbanks(257, 0.0, 8000.0, 64, SR, norm="slaney",
                                                                               mel_scale="slaney")  # fmt: skip
    torch.save(slaney, tmp_path / "slaney.pt")
    with pytest.raises(ValueError, match=r"front_end\.0\.mel_scale\.fb .* is not the frontend of sat_tiny_2s"):
        ak.create_model("sat_tiny_2s.audioset", checkpoint_path=tmp_path / "slaney.pt", **kwargs)

    # A baseline's fused qkv in a streaming name.
    vit, _ = small_release("vit")
    vit["time_pos_embed"] = sd["time_pos_embed"]
    torch.save(vit, tmp_path / "vit.pt")
    with pytest.raises(
        CheckpointMismatchError, match=r"missing blocks\.0\.attn\.to_q\.weight.*unexpected blocks\.0\.attn\.qkv"
    ):
        ak.create_model("sat_tiny_2s.audioset", checkpoint_path=tmp_path / "vit.pt", **kwargs)


# ---------------------------------------------------------------------------------------------------------------------
# Full-clip forward
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seconds", [1.0, 5.3])
def test_full_clip_forward_equals_the_reference(small, seconds):
    key, model, sd = small
    waves = torch.stack([signal(seconds, seed=3), signal(seconds, seed=4, level=0.05)])
    with torch.no_grad():
        probs = model.predict_proba(waves)
        embedding = model.embed(waves)
        frames = model.embed_frames(waves).embeddings
    for i, wave in enumerate(waves):
        ref_probs, ref_embeddings, _ = ref_clip(key, sd, ref_logmel(sd, wave))
        torch.testing.assert_close(probs[i].double(), ref_probs, atol=2e-5, rtol=0)
        torch.testing.assert_close(frames[i].double(), ref_embeddings, atol=2e-4, rtol=1e-4)
        torch.testing.assert_close(embedding[i].double(), ref_embeddings.mean(0), atol=2e-4, rtol=1e-4)
    pieces = frames.shape[1]
    assert pieces == {1.0: 1, 5.3: {"2s_mean": 2, "1s_token": 5, "vit": 5}[key]}[seconds]
    assert (probs[0] - probs[1]).abs().max() > 1e-2  # the clips differ: the comparison can fail
    # forward's logits carry the mean of the pieces' probabilities (upstream's output), not a mean of logits.
    with torch.no_grad():
        piece_logits = model.get_classifier()(frames)
    torch.testing.assert_close(torch.sigmoid(piece_logits).mean(1), probs, atol=1e-6, rtol=1e-5)
    if pieces > 1:
        assert (torch.sigmoid(piece_logits.mean(1)) - probs).abs().max() > 1e-4


def test_baseline_drops_an_exactly_full_last_piece():
    """Upstream's AudioTransformer quirk: a clip of whole pieces (longer than one) loses its last piece."""
    key = "vit"
    sd, _ = small_release(key)
    model = ak.create_model("sat_vit_tiny.audioset", **CONFIGS[key][2]).eval()
    model.load_state_dict({k: v for k, v in sd.items() if not k.startswith("front_end.")})
    wave = signal(255 * 160 / SR + 1e-4, seed=5)[: 255 * 160]  # 256 frames = 2 pieces of 128
    with torch.no_grad():
        frames = model.embed_frames(wave[None]).embeddings
        probs = model.predict_proba(wave[None])[0]
    ref_probs, ref_embeddings, _ = ref_clip(key, sd, ref_logmel(sd, wave))
    assert frames.shape[1] == ref_embeddings.shape[0] == 1
    torch.testing.assert_close(probs.double(), ref_probs, atol=2e-5, rtol=0)


# ---------------------------------------------------------------------------------------------------------------------
# Streaming
# ---------------------------------------------------------------------------------------------------------------------
def test_stream_equals_upstream_inference(small):
    key, model, sd = small
    wave = signal(7.0, seed=6)  # 2 s chunks: 3 full (201 frames: 192 used) and one of 1 s
    chunk = 2 * SR
    stream = model.stream()
    ours = torch.stack([stream.push(c) for c in wave.split(chunk)])
    reference = ref_stream(key, sd, wave, chunk)
    torch.testing.assert_close(ours.double(), reference, atol=2e-5, rtol=0)
    if not CONFIGS[key][6]:
        return  # the baselines: each chunk on its own, nothing carried
    # The reference is discriminating: without the priming the outputs move.
    unprimed = []
    memory = None
    for c in wave.split(chunk):
        probs, _, memory = ref_clip(key, sd, ref_logmel(sd, c), memory)
        unprimed.append(probs)
    assert (torch.stack(unprimed) - reference).abs().max() > 1e-3
    # A 2 s chunk's 201 frames give one 192-frame piece (2s geometry): its last 9 frames are not used.
    if key == "2s_mean":
        first = wave[:chunk]
        changed = first.clone()
        changed[-800:] = 0.0  # the last 50 ms reach frames 194-200 only (windows of 512 centred every 160)
        again = model.stream()
        torch.testing.assert_close(again.push(changed), ours[0], atol=1e-6, rtol=0)


def test_streams_of_two_files_are_independent(small):
    key, model, sd = small
    if not CONFIGS[key][6]:
        pytest.skip("the baselines carry nothing from chunk to chunk")
    first, second = signal(4.0, seed=7), signal(4.0, seed=8, level=0.1)
    stream = model.stream()
    for c in first.split(2 * SR):
        stream.push(c)
    carried = torch.stack([stream.push(c) for c in second.split(2 * SR)])  # upstream's CLI does this
    fresh = model.stream()
    own = torch.stack([fresh.push(c) for c in second.split(2 * SR)])
    torch.testing.assert_close(own.double(), ref_stream(key, sd, second, 2 * SR), atol=2e-5, rtol=0)
    assert (carried - own).abs().max() > 1e-3


def test_stream_refuses_bad_chunks():
    model = ak.create_model("sat_tiny_2s.audioset", **SMALL).eval()
    stream = model.stream()
    with pytest.raises(ValueError, match="one recording"):
        stream.push(torch.zeros(2, 32000))
    with pytest.raises(TypeError, match="floating-point"):
        stream.push(torch.zeros(32000, dtype=torch.int16))


def test_tag_stream_cli(tmp_path, capsys):
    key = "2s_mean"
    sd, _ = small_release(key, seed=1)
    model = ak.create_model("sat_tiny_2s.audioset", **CONFIGS[key][2]).eval()
    model.load_state_dict({k: v for k, v in sd.items() if not k.startswith("front_end.")})
    model.save_pretrained(tmp_path / "small")
    paths = []
    for i, seconds in enumerate((5.0, 3.0)):
        path = tmp_path / f"clip{i}.wav"
        sf.write(path, signal(seconds, seed=10 + i).numpy(), SR, subtype="FLOAT")
        paths.append(path)
    code = main(["tag", "--stream", *map(str, paths), "--model", f"local-dir:{tmp_path / 'small'}", "--format", "jsonl",
                 "--top-k", "3"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [(r["path"], r["start"], r["end"]) for r in rows] == [
        (str(paths[0]), 0.0, 2.0), (str(paths[0]), 2.0, 4.0), (str(paths[0]), 4.0, 5.0),
        (str(paths[1]), 0.0, 2.0), (str(paths[1]), 2.0, 3.0),
    ]  # fmt: skip
    for path in paths:  # each file its own stream, equal to the reference
        wave = torch.from_numpy(sf.read(path, dtype="float32")[0])
        reference = ref_stream(key, sd, wave, 2 * SR)
        mine = [r for r in rows if r["path"] == str(path)]
        for row, probs in zip(mine, reference):
            top = torch.topk(probs, 3)
            assert [item["label"] for item in row["labels"]] == [model.label_names[int(i)] for i in top.indices]
            np.testing.assert_allclose([item["score"] for item in row["labels"]], top.values.numpy(), atol=2e-5)

    code = main(["tag", "--stream", str(paths[1]), "--model", f"local-dir:{tmp_path / 'small'}", "--window", "1"])
    out, _ = capsys.readouterr()
    assert code == 0 and out.count("[") == 3 and "1 s chunks" in out
    code = main(["tag", "--stream", str(paths[1]), "--model", f"local-dir:{tmp_path / 'small'}", "--format", "json"])
    assert code == 2 and "--format table, jsonl or csv" in capsys.readouterr().err
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio")
    code = main(["tag", "--stream", str(bad), str(paths[1]), "--model", f"local-dir:{tmp_path / 'small'}"])
    out, err = capsys.readouterr()
    assert code == 1 and "ERROR" in out and "1 of 2 file(s) failed" in err and out.count("[") == 2


# ---------------------------------------------------------------------------------------------------------------------
# Classifier and contract
# ---------------------------------------------------------------------------------------------------------------------
def test_reset_classifier_keeps_the_head_norm(small):
    key, model, _ = small
    arch, _, kwargs, *_ = CONFIGS[key]
    fresh = ak.create_model(f"{arch}.audioset", **kwargs).eval()
    fresh.load_state_dict(model.state_dict())
    norm = fresh.outputlayer[0]
    fresh.reset_classifier(10, label_names=[f"c{i}" for i in range(10)])
    assert fresh.outputlayer[0] is norm and fresh.outputlayer.out_features == 10 and fresh.num_classes == 10
    wave = signal(5.0, seed=9)[None]
    with torch.no_grad():
        frames = fresh.embed_frames(wave).embeddings
        probs = fresh.predict_proba(wave)
    torch.testing.assert_close(probs, torch.sigmoid(fresh.outputlayer(frames)).mean(1), atol=1e-6, rtol=1e-5)
    fresh.reset_classifier(0)
    with torch.no_grad():
        torch.testing.assert_close(fresh(wave), frames.mean(1), atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="use embed"):
        fresh.predict_proba(wave)


def test_contract_with_the_pieces_identity(small, tmp_path):
    """The registry contract (tests/test_models.py) with SAT's identity for clips of several pieces: forward's
    sigmoid is the mean of the pieces' probabilities, so classifier(embedding) equals the logits for one piece only.
    (The released sizes' parameter counts are checked in tests/test_models.py, their numerics in the slow test.)"""
    key, model, _ = small
    arch, _, kwargs, *_ = CONFIGS[key]
    with torch.device("meta"):
        released = ak.create_model(f"{arch}.audioset")
    assert sum(p.numel() for p in released.parameters()) == ak.get_pretrained_cfg(f"{arch}.audioset").num_params
    model = ak.create_model(f"{arch}.audioset", **kwargs).eval()
    model.load_state_dict(small[1].state_dict())
    short, long = (
        torch.stack([signal(1.0, 1), signal(1.0, 2, 0.02)]),
        torch.stack([signal(4.0, 1), signal(4.0, 2, 0.02)]),
    )
    with torch.no_grad():
        logits, embedding = model(short), model.embed(short)
        torch.testing.assert_close(model.get_classifier()(embedding), logits)
        torch.testing.assert_close(model.predict_proba(short), torch.sigmoid(logits))
        assert (logits[0] - logits[1]).abs().max() > 1e-3
        torch.testing.assert_close(model(short[1:]), logits[1:], atol=1e-4, rtol=1e-4)
        long_logits, frames = model(long), model.embed_frames(long).embeddings
        assert frames.shape[:2] == (2, {"2s_mean": 2, "1s_token": 4, "vit": 4}[key])
        torch.testing.assert_close(torch.sigmoid(long_logits), torch.sigmoid(model.get_classifier()(frames)).mean(1))
        torch.testing.assert_close(model.embed(long), frames.mean(1))
        torch.testing.assert_close(model(long[1:]), long_logits[1:], atol=1e-4, rtol=1e-4)
    # A new head trains and round-trips through save_pretrained.
    model.reset_classifier(3, label_names=["a", "b", "c"])
    model.train()
    loss = F.cross_entropy(model(long), torch.tensor([0, 2]))
    loss.backward()
    assert model.outputlayer.weight.grad.abs().sum() > 0 and model.patch_embed.proj.weight.grad.abs().sum() > 0
    model.eval()
    model.save_pretrained(tmp_path / "saved")
    again = ak.create_model(f"local-dir:{tmp_path / 'saved'}").eval()
    with torch.no_grad():
        assert torch.equal(model(long), again(long))


@pytest.mark.slow
def test_full_size_sat_tiny_2s_release_file_on_10_s(tmp_path):
    """The released SAT-T 2 s geometry: upstream's 185 tensors load strictly, 5,495,695 parameters, and a 10 s clip's
    output (5 pieces with memory) and its stream equal the reference."""
    key = "tiny_full"
    CONFIGS[key] = ("sat_tiny_2s", "SAT_T_2s", {"embed_dim": 192, "depth": 12, "num_heads": 3}, 192, 192, False, True)
    try:
        sd = release_state(192, 12, 24, False, True, seed=4)
        assert len(sd) == 185
        path = tmp_path / "SAT_T_stream2s_mAP_43_34.pt"
        torch.save({"model": sd, "config": {"model": "SAT_T_2s", "model_args": {}, "chunk_length": 4.0}}, path)
        model = ak.create_model("sat_tiny_2s.audioset").eval()
        load_release_checkpoint(model, path)
        assert sum(p.numel() for p in model.parameters()) == 5_495_695
        wave = signal(10.0, seed=11)
        with torch.no_grad():
            probs = model.predict_proba(wave[None])[0]
        ref_probs, _, _ = ref_clip(key, sd, ref_logmel(sd, wave))
        torch.testing.assert_close(probs.double(), ref_probs, atol=2e-5, rtol=0)
        stream = model.stream()
        ours = torch.stack([stream.push(c) for c in wave.split(2 * SR)])
        torch.testing.assert_close(ours.double(), ref_stream(key, sd, wave, 2 * SR), atol=2e-5, rtol=0)
    finally:
        del CONFIGS[key]
