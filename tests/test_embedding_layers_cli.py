"""``audiokit embed --layer`` takes the names of ``embedding_layers`` as well as block indices."""

from __future__ import annotations

import numpy as np

import audiokit as ak
from audiokit.cli import main
from tests.test_embedding_layers import _calibrated


def test_cli_embed_layer_by_name_and_index(capsys, tmp_path, make_wav):

    model = _calibrated("bcresnet_1.speechcommands", seconds=1.0)
    model.save_pretrained(tmp_path / "bc")
    clip = make_wav("a.wav", 0.8)
    wave = ak.load_audio(clip, sample_rate=16000)[None]
    for layer in ("pooled", "-1"):
        out = tmp_path / f"{layer}.npz"
        code = main(["embed", str(clip), "--model", f"local-dir:{tmp_path / 'bc'}", "-o", str(out),
                     "--layer", layer, "--num-workers", "0"])  # fmt: skip
        capsys.readouterr()
        assert code == 0
        key = int(layer) if layer.lstrip("-").isdigit() else layer
        expected = model.embed(wave, layer=key)[0].numpy()
        np.testing.assert_allclose(np.load(out)["embeddings"][0], expected, atol=1e-5)
