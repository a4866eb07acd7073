"""VGGish: the torchvggish release layout, parity with an independent numpy/functional reference, PCA postprocessing.

The reference below is written from the upstream facts (zoo2.md §1), not from audiokit's code: framing without padding,
periodic Hann 400, ``|rfft(frame, 512)|``, 64 HTK-mel triangles 125-7500 Hz laid out in the mel domain (here with
``np.interp`` on the three corner points) with the DC bin zeroed, ``log(x + 0.01)``, 96-frame examples with hop 96
(incomplete ones dropped), all in float64; then the network with ``torch.nn.functional`` ops reading the tensors by
their release names, flattening in TensorFlow's (H, W, C) order. The weights are random, written as the release file
is: a flat 18-tensor state dict in torch's legacy (non-zip) serialization.

Measured (2 CPU cores): log-mel within 2.4e-7 of the float64 reference (the frontend computes in float64 and rounds
once to float32; a float32 computation differs by up to ~9e-5 in quiet bands), embeddings within 2.2e-5 of it at a
scale of 18 (1.2e-6 relative; the network runs in float32). Flattening in (C, H, W) order instead moves them by 8-13.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import audiokit as ak
from audiokit._hub import CheckpointLoadError
from audiokit.cli import main
from audiokit.models.vggish import PCA_URL, WEIGHTS_URL, VGGish, load_pca_params

NAME = "vggish.audioset"
CONVS = {0: (64, 1), 3: (128, 64), 6: (256, 128), 8: (256, 256), 11: (512, 256), 13: (512, 512)}
DENSE = {0: (4096, 12288), 2: (4096, 4096), 4: (128, 4096)}
SR = 16000


# -- the independent reference -----------------------------------------------------------------------------------------
def release_layout() -> dict[str, tuple[int, ...]]:
    layout: dict[str, tuple[int, ...]] = {}
    for i, (out, inp) in CONVS.items():
        layout[f"features.{i}.weight"] = (out, inp, 3, 3)
        layout[f"features.{i}.bias"] = (out,)
    for i, (out, inp) in DENSE.items():
        layout[f"embeddings.{i}.weight"] = (out, inp)
        layout[f"embeddings.{i}.bias"] = (out,)
    return layout


def random_release_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """He-scaled random weights and small biases: activations keep their size through the ReLUs."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for name, shape in release_layout().items():
        if name.endswith("bias"):
            state[name] = 0.05 * torch.randn(shape, generator=gen)
        else:
            fan_in = int(np.prod(shape[1:]))
            state[name] = torch.randn(shape, generator=gen) * (2.0 / fan_in) ** 0.5
    return state


def reference_logmel_examples(wave: np.ndarray) -> np.ndarray:
    """1-D float waveform at 16 kHz -> log-mel examples ``(n, 96, 64)`` in float64."""
    x = np.asarray(wave, dtype=np.float64)
    n_frames = 1 + (len(x) - 400) // 160
    frames = np.stack([x[i * 160 : i * 160 + 400] for i in range(n_frames)])
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)
    magnitude = np.abs(np.fft.rfft(frames * window, 512))  # (frames, 257)

    def mel(f):
        return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)

    bins = mel(np.linspace(0.0, 8000.0, 257))
    edges = np.linspace(mel(125.0), mel(7500.0), 66)
    bank = np.stack([np.interp(bins, edges[b : b + 3], [0.0, 1.0, 0.0]) for b in range(64)], axis=1)
    bank[0] = 0.0
    logmel = np.log(magnitude @ bank + 0.01)  # (frames, 64)
    n_examples = 1 + (n_frames - 96) // 96
    return np.stack([logmel[i * 96 : (i + 1) * 96] for i in range(n_examples)])


def reference_embeddings(state: dict[str, torch.Tensor], examples: np.ndarray, hwc: bool = True) -> np.ndarray:
    """Examples ``(n, 96, 64)`` -> raw embeddings ``(n, 128)``, in float64; ``hwc=False`` flattens in (C, H, W)."""
    x = torch.from_numpy(examples)[:, None]
    for i in CONVS:
        x = F.relu(F.conv2d(x, state[f"features.{i}.weight"].double(), state[f"features.{i}.bias"].double(), padding=1))
        if i in (0, 3, 8, 13):
            x = F.max_pool2d(x, 2)
    x = (x.permute(0, 2, 3, 1) if hwc else x).flatten(1)
    for i in DENSE:
        x = F.relu(F.linear(x, state[f"embeddings.{i}.weight"].double(), state[f"embeddings.{i}.bias"].double()))
    return x.numpy()


def reference_postprocess(raw: np.ndarray, vectors: np.ndarray, means: np.ndarray) -> np.ndarray:
    pca = (vectors @ (raw.T - means.reshape(-1, 1))).T
    return np.round((np.clip(pca, -2.0, 2.0) + 2.0) * (255.0 / 4.0))


# -- fixtures ----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def state():
    return random_release_state(seed=3)


@pytest.fixture(scope="module")
def checkpoint(state, tmp_path_factory):
    path = tmp_path_factory.mktemp("vggish") / "vggish-10086976.pth"
    torch.save(state, path, _use_new_zipfile_serialization=False)  # the release's legacy format
    return path


@pytest.fixture(scope="module")
def model(checkpoint):
    return ak.create_model(NAME, checkpoint_path=checkpoint).eval()


@pytest.fixture(scope="module")
def waves():
    """Three 2.5 s clips (two examples each): loud noise, quiet noise, a tone ending in silence."""
    gen = torch.Generator().manual_seed(7)
    wave = torch.randn(3, 40000, generator=gen) * torch.tensor([[0.3], [0.003], [0.0]])
    t = torch.arange(40000) / SR
    wave[2] = 0.5 * torch.sin(2 * torch.pi * 440 * t)
    wave[2, 20000:] = 0.0
    return wave


def write_pca_file(path, seed: int = 0, numpy_core: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """As upstream's: a dict of float64 numpy arrays, torch.save (legacy format); ``numpy_core`` names the
    reconstructor as a numpy-1.x writer does (``numpy.core.multiarray``)."""
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((128, 128)) / 128**0.5
    means = rng.standard_normal(128) * 0.1
    torch.save({"pca_eigen_vectors": vectors, "pca_means": means}, path, _use_new_zipfile_serialization=False)
    if numpy_core:
        raw = path.read_bytes()
        assert b"numpy._core.multiarray\n" in raw or b"numpy.core.multiarray\n" in raw
        path.write_bytes(raw.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    return vectors, means


# -- layout and metadata -----------------------------------------------------------------------------------------------
def test_layout_and_parameter_count(model):
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert shapes == release_layout() and len(shapes) == 18
    assert sum(p.numel() for p in model.parameters()) == 72_141_184 == model.pretrained_cfg.num_params


def test_registry_metadata():
    cfg = ak.get_pretrained_cfg("vggish")
    assert cfg.name == NAME and cfg.num_classes == 0 and cfg.clip_seconds == 0.96 and cfg.sample_rate == 16000
    assert cfg.license == "Apache-2.0" and "Hershey" in cfg.paper and cfg.sha256 is None
    assert WEIGHTS_URL == "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish-10086976.pth"
    assert PCA_URL == "https://github.com/harritaylor/torchvggish/releases/download/v0.1/vggish_pca_params-970ea276.pth"
    assert WEIGHTS_URL in cfg.notes and "10086976" in cfg.notes and "970ea276" in cfg.notes
    with pytest.raises(ak._hub.WeightsUnavailableError, match=r"vggish-10086976\.pth"):
        ak.create_model(NAME, pretrained=True)  # no url in the registry (see vggish.py): the message names the file
    fe = cfg.frontend
    numbers = (fe.kind, fe.n_fft, fe.win_length, fe.hop_length, fe.n_mels, fe.f_min, fe.f_max, fe.log_offset)
    assert numbers == ("vggish", 512, 400, 160, 64, 125.0, 7500.0, 0.01)


def test_strict_loading_refuses_other_files(state, tmp_path):
    partial = dict(state)
    del partial["embeddings.4.bias"]
    path = tmp_path / "partial.pth"
    torch.save(partial, path, _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match=r"missing embeddings\.4\.bias"):
        ak.create_model(NAME, checkpoint_path=path)


def test_vggish_frontend_config_is_validated():
    cfg = ak.get_pretrained_cfg(NAME).frontend
    with pytest.raises(ValueError, match="center must be False"):
        ak.audio.frontend.LogMelFrontend(cfg.__class__(**{**cfg.to_dict(), "center": True}))
    with pytest.raises(ValueError, match=r"frontend\.kind"):
        cfg.__class__(**{**cfg.to_dict(), "kind": "vgg"})
    assert cfg.min_samples == 400 and cfg.num_frames(40000) == 248


# -- parity ------------------------------------------------------------------------------------------------------------
def test_frontend_matches_the_float64_reference(model, waves):
    with torch.no_grad():
        ours = model.examples(waves)[:, :, 0].double().numpy()  # (B, examples, 96, 64)
    for b in range(len(waves)):
        ref = reference_logmel_examples(waves[b].numpy())
        assert ours[b].shape == ref.shape == (2, 96, 64)
        assert np.abs(ours[b] - ref).max() < 1e-6  # float32 rounding of values up to ~|5|


def test_embeddings_match_the_reference_and_need_the_hwc_flatten(model, state, waves):
    with torch.no_grad():
        frames = model.embed_frames(waves).embeddings.numpy()  # (3, 2, 128)
        clip = model.embed(waves).numpy()
    assert frames.shape == (3, 2, 128) and clip.shape == (3, 128)
    worst = 0.0
    for b in range(len(waves)):
        examples = reference_logmel_examples(waves[b].numpy())
        ref = reference_embeddings(state, examples)
        assert ref.max() > 0.1 and np.abs(ref[0] - ref[1]).max() > 1e-2  # a non-degenerate comparison
        worst = max(worst, np.abs(frames[b] - ref).max() / max(1.0, np.abs(ref).max()))
        np.testing.assert_allclose(clip[b], ref.mean(axis=0), atol=1e-4 * max(1.0, np.abs(ref).max()), rtol=0)
        if b == 0:  # the comparison can tell the flattening orders apart
            chw = reference_embeddings(state, examples, hwc=False)
            assert np.abs(chw - ref).max() > 100 * 1e-4 * max(1.0, np.abs(ref).max())
    assert worst < 1e-5


def test_short_input_is_padded_to_one_example(model, caplog):
    model._warned_short = False
    wave = 0.1 * torch.randn(2, 8000, generator=torch.Generator().manual_seed(1))
    with caplog.at_level(logging.WARNING):
        frames = model.embed_frames(wave).embeddings
    assert frames.shape == (2, 1, 128) and "zero-padding" in caplog.text
    padded = F.pad(wave, (0, 15600 - 8000))
    torch.testing.assert_close(frames, model.embed_frames(padded).embeddings)
    # Two examples need 192 frames: 400 + 191 * 160 = 30,960 samples.
    assert model.num_examples(8000) == model.num_examples(15600) == model.num_examples(30959) == 1
    assert model.num_examples(30960) == 2
    assert model.embed(torch.zeros(1, 1)).shape == (1, 128)


def test_embed_frames_rows_and_start_times(model, waves, tmp_path):
    import soundfile as sf

    path = tmp_path / "clip.wav"
    sf.write(path, waves[0].numpy(), SR, subtype="FLOAT")
    result = ak.embed(path, model, frame_level=True, num_workers=0, device="cpu")
    assert result.vectors.shape == (2, 128) and list(result.starts) == pytest.approx([0.0, 0.96])
    torch.testing.assert_close(torch.from_numpy(result.vectors), model.embed_frames(waves[:1]).embeddings[0])
    assert model.example_starts(40000).tolist() == pytest.approx([0.0, 0.96])
    with pytest.raises(ValueError, match="layer"):
        model.embed_frames(waves, layer=3)


def test_tag_refuses_an_embedder(model, checkpoint, waves, tmp_path, capsys):
    import soundfile as sf

    path = tmp_path / "clip.wav"
    sf.write(path, waves[0].numpy(), SR)
    with pytest.raises(ValueError, match="no classifier"):
        ak.tag(path, model)
    with pytest.raises(ValueError, match="use embed"):
        model.predict_proba(waves)
    code = main(["tag", "--model", NAME, "--checkpoint", str(checkpoint), str(path)])
    assert code == 2 and "has no classifier; use `audiokit embed`" in capsys.readouterr().err


# -- PCA postprocessing ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("numpy_core", [False, True], ids=["numpy2_names", "numpy1_names"])
def test_pca_file_is_read_with_only_numpy_allowed(tmp_path, numpy_core):
    path = tmp_path / "vggish_pca_params-970ea276.pth"
    vectors, _ = write_pca_file(path, numpy_core=numpy_core)
    with pytest.raises(CheckpointLoadError):  # the plain safe loader refuses numpy arrays
        ak._hub.load_state_dict_file(path)
    v, m = load_pca_params(path)
    assert v.dtype == m.dtype == torch.float32 and v.shape == (128, 128) and m.shape == (128,)
    np.testing.assert_allclose(v.numpy(), vectors, rtol=1e-6)


def test_pca_file_with_other_globals_is_refused(tmp_path):
    path = tmp_path / "pca.pth"
    rng = np.random.default_rng(0)
    torch.save({"pca_eigen_vectors": rng.random((128, 128)), "pca_means": np.float64(0.5)}, path)  # a numpy scalar
    with pytest.raises(CheckpointLoadError):
        load_pca_params(path)
    torch.save({"pca_eigen_vectors": rng.random((128, 128))}, path, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointLoadError, match="pca_means"):
        load_pca_params(path)


def test_postprocess_matches_the_reference(model, checkpoint, waves, tmp_path):
    pca_path = tmp_path / "pca.pth"
    vectors, means = write_pca_file(pca_path, seed=1)
    with pytest.raises(ValueError, match="pca_params_path"):
        VGGish(ak.get_pretrained_cfg(NAME), postprocess=True)
    post = ak.create_model(NAME, checkpoint_path=checkpoint, postprocess=True, pca_params_path=pca_path).eval()
    with torch.no_grad():
        raw = model.embed_frames(waves).embeddings.double().numpy()
        quantised = post.embed_frames(waves).embeddings.numpy()
        clip = post.embed(waves).numpy()
    assert quantised.shape == (3, 2, 128)  # not squeezed
    # Rescale so that the projections spread over the quantiser's range: the comparison covers every branch.
    ref = np.stack([reference_postprocess(raw[b], vectors, means) for b in range(3)])
    assert ref.min() == 0 and ref.max() == 255 and 0 < (ref == 0).mean() < 0.5
    assert np.array_equal(quantised, np.round(quantised)) and quantised.min() >= 0 and quantised.max() <= 255
    off = np.abs(quantised - ref)
    assert off.max() <= 1 and (off > 0).mean() < 0.01  # float32 vs float64 can flip a value at a .5 boundary
    np.testing.assert_allclose(clip, quantised.mean(axis=1), rtol=1e-6)
    assert post.model_kwargs["pca_params_path"] == str(pca_path)


@pytest.mark.slow
def test_postprocessing_model_round_trips_through_save_pretrained(checkpoint, waves, tmp_path):
    """The saved config records the PCA file's path (a string) and the reload reads it again, also while the builder
    sizes the model on the meta device."""
    pca_path = tmp_path / "pca.pth"
    write_pca_file(pca_path, seed=2)
    post = ak.create_model(NAME, checkpoint_path=checkpoint, postprocess=True, pca_params_path=pca_path).eval()
    post.save_pretrained(tmp_path / "saved")
    again = ak.create_model(f"local-dir:{tmp_path / 'saved'}").eval()
    assert again.postprocess and again.model_kwargs == {"postprocess": True, "pca_params_path": str(pca_path)}
    with torch.no_grad():
        assert torch.equal(post.embed_frames(waves).embeddings, again.embed_frames(waves).embeddings)


# -- fine-tuning -------------------------------------------------------------------------------------------------------
def test_new_head_on_the_embedding_trains(checkpoint, waves):
    net = ak.create_model(NAME, checkpoint_path=checkpoint, num_classes=4, label_names=list("abcd"))
    assert net.label_names == tuple("abcd") and net.get_classifier().in_features == 128
    net.train()
    loss = F.cross_entropy(net(waves[:2]), torch.tensor([0, 3]))
    loss.backward()
    assert net.classifier.weight.grad.abs().sum() > 0 and net.features[0].weight.grad.abs().sum() > 0
    net.reset_classifier(0)
    with torch.no_grad():
        torch.testing.assert_close(net.eval()(waves), net.embed(waves))


def test_esc50_config_loads():
    from pathlib import Path

    from audiokit.train.config import RunConfig

    cfg = RunConfig.from_yaml(Path(__file__).resolve().parents[1] / "configs" / "esc50_vggish.yaml")
    assert cfg.model.name == NAME and cfg.model.checkpoint_path is None and cfg.data.clip_seconds == 5.0
    assert cfg.train.optimizer.head_lr == 1e-3 and cfg.train.augment.roll_samples == 2000
