"""Configurable heads on real models: reset_classifier(head=...), predict_proba, save/load, and training diagnostics."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

import audiokit as ak
from audiokit.layers import ClassifierHead, HeadConfig
from tests._calibration import informative
from tests.conftest import base_config, write_manifest


@pytest.mark.parametrize("name", ["efficientat_mn01.audioset", "bcresnet_1.speechcommands", "panns_cnn6.audioset"])
def test_mlp_head_on_every_family_round_trips(name, tmp_path):
    model = informative(name)  # as created, mn01's logits under this head are the same for every input
    head = HeadConfig(hidden=[16, 8], activation="glu", norm="layer", output="log_softmax")
    if model.task == "multilabel":
        with pytest.raises(ValueError, match="sigmoid"):
            model.reset_classifier(5, head=head)
        model.pretrained_cfg = model.pretrained_cfg.replace(task="multiclass")
    model.reset_classifier(5, [f"c{i}" for i in range(5)], head=head)
    assert isinstance(model.get_classifier(), ClassifierHead) and model.output_activation == "log_softmax"
    wave = 0.1 * torch.randn(2, model.sample_rate)
    with torch.no_grad():
        logits = model(wave)
        embedding = model.embed(wave)
    assert logits.shape == (2, 5) and embedding.shape == (2, model.num_features)
    torch.testing.assert_close(model.predict_proba(wave), torch.log_softmax(logits, -1))
    model.save_pretrained(tmp_path / "saved")
    again = ak.create_model(f"local-dir:{tmp_path / 'saved'}").eval()
    assert again.head_cfg == head and again.output_activation == "log_softmax"
    with torch.no_grad():
        assert torch.equal(again(wave), logits)


def test_unknown_activation_in_a_config_fails_before_training(tmp_path):
    from audiokit.train import ConfigError, RunConfig

    with pytest.raises(ConfigError, match=r"head: .*unknown activation 'swishy'.*relu"):
        RunConfig.from_dict({"head": {"hidden": [8], "activation": "swishy"}, "data": {"root": "/x"}}).validate()


def test_fine_tuning_records_activation_diagnostics(tmp_path):
    from audiokit.cli import main

    manifest = write_manifest(tmp_path, classes=3, per_class=6, seconds=0.5)
    data = base_config(tmp_path, manifest, epochs=2, batch_size=6)
    data["head"] = {"hidden": [32], "activation": "leaky_relu:0.05", "dropout": 0.1}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(data))
    assert main(["finetune", str(config), "--quiet", "--set", "head.activation=mish"]) == 0
    run = tmp_path / "runs" / "run"
    records = [json.loads(x) for x in (run / "holdout" / "metrics.jsonl").read_text().splitlines()]
    for record in records:
        assert 0.0 <= record["head.layer0.dead_fraction"] <= 1.0
        assert record["head.layer0.saturated_fraction"] == 0.0  # mish is unbounded above
        assert record["head.layers.0.linear.grad_norm"] > 0 and record["head.fc.grad_norm"] > 0
        assert record["head.layer0.std"] > 0
    best = ak.create_model(f"local-dir:{run / 'holdout' / 'best'}")
    assert best.head_cfg.activation == "mish" and best.head_cfg.hidden == [32]
