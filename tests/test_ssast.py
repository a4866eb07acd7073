"""SSAST against the upstream facts in shared/reference/zoo2.md, section "SSAST", and upstream's code as described.

- checkpoints: random weights written here in the release layout (``nn.DataParallel(ASTModel(pretrain_stage=True))``:
  ``module.`` prefixes, 0-d int64 ``p_input_*``, ``mask_embed``, ``v.*`` with the DeiT ImageNet heads, the pretraining
  prediction layers) load strictly; other files are refused with the reason;
- positions: the pretraining grid resized the way upstream's fine-tuning constructor does it, re-derived here step by
  step (time first, to a hard-coded 8 rows, then frequency; centre cuts where an axis shrinks) with F.interpolate;
- frontend: upstream's ``_wav2fbank`` + normalisation re-derived with ``torchaudio.compliance.kaldi.fbank``;
- network: a float64 forward written with ``torch.nn.functional`` reading the tensors by their release names, pooled
  as ``ft_avgtok`` (mean of the final-norm tokens after [cls] and [dist]);
- embed_frames, windowing of long files through ``ak.embed``, the embedder refusing ``tag``, a new head training.

Small configurations (width 64, 2 blocks, 2 heads) keep the default run fast; one slow test builds Base at full size.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from torchaudio.compliance import kaldi

import audiokit as ak
from audiokit._weights import CheckpointMismatchError
from audiokit.models.ssast import CheckpointFamilyError, resize_pos_embed

TINY = {"embed_dim": 64, "depth": 2, "num_heads": 2}
SR = 16000
AUDIOSET = (-4.2677393, 4.5689974)  # pretraining / AudioSet fbank statistics (src/run.py)
ESC50 = (-6.6268077, 5.358466)
PATCH, FRAME = (16, 16), (128, 2)
# name: (kernel, fine-tuning stride, frames, stats) as the recipes run them.
GEOMETRY = {
    "ssast_base_patch.ssl": (PATCH, (10, 10), 1024, AUDIOSET),
    "ssast_base_frame.ssl": (FRAME, (128, 1), 1024, AUDIOSET),
    "ssast_base_patch.ssl_esc50": (PATCH, (10, 10), 512, ESC50),
    "ssast_base_frame.ssl_esc50": (FRAME, (128, 1), 512, ESC50),
}
# pretrained_model/README.md: file, Dropbox id, width, kernel, avg audio, avg speech (percent).
RELEASES = {
    "ssast_base_patch": ("SSAST-Base-Patch-400.pth", "ewrzpco95n9jdz6", 768, PATCH, 59.9, 79.5),
    "ssast_base_frame": ("SSAST-Base-Frame-400.pth", "nx6nl4d4bl71sm8", 768, FRAME, 57.6, 84.0),
    "ssast_base_patch_250": ("SSAST-Base-Patch-250.pth", "mxrm9qog6aj8hif", 768, PATCH, 58.6, 79.5),
    "ssast_base_frame_250": ("SSAST-Base-Frame-250.pth", "4e6l7ulhwrfoana", 768, FRAME, 55.6, 81.6),
    "ssast_small_patch": ("SSAST-Small-Patch-400.pth", "i24w446rl9pkf05", 384, PATCH, 58.1, 78.2),
    "ssast_tiny_patch": ("SSAST-Tiny-Patch-400.pth", "fkbtf78y94113wz", 192, PATCH, 53.3, 75.7),
    "ssast_tiny_frame": ("SSAST-Tiny-Frame-400.pth", "rx7g60ruzawffzv", 192, FRAME, 47.8, None),
}


def _wave(seconds: float, batch: int = 2, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    level = torch.tensor([0.1, 0.02, 0.05])[:batch, None]
    # A DC offset, which upstream removes from the whole clip (and Kaldi from every frame).
    return (level * torch.randn(batch, int(seconds * SR), generator=gen, dtype=torch.float64) + 0.01).float()


# ---------------------------------------------------------------------------------------------------------------------
# The release layout
# ---------------------------------------------------------------------------------------------------------------------
def release_layout(dim: int = 768, depth: int = 12, kernel: tuple[int, int] = PATCH) -> dict[str, tuple[int, ...]]:
    """Key -> shape of ``nn.DataParallel(ASTModel(pretrain_stage=True)).state_dict()`` for a 128 x 1024 input."""
    positions = (128 // kernel[0]) * (1024 // kernel[1])
    hidden = 4 * dim
    v = {
        "cls_token": (1, 1, dim), "pos_embed": (1, 2 + positions, dim), "dist_token": (1, 1, dim),
        "patch_embed.proj.weight": (dim, 1, *kernel), "patch_embed.proj.bias": (dim,),
    }  # fmt: skip
    for i in range(depth):
        p = f"blocks.{i}."
        v.update({
            p + "norm1.weight": (dim,), p + "norm1.bias": (dim,),
            p + "attn.qkv.weight": (3 * dim, dim), p + "attn.qkv.bias": (3 * dim,),
            p + "attn.proj.weight": (dim, dim), p + "attn.proj.bias": (dim,),
            p + "norm2.weight": (dim,), p + "norm2.bias": (dim,),
            p + "mlp.fc1.weight": (hidden, dim), p + "mlp.fc1.bias": (hidden,),
            p + "mlp.fc2.weight": (dim, hidden), p + "mlp.fc2.bias": (dim,),
        })  # fmt: skip
    v.update({"norm.weight": (dim,), "norm.bias": (dim,), "head.weight": (1000, dim), "head.bias": (1000,),
              "head_dist.weight": (1000, dim), "head_dist.bias": (1000,)})  # fmt: skip
    layout = {"module.p_input_fdim": (), "module.p_input_tdim": (), "module.mask_embed": (1, 1, dim)}
    layout.update({f"module.v.{k}": s for k, s in v.items()})
    for pred in ("cpredlayer", "gpredlayer"):
        layout.update({f"module.{pred}.0.weight": (dim, dim), f"module.{pred}.0.bias": (dim,),
                       f"module.{pred}.2.weight": (256, dim), f"module.{pred}.2.bias": (256,)})  # fmt: skip
    return layout


def release_state(kernel=PATCH, dim: int = 64, depth: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    """Seeded random weights in the release layout, scaled so that every part moves the output."""
    gen = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    for key, shape in release_layout(dim, depth, kernel).items():
        if key.endswith("p_input_fdim"):
            sd[key] = torch.tensor(128)  # int64, 0-d: a frozen Parameter upstream
        elif key.endswith("p_input_tdim"):
            sd[key] = torch.tensor(1024)
        elif key.endswith(("norm1.weight", "norm2.weight", "norm.weight")):
            sd[key] = 1 + 0.1 * torch.randn(shape, generator=gen)
        elif "token" in key or "pos_embed" in key or "mask_embed" in key:
            sd[key] = 0.5 * torch.randn(shape, generator=gen)
        else:
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else dim
            sd[key] = (0.05 if len(shape) == 1 else fan_in**-0.5) * torch.randn(shape, generator=gen)
    return sd


def _save(sd: dict, tmp_path: Path, name: str = "release.pth") -> Path:
    path = tmp_path / name
    torch.save(sd, path)
    return path


def _loaded(name: str, tmp_path: Path, seed: int = 0, **kwargs):
    kernel = GEOMETRY.get(name, (FRAME if "frame" in name else PATCH,))[0]
    sd = release_state(kernel, seed=seed)
    model = ak.create_model(name, checkpoint_path=_save(sd, tmp_path, f"{seed}.pth"), **TINY, **kwargs)
    return model.eval(), sd


# ---------------------------------------------------------------------------------------------------------------------
# Independent references
# ---------------------------------------------------------------------------------------------------------------------
def reference_fbank(wave: torch.Tensor, frames: int, stats: tuple[float, float]) -> torch.Tensor:
    """``_wav2fbank`` + ``__getitem__``'s normalisation for each clip: (B, N) -> (B, 1, 128, frames)."""
    out = []
    for clip in wave:
        x = clip[None] - clip.mean()
        fb = kaldi.fbank(x, htk_compat=True, sample_frequency=SR, use_energy=False, window_type="hanning",
                         num_mel_bins=128, dither=0.0, frame_shift=10)  # fmt: skip
        p = frames - fb.shape[0]
        fb = torch.nn.ZeroPad2d((0, 0, 0, p))(fb) if p > 0 else fb[:frames]
        out.append(((fb - stats[0]) / (stats[1] * 2)).T)
    return torch.stack(out)[:, None]


def upstream_positions(pos: torch.Tensor, kernel, stride, frames: int) -> torch.Tensor:
    """``ASTModel.__init__(pretrain_stage=False)``'s position handling, step by step, on a (1, 2 + 512, D) tensor."""
    p_f, p_t = 128 // kernel[0], 1024 // kernel[1]
    f = (128 - kernel[0]) // stride[0] + 1
    t = (frames - kernel[1]) // stride[1] + 1
    d = pos.shape[2]
    grid = pos[:, 2:].reshape(1, p_f * p_t, d).transpose(1, 2).reshape(1, d, p_f, p_t)
    if t < p_t:
        grid = grid[:, :, :, p_t // 2 - t // 2 : p_t // 2 - t // 2 + t]
    else:
        grid = F.interpolate(grid, size=(8, t), mode="bilinear")
    if f < p_f:
        grid = grid[:, :, p_f // 2 - f // 2 : p_f // 2 - f // 2 + f, :]  # written as intended (upstream slices by t)
    else:
        grid = F.interpolate(grid, size=(f, t), mode="bilinear")
    return torch.cat([pos[:, :2], grid.reshape(1, d, f * t).transpose(1, 2)], dim=1)


def reference_forward(sd: dict, fbank: torch.Tensor, stride, heads: int = 2):
    """Upstream's ``finetuningavgtok`` without ``mlp_head``, in float64, on the release tensors.

    Returns (embedding, final-norm tokens, [the blocks' input, the output of each block]).
    """
    w = {k[len("module.v.") :]: v.double() for k, v in sd.items() if k.startswith("module.v.")}
    kernel = tuple(w["patch_embed.proj.weight"].shape[2:])
    pos = upstream_positions(w["pos_embed"].float(), kernel, stride, fbank.shape[-1]).double()
    x = F.conv2d(fbank.double(), w["patch_embed.proj.weight"], w["patch_embed.proj.bias"], stride=stride)
    b, d = x.shape[:2]
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([w["cls_token"].expand(b, -1, -1), w["dist_token"].expand(b, -1, -1), x], dim=1) + pos
    hd = d // heads
    i = 0
    hidden = [x]
    while f"blocks.{i}.norm1.weight" in w:
        p = f"blocks.{i}."
        h = F.layer_norm(x, (d,), w[p + "norm1.weight"], w[p + "norm1.bias"], eps=1e-6)
        q, k, v = F.linear(h, w[p + "attn.qkv.weight"], w[p + "attn.qkv.bias"]).reshape(b, -1, 3, heads, hd).unbind(2)
        q, k, v = (z.transpose(1, 2) for z in (q, k, v))
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(hd), dim=-1)
        x = x + F.linear((att @ v).transpose(1, 2).reshape(b, -1, d), w[p + "attn.proj.weight"],
                         w[p + "attn.proj.bias"])  # fmt: skip
        h = F.layer_norm(x, (d,), w[p + "norm2.weight"], w[p + "norm2.bias"], eps=1e-6)
        x = x + F.linear(F.gelu(F.linear(h, w[p + "mlp.fc1.weight"], w[p + "mlp.fc1.bias"])), w[p + "mlp.fc2.weight"],
                         w[p + "mlp.fc2.bias"])  # fmt: skip
        hidden.append(x)
        i += 1
    x = F.layer_norm(x, (d,), w["norm.weight"], w["norm.bias"], eps=1e-6)
    return x[:, 2:].mean(dim=1), x, hidden


# ---------------------------------------------------------------------------------------------------------------------
# Layout and loading
# ---------------------------------------------------------------------------------------------------------------------
def test_release_layout_counts():
    """zoo2.md: 166 tensors for Base; the pretraining model has 88,763,346 parameters, 2 of them the p_input_*."""
    layout = release_layout()
    assert len(layout) == 166
    assert sum(math.prod(s) for s in layout.values()) == 88_763_346
    model = ak.create_model("ssast_base_patch.ssl", **TINY)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    # Ours = the release's v.* without the ImageNet heads, the positions on the 12 x 101 fine-tuning grid.
    expected = {k[len("module.v.") :]: s for k, s in release_layout(64, 2).items()
                if k.startswith("module.v.") and ".head" not in k}  # fmt: skip
    expected["pos_embed"] = (1, 2 + 12 * 101, 64)
    assert ours == expected


@pytest.mark.parametrize("name", list(GEOMETRY))
def test_release_loads_strictly_and_matches_the_reference(name, tmp_path, caplog):
    kernel, stride, frames, stats = GEOMETRY[name]
    with caplog.at_level(logging.INFO, logger="audiokit.models.ssast"):
        model, sd = _loaded(name, tmp_path)
    dropped = [k[len("module.") :] for k in sd if not k.startswith("module.v.") or ".head" in k]
    assert len(dropped) == 15 and all(k in caplog.text for k in dropped)  # logged by name
    assert "resized" in caplog.text
    wave = _wave(3.0, batch=2)
    fbank = model.frontend(wave)
    assert fbank.shape == (2, 1, 128, frames)
    with torch.no_grad():
        embedding = model.embed(wave)
        out = model(wave)
    ref_embedding, _, _ = reference_forward(sd, reference_fbank(wave, frames, stats), stride)
    assert embedding.shape == (2, 64) and torch.equal(out, embedding)  # no classifier: forward is the embedding
    err = (embedding.double() - ref_embedding).abs().max().item()
    assert err < 1e-4, err
    assert (ref_embedding[0] - ref_embedding[1]).abs().max() > 1e-2  # the clips differ: the comparison can fail
    torch.testing.assert_close(
        model.pos_embed.detach(),
        upstream_positions(sd["module.v.pos_embed"], kernel, stride, frames),
        atol=1e-6,
        rtol=0,
    )


def test_pos_embed_resize_equals_upstreams_two_steps():
    """The recipes' grids: one 2-D bilinear resize (and centre cuts) = upstream's time-then-frequency steps."""
    gen = torch.Generator().manual_seed(3)
    cases = [(PATCH, (10, 10), 1024), (FRAME, (128, 1), 1024), (PATCH, (10, 10), 512), (FRAME, (128, 1), 512),
             (PATCH, (16, 16), 1024), (PATCH, (12, 12), 2048)]  # fmt: skip
    for kernel, stride, frames in cases:
        old = (128 // kernel[0], 1024 // kernel[1])
        new = ((128 - kernel[0]) // stride[0] + 1, (frames - kernel[1]) // stride[1] + 1)
        pos = torch.randn(1, 2 + old[0] * old[1], 32, generator=gen)
        ours = resize_pos_embed(pos, old, new)
        theirs = upstream_positions(pos, kernel, stride, frames)
        assert ours.shape == theirs.shape == (1, 2 + new[0] * new[1], 32)
        assert (ours - theirs).abs().max() < 1e-6, (kernel, stride, frames)
        assert torch.equal(ours[:, :2], pos[:, :2])
    # ESC-50 patch: time is cut around the centre (columns 7..56 of 64), not resized.
    pos = torch.randn(1, 2 + 8 * 64, 4, generator=gen)
    cut = resize_pos_embed(pos, (8, 64), (8, 50))[:, 2:].reshape(8, 50, 4)
    assert torch.equal(cut, pos[0, 2:].reshape(8, 64, 4)[:, 7:57])
    with pytest.raises(ValueError, match="8 x 64"):
        resize_pos_embed(pos[:, :-1], (8, 64), (12, 101))


def test_frontend_is_upstreams_wav2fbank():
    for name in ("ssast_base_patch.ssl", "ssast_base_patch.ssl_esc50"):
        _, _, frames, stats = GEOMETRY[name]
        model = ak.create_model(name, **TINY)
        for seconds in (2.0, 12.0):  # zero-padded in the log domain, truncated
            wave = _wave(seconds, batch=2)
            ours = model.frontend(wave)
            ref = reference_fbank(wave, frames, stats)
            assert ours.shape == ref.shape == (2, 1, 128, frames)
            # Upstream removes the clip mean before framing, audiokit relies on Kaldi's per-frame DC removal (the same
            # in exact arithmetic): float32 rounding of the 0.01 offset differs in the quietest low bands.
            torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)
        assert model.max_samples == 400 + (frames - 1) * 160  # the longest input the fixed grid uses in full


def test_save_pretrained_round_trips_without_resizing_again(tmp_path):
    model, _ = _loaded("ssast_base_patch.ssl", tmp_path)
    model.save_pretrained(tmp_path / "saved")
    again = ak.create_model(f"local-dir:{tmp_path / 'saved'}").eval()
    assert torch.equal(again.pos_embed, model.pos_embed) and again.patch_grid == (12, 101)
    wave = _wave(1.0)
    with torch.no_grad():
        assert torch.equal(again.embed(wave), model.embed(wave))


# ---------------------------------------------------------------------------------------------------------------------
# Refusals
# ---------------------------------------------------------------------------------------------------------------------
def test_refusals_name_the_problem(tmp_path):
    sd = release_state(PATCH)
    bad = dict(sd)
    del bad["module.v.blocks.1.attn.qkv.bias"]
    bad["module.v.extra.weight"] = torch.zeros(2)
    with pytest.raises(CheckpointMismatchError, match=r"missing blocks\.1\.attn\.qkv\.bias.*unexpected extra\.weight"):
        ak.create_model("ssast_base_patch.ssl", checkpoint_path=_save(bad, tmp_path, "bad.pth"), **TINY)
    # A patch file for a frame model, and a Base-width file for a small model.
    with pytest.raises(CheckpointFamilyError, match=r"patch \(16x16\).*frame \(128x2\).*ssast_\*_patch"):
        ak.create_model("ssast_base_frame.ssl", checkpoint_path=_save(sd, tmp_path, "patch.pth"), **TINY)
    with pytest.raises(CheckpointFamilyError, match=r"width is 64 and ssast_tiny_patch.ssl's is 192"):
        ak.create_model("ssast_tiny_patch.ssl", checkpoint_path=tmp_path / "patch.pth", depth=2)
    # Another family: an AST (or SSAST fine-tuned) file has v.* and mlp_head.* but no pretraining input size.
    ast_like = {k: v for k, v in sd.items() if k.startswith("module.v.")}
    ast_like.update({"module.mlp_head.0.weight": torch.ones(64), "module.mlp_head.0.bias": torch.zeros(64)})
    with pytest.raises(CheckpointFamilyError, match=r"no p_input_fdim, p_input_tdim: an AST or SSAST fine-tuned"):
        ak.create_model("ssast_base_patch.ssl", checkpoint_path=_save(ast_like, tmp_path, "ast.pth"), **TINY)
    # A PaSST-style flat file is not a release: the strict loader names what is missing.
    flat = {"cls_token": torch.zeros(1, 1, 64), "time_new_pos_embed": torch.zeros(1, 64, 1, 99)}
    with pytest.raises(CheckpointMismatchError, match=r"missing dist_token, pos_embed.*unexpected time_new_pos_embed"):
        ak.create_model("ssast_base_patch.ssl", checkpoint_path=_save(flat, tmp_path, "passt.pth"), **TINY)
    # A contradiction between the recorded input size and the positions, and another mel resolution.
    other = dict(sd, **{"module.p_input_tdim": torch.tensor(512)})
    with pytest.raises(CheckpointFamilyError, match=r"v\.pos_embed is of shape \(1, 514, 64\).*8 x 32"):
        ak.create_model("ssast_base_patch.ssl", checkpoint_path=_save(other, tmp_path, "tdim.pth"), **TINY)
    other = dict(sd, **{"module.p_input_fdim": torch.tensor(64)})
    with pytest.raises(CheckpointFamilyError, match="64 mel bands"):
        ak.create_model("ssast_base_patch.ssl", checkpoint_path=_save(other, tmp_path, "fdim.pth"), **TINY)


# ---------------------------------------------------------------------------------------------------------------------
# Frames, windows, refusal to tag
# ---------------------------------------------------------------------------------------------------------------------
# The ESC-50 tags (512 frames): the same geometry as the 1024-frame releases at half the tokens.
@pytest.mark.parametrize("name", ["ssast_base_patch.ssl_esc50", "ssast_base_frame.ssl_esc50"])
def test_embed_frames_are_the_time_columns(name, tmp_path):
    kernel, stride, frames, stats = GEOMETRY[name]
    model, sd = _loaded(name, tmp_path)
    wave = _wave(2.0)  # 198 fbank frames, the rest of the 512 zero padding
    with torch.no_grad():
        rows = model.embed_frames(wave).embeddings
        hidden = model.embed_frames(wave, layer=1).embeddings
        last = model.embed_frames(wave, layer=-1).embeddings  # the last block's output, before the final norm
    fbank = reference_fbank(wave, frames, stats)
    _, tokens, hidden_states = reference_forward(sd, fbank, stride)
    f_rows = (128 - kernel[0]) // stride[0] + 1
    covered = (198 - kernel[1]) // stride[1] + 1  # columns over the audio itself: 19 patch, 197 frame

    def columns(x):
        return x[:, 2:].reshape(2, f_rows, -1, x.shape[-1]).mean(dim=1)[:, :covered]

    assert rows.shape == (2, covered, 64) and hidden.shape == rows.shape
    assert (rows.double() - columns(tokens)).abs().max() < 1e-4
    assert (hidden.double() - columns(hidden_states[1])).abs().max() < 1e-4
    assert (last.double() - columns(hidden_states[-1])).abs().max() < 1e-4
    assert (rows[:, 0] - rows[:, -1]).abs().max() > 1e-2
    assert model.frame_hop_seconds == pytest.approx(stride[1] * 0.01)
    with pytest.raises(ValueError, match=r"layer must be in -3\.\.2"):
        model.embed_frames(wave, layer=3)

    path = tmp_path / "clip.wav"
    sf.write(path, wave[0].numpy(), SR, subtype="FLOAT")
    result = ak.embed([path], model=model, frame_level=True, num_workers=0)
    assert result.vectors.shape == (covered, 64) and result.starts[1] == pytest.approx(stride[1] * 0.01)
    assert abs(result.vectors - rows[0].numpy()).max() < 1e-4


def test_long_files_are_embedded_in_windows(tmp_path):
    model, _ = _loaded("ssast_base_patch.ssl_esc50", tmp_path)  # 512 frames: windows of 5.135 s
    n = 12 * SR
    wave = _wave(12.0, batch=1)
    path = tmp_path / "long.wav"
    sf.write(path, wave[0].numpy(), SR, subtype="FLOAT")
    result = ak.embed([path], model=model, num_workers=0)
    width = 400 + 511 * 160
    starts = [0, width, n - width]  # full windows, the last one aligned to the end
    with torch.no_grad():
        windows = torch.cat([model.embed(wave[:, s : s + width]) for s in starts])
    assert result.vectors.shape == (1, 64)
    assert abs(result.vectors[0] - windows.mean(dim=0).numpy()).max() < 1e-5
    assert (windows[0] - windows[2]).abs().max() > 1e-3  # the windows differ: their mean is not any one of them


def test_tag_refuses_the_embedder(tmp_path):
    model, _ = _loaded("ssast_base_patch.ssl_esc50", tmp_path)
    path = tmp_path / "clip.wav"
    sf.write(path, _wave(1.0, batch=1)[0].numpy(), SR)
    with pytest.raises(ValueError, match="no classifier"):
        ak.tag(path, model)
    with pytest.raises(ValueError, match="use embed"):
        model.predict_proba(_wave(1.0))


# ---------------------------------------------------------------------------------------------------------------------
# Fine-tuning
# ---------------------------------------------------------------------------------------------------------------------
def test_new_head_is_upstreams_mlp_head_and_trains(tmp_path):
    model, sd = _loaded("ssast_base_patch.ssl_esc50", tmp_path)
    wave = _wave(1.0)
    with torch.no_grad():
        embedding = model.embed(wave)
    model.reset_classifier(5, label_names=list("abcde"))
    head = model.get_classifier()
    assert isinstance(head[0], torch.nn.LayerNorm) and head[0].eps == 1e-5 and head.out_features == 5
    with torch.no_grad():
        logits = model(wave)
        ref = F.linear(F.layer_norm(embedding, (64,), head[0].weight, head[0].bias, eps=1e-5), head.weight, head.bias)
    torch.testing.assert_close(logits, ref)

    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = model.patch_embed.proj.weight.detach().clone()
    loss = F.cross_entropy(model(wave), torch.tensor([0, 4]))
    loss.backward()
    assert head.weight.grad.abs().sum() > 0 and model.patch_embed.proj.weight.grad.abs().sum() > 0
    optimizer.step()
    assert not torch.equal(model.patch_embed.proj.weight, before)

    # A new class count at creation: the backbone from the release, a fresh head.
    fresh = ak.create_model("ssast_base_patch.ssl_esc50", checkpoint_path=tmp_path / "0.pth", num_classes=3, **TINY)
    assert fresh.head.out_features == 3 and torch.equal(
        fresh.blocks[1].mlp.fc2.weight, sd["module.v.blocks.1.mlp.fc2.weight"]
    )
    model.eval().reset_classifier(0)
    with torch.no_grad():
        assert model(wave).shape == (2, 64) and torch.equal(model(wave), model.embed(wave))


def test_esc50_config_validates():
    from audiokit.train.config import RunConfig

    path = Path(__file__).resolve().parents[1] / "configs" / "esc50_ssast.yaml"
    cfg = RunConfig.from_yaml(path, overrides=["data.root=/data/ESC-50"]).validate()
    assert cfg.model.name == "ssast_base_patch.ssl_esc50" and cfg.data.clip_seconds == 5.0
    t = cfg.train
    assert (t.epochs, t.batch_size, t.optimizer.lr, t.optimizer.weight_decay) == (50, 48, 1e-4, 5e-7)
    assert (t.augment.freq_mask_width, t.augment.time_mask_width, t.augment.mixup_alpha) == (24, 96, 0.0)
    assert (t.schedule.name, t.schedule.gamma) == ("step", 0.85)
    fe = ak.get_pretrained_cfg(cfg.model.name).frontend
    assert (fe.max_frames, fe.mean, fe.std) == (512, ESC50[0], 2 * ESC50[1])


# ---------------------------------------------------------------------------------------------------------------------
# Registered configurations and the full-size model
# ---------------------------------------------------------------------------------------------------------------------
def test_registered_configs():
    names = {f"{a}.ssl" for a in RELEASES} | {"ssast_base_patch.ssl_esc50", "ssast_base_frame.ssl_esc50"}
    assert set(ak.list_models("ssast_*")) == names
    assert ak.get_pretrained_cfg("ssast_base_patch").name == "ssast_base_patch.ssl"
    for name in sorted(names):
        arch, tag = name.split(".")
        file, file_id, dim, kernel, audio, speech = RELEASES[arch]
        cfg = ak.get_pretrained_cfg(name)
        assert cfg.url == f"https://www.dropbox.com/s/{file_id}/{file}?dl=1" and cfg.sha256 is None
        assert "No hash is published" in cfg.notes and cfg.license == "BSD-3-Clause" and "Gong" in cfg.paper
        assert cfg.num_classes == 0 and cfg.get_label_names() == () and cfg.classifier == "head"
        expected = {"avg_audio": audio / 100} | ({"avg_speech": speech / 100} if speech else {})
        assert cfg.metrics == pytest.approx(expected, abs=1e-12)  # fractions, as every family's metrics
        frames = 512 if tag == "ssl_esc50" else 1024
        stats = ESC50 if tag == "ssl_esc50" else AUDIOSET
        fe = cfg.frontend
        assert (fe.kind, fe.sample_rate, fe.n_mels, fe.max_frames, fe.mean, fe.std) == (
            "kaldi_fbank",
            SR,
            128,
            frames,
            stats[0],
            2 * stats[1],
        )
        # Parameters: the release's v.* without the ImageNet heads, the positions on the fine-tuning grid.
        layout = release_layout(dim, 12, kernel)
        stride = (10, 10) if kernel == PATCH else (128, 1)
        grid = ((128 - kernel[0]) // stride[0] + 1) * ((frames - kernel[1]) // stride[1] + 1)
        backbone = sum(math.prod(s) for k, s in layout.items() if k.startswith("module.v.") and ".head" not in k)
        assert cfg.num_params == backbone - layout["module.v.pos_embed"][1] * dim + (2 + grid) * dim, name
        tiny = ak.create_model(name, depth=1)
        assert tiny.patch_embed.proj.kernel_size == kernel and tiny.patch_embed.proj.stride == stride
        assert tiny.embed_dim == dim and tiny.blocks[0].attn.num_heads == {768: 12, 384: 6, 192: 3}[dim]


@pytest.mark.slow
def test_full_size_base_patch(caplog):
    """Base at full size: a release-layout state dict of 166 tensors loads strictly; a forward over 1024 frames."""
    from audiokit._weights import load_weights

    model = ak.create_model("ssast_base_patch.ssl").eval()
    with caplog.at_level(logging.INFO, logger="audiokit.models.ssast"):
        load_weights(model, release_state(PATCH, dim=768, depth=12), source="SSAST-Base-Patch-400 layout")
    assert "dropping 15 tensors" in caplog.text and "8 x 64 (pretraining) resized to 12 x 101" in caplog.text
    # zoo2.md (measured): upstream's fine-tuning backbone has 87.7 M with DeiT's unused ImageNet heads (1,538,000).
    assert sum(p.numel() for p in model.parameters()) == 86_187_264 == 87_725_264 - 1_538_000
    eps = {m.eps for m in [*model.blocks.modules(), model.norm] if isinstance(m, torch.nn.LayerNorm)}
    assert eps == {1e-6} and model.patch_grid == (12, 101) and model.num_features == 768
    wave = _wave(model.max_samples / SR, batch=1)
    with torch.no_grad():
        tokens = model.forward_features(wave)
    assert tokens.shape == (1, 2 + 1212, 768) and torch.isfinite(tokens).all()
    torch.testing.assert_close(model.forward_pre_logits(tokens), tokens[:, 2:].mean(dim=1))
