"""Hostile and unlucky configurations: every one is refused with one line naming the key or file, before any work,
and a run that fails before its first checkpoint leaves no run directory behind."""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Annotated, Union, get_args, get_origin

import pytest
import yaml

from audiokit.cli import main
from audiokit.evaluate import evaluate_model
from audiokit.train import ConfigError, RunConfig, finetune
from audiokit.train.config import DataConfig, Domain
from audiokit.train.loop import _remove_unstarted_run
from tests.conftest import base_config, write_manifest


def _numeric_keys(cls: type = RunConfig, prefix: str = "") -> list[tuple[str, Domain | None, bool]]:
    """(dotted key, declared Domain or None, is a list) of every int or float field, plain, optional or listed."""
    keys = []
    hints = typing.get_type_hints(cls, include_extras=True)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        if dataclasses.is_dataclass(kind):
            keys += _numeric_keys(kind, f"{prefix}{f.name}.")
            continue
        if get_origin(kind) in (Union, types.UnionType):
            kind = next(k for k in get_args(kind) if k is not type(None))
        listed = get_origin(kind) is list
        if listed:
            (kind,) = get_args(kind)
        domain = None
        if get_origin(kind) is Annotated:
            domain = next((m for m in kind.__metadata__ if isinstance(m, Domain)), None)
            kind = get_args(kind)[0]
        if kind in (int, float):
            keys.append((f"{prefix}{f.name}", domain, listed))
    return keys


NUMERIC_KEYS = _numeric_keys()


def _write(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def config(tmp_path) -> Path:
    """The tiny run config; its manifest is not written (validation reads no data)."""
    return _write(tmp_path, base_config(tmp_path, tmp_path / "manifest.csv"))


@pytest.fixture
def dataset_config(tmp_path) -> Path:
    """The tiny run config with its tone clips written: a failure then cannot come from missing data."""
    return _write(tmp_path, base_config(tmp_path, write_manifest(tmp_path, classes=3, per_class=4)))


def _error(path: Path, *overrides: str) -> str:
    with pytest.raises(ConfigError) as info:
        RunConfig.from_yaml(path, list(overrides)).validate()
    message = str(info.value)
    assert "\n" not in message, message
    return message


# -- every numeric key has a domain ------------------------------------------------------------------------------------
def test_every_numeric_key_declares_a_domain():
    keys = [key for key, _, _ in NUMERIC_KEYS]
    assert {"train.grad_clip", "train.optimizer.lr", "data.clip_seconds", "head.hidden"} <= set(keys), keys
    assert not [key for key, domain, _ in NUMERIC_KEYS if domain is None]


@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf"])
@pytest.mark.parametrize(("key", "listed"), [(key, listed) for key, _, listed in NUMERIC_KEYS])
def test_non_finite_values_are_refused_for_every_numeric_key(config, key, listed, value):
    assert key in _error(config, f"{key}={f'[{value}, {value}]' if listed else value}")


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("train.grad_clip=-1", "train.grad_clip=-1.0 is out of range; it must be > 0 (or null)"),
        ("train.grad_clip=0", "train.grad_clip=0.0 is out of range; it must be > 0 (or null)"),
        ("train.grad_clip=.nan", "train.grad_clip=nan is not a finite number; it must be > 0 (or null)"),
        ("train.augment.mixup_alpha=-0.2", "train.augment.mixup_alpha=-0.2 is out of range; it must be >= 0"),
        ("data.clip_seconds=.inf", "data.clip_seconds=inf is not a finite number; it must be > 0"),
        ("data.clip_seconds=.nan", "data.clip_seconds=nan is not a finite number"),
        ("data.clip_seconds=0", "data.clip_seconds=0.0 is out of range; it must be > 0"),
        ("train.optimizer.lr=.inf", "train.optimizer.lr=inf is not a finite number; it must be > 0"),
        ("train.optimizer.lr=nan", "train.optimizer.lr=nan is not a finite number"),  # float() reads the string
        ("train.optimizer.lr=0", "train.optimizer.lr=0.0 is out of range; it must be > 0"),
        ("train.optimizer.lr=-1e-3", "train.optimizer.lr=-0.001 is out of range"),
        ("train.optimizer.lr=1" + "0" * 400, "train.optimizer.lr=100000000000... (401 digits) is too large"),
        ("train.optimizer.betas=[0.9, 1.0]", "train.optimizer.betas[1]=1.0 is out of range; it must be in [0, 1)"),
        ("train.optimizer.momentum=1.5", "train.optimizer.momentum=1.5 is out of range; it must be in [0, 1)"),
        ("train.optimizer.weight_decay=-0.01", "train.optimizer.weight_decay=-0.01 is out of range; it must be >= 0"),
        ("train.optimizer.layer_decay=0", "train.optimizer.layer_decay=0.0 is out of range; it must be in (0, 1]"),
        ("train.schedule.gamma=2", "train.schedule.gamma=2.0 is out of range; it must be in (0, 1]"),
        ("train.schedule.min_lr_ratio=1.5", "train.schedule.min_lr_ratio=1.5 is out of range; it must be in [0, 1]"),
        ("train.schedule.step_epochs=0", "train.schedule.step_epochs=0 is out of range; it must be >= 1"),
        ("train.schedule.warmup_epochs=-1", "train.schedule.warmup_epochs=-1.0 is out of range; it must be >= 0"),
        ("train.label_smoothing=1", "train.label_smoothing=1.0 is out of range; it must be in [0, 1)"),
        ("train.epochs=0", "train.epochs=0 is out of range; it must be >= 1"),
        ("train.batch_size=-4", "train.batch_size=-4 is out of range; it must be >= 1"),
        ("train.early_stopping_patience=0", "train.early_stopping_patience=0 is out of range; it must be >= 1 (or"),
        ("train.checkpoint_every_steps=0", "train.checkpoint_every_steps=0 is out of range; it must be >= 1"),
        ("train.max_steps_per_epoch=-1", "train.max_steps_per_epoch=-1 is out of range; it must be >= 1"),
        ("train.seed=-1", "train.seed=-1 is out of range; it must be in [0, 4294967295]"),
        ("train.augment.roll_samples=-5", "train.augment.roll_samples=-5 is out of range; it must be >= 0"),
        ("train.augment.gain_db=[-1000, 0]", "train.augment.gain_db[0]=-1000.0 is out of range"),
        ("train.augment.time_masks=-1", "train.augment.time_masks=-1 is out of range; it must be >= 0"),
        ("data.val_fraction=1", "data.val_fraction=1.0 is out of range; it must be in (0, 1)"),
        ("data.num_workers=-1", "data.num_workers=-1 is out of range; it must be >= 0"),
        ("head.hidden=[16, 0]", "head.hidden[1]=0 is out of range; it must be >= 1"),
        ("head.dropout=1", "head.dropout=1.0 is out of range; it must be in [0, 1)"),
        ("model.kwargs={drop_rate: .nan}", "model.kwargs.drop_rate=nan is not a finite number"),
        ("train.device=gpu0", "train.device='gpu0' is not a device"),
        ("model.name=efficientat_mn01.nowhere", "model.name: unknown model 'efficientat_mn01.nowhere'"),
    ],
)
def test_out_of_domain_values_name_key_value_and_range(config, override, expected):
    assert expected in _error(config, override)


def test_domain_boundaries_that_are_allowed(config):
    cfg = RunConfig.from_yaml(config, ["train.grad_clip=null", "train.optimizer.weight_decay=0",
                                       "train.optimizer.layer_decay=1", "train.schedule.min_lr_ratio=1",
                                       "train.augment.mixup_alpha=0", "train.seed=4294967295",
                                       "train.optimizer.betas=[0, 0.999]"]).validate()  # fmt: skip
    assert cfg.train.grad_clip is None and cfg.train.optimizer.layer_decay == 1.0
    assert str(Domain(0, 1, low_open=True)) == "in (0, 1]" and -0.0 in Domain(0) and 0.0 not in Domain(0, low_open=True)


def test_domains_hold_for_configs_built_in_python():
    cfg = RunConfig(data=DataConfig(kind="folder", root="/x"))
    cfg.train.grad_clip = -1.0  # no YAML involved: validate still walks the dataclasses
    with pytest.raises(ConfigError, match=r"train\.grad_clip=-1\.0 is out of range"):
        cfg.validate()
    cfg.train.grad_clip, cfg.train.augment.gain_db = 1.0, [float("nan"), 0.0]
    with pytest.raises(ConfigError, match=r"train\.augment\.gain_db\[0\]=nan is not a finite number"):
        cfg.validate()


def test_negative_grad_clip_is_refused_by_the_cli_and_a_valid_one_trains(tmp_path, capsys):
    manifest = write_manifest(tmp_path, classes=2, per_class=4)
    data = base_config(tmp_path, manifest, epochs=1, batch_size=2, max_steps_per_epoch=2)
    data["model"] = {"name": "bcresnet_1.speechcommands", "pretrained": False}  # 9k parameters: a step is ms
    path = _write(tmp_path, data)
    assert main(["finetune", str(path), "--quiet", "--set", "train.grad_clip=-1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "audiokit: error: train.grad_clip=-1.0 is out of range; it must be > 0 (or null)"
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()
    assert main(["finetune", str(path), "--quiet", "--set", "train.grad_clip=0.5"]) == 0
    assert (tmp_path / "runs" / "run" / "holdout" / "last" / "model.safetensors").is_file()


# -- unparseable overrides and config files ---------------------------------------------------------------------------
def test_bad_yaml_in_an_override_names_the_override(config, tmp_path, capsys):
    assert "--set 'train.epochs=[1': the value is not valid YAML (line 1, column 3" in _error(config, "train.epochs=[1")
    marker = tmp_path / "executed"
    tagged = f"train.seed=!!python/object/apply:os.system ['touch {marker}']"
    message = _error(config, tagged)
    assert message.startswith(f"--set {tagged!r}: the value is not valid YAML") and "python/object" in message
    assert main(["finetune", str(config), "--set", "train.epochs=[1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.epochs=[1" in err and "Traceback" not in err
    assert not marker.exists()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"train: {epochs: [1\n", "invalid YAML (line 2, column 1: expected ',' or ']'"),
        (b"train:\n  epochs: 1\n bad: 2\n", "invalid YAML (line 3"),
        (b"- model\n- data\n", "the top level must be a mapping of sections, got list"),
        (b"just text\n", "the top level must be a mapping of sections, got str"),
        (b"train: !!python/name:os.system\n", "invalid YAML (line 1, column 8: could not determine a constructor"),
        (b"data: {kind: folder, root: caf\xe9}\n", "not UTF-8 text (byte 0xe9 at offset 30)"),
        (b"1: 2\n", "unknown key '1'"),
    ],
)
def test_bad_config_files_are_one_line_naming_the_file(tmp_path, capsys, content, expected):
    path = tmp_path / "bad.yaml"
    path.write_bytes(content)
    message = _error(path)
    assert message.startswith(f"{path}: ") and expected in message, message
    assert main(["finetune", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err


def test_config_path_that_is_a_directory_missing_or_below_a_file(tmp_path):
    assert _error(tmp_path) == f"{tmp_path}: is a directory, not a config file"
    assert _error(tmp_path / "absent.yaml") == f"{tmp_path / 'absent.yaml'}: config file not found"
    beneath_a_file = tmp_path / "plain.txt" / "c.yaml"
    beneath_a_file.parent.write_text("")
    assert _error(beneath_a_file) == f"{beneath_a_file}: cannot read the config file (Not a directory)"


def test_config_file_without_read_permission(tmp_path):
    path = tmp_path / "locked.yaml"
    path.write_text("train: {epochs: 1}\n")
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running as a user who reads any file (root)")
        assert _error(path) == f"{path}: cannot read the config file (Permission denied)"
    finally:
        path.chmod(0o644)


# -- destinations ---------------------------------------------------------------------------------------------------
def test_output_dir_that_is_a_file_fails_before_any_work(tmp_path, dataset_config):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("")
    cfg = RunConfig.from_yaml(dataset_config, [f"output_dir={blocker}"]).validate()
    with pytest.raises(ConfigError) as info:
        finetune(cfg, Path(cfg.output_dir) / "run", progress=False)
    assert str(info.value) == f"run directory {blocker / 'run'}: {blocker} is a file, not a directory"
    assert not (tmp_path / "cache").exists()  # nothing was decoded
    with pytest.raises(ConfigError) as info:
        finetune(cfg, blocker, progress=False)
    assert str(info.value) == f"run directory {blocker} is a file, not a directory"


def test_evaluate_report_that_is_a_file_fails_before_the_model_runs(tmp_path, dataset_config, capsys):
    import audiokit as ak

    model = ak.create_model("efficientat_mn01.audioset", num_classes=3, label_names=["class0", "class1", "class2"])
    model.save_pretrained(tmp_path / "model")
    report = tmp_path / "report.txt"
    report.write_text("keep me")
    args = ["evaluate", "--model", f"local-dir:{tmp_path / 'model'}", "--data", str(dataset_config), "--report",
            str(report)]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{report} is a file, not a directory" in err
    assert report.read_text() == "keep me" and not (tmp_path / "cache").exists()
    with pytest.raises(ConfigError, match=rf"report directory {report / 'sub'}: {report} is a file"):
        evaluate_model(model, RunConfig.from_yaml(dataset_config).data, report / "sub")


def test_evaluate_checks_the_data_section_it_is_given(tmp_path, dataset_config):
    import audiokit as ak

    data = RunConfig.from_yaml(dataset_config, ["data.clip_seconds=.inf"]).data  # from YAML, never validated
    model = ak.create_model("efficientat_mn01.audioset", num_classes=3)
    with pytest.raises(ConfigError, match=r"data\.clip_seconds=inf is not a finite number"):
        evaluate_model(model, data, tmp_path / "report")
    assert not (tmp_path / "report").exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("name", ["/tmp/elsewhere", "..", "../sibling", "a/b", "a\\b", "."])
def test_run_name_cannot_leave_output_dir(tmp_path, config, capsys, name):
    message = _error(config, f"run_name={name}")
    assert message.startswith(f"run_name={name!r} must be a plain directory name inside output_dir"), message
    assert main(["finetune", str(config), "--set", f"run_name={name}"]) == 2
    assert "run_name" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists() and not (tmp_path / "sibling").exists()


# -- late failures leave no half-made run -----------------------------------------------------------------------------
def test_manifest_of_missing_files_fails_before_the_run_directory(tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label,split\ngone1.wav,a,train\ngone2.wav,b,val\n")
    path = _write(tmp_path, base_config(tmp_path, manifest))
    assert main(["finetune", str(path), "--quiet"]) == 2
    err = capsys.readouterr().err.splitlines()[-1]
    assert "split 'holdout' has 0 training and 0 validation clips; 2 of 2 clips could not be read" in err
    assert str(tmp_path / "gone1.wav") in err
    assert not (tmp_path / "runs").exists()


def test_folder_without_audio_and_unknown_model_fail_before_the_run_directory(tmp_path, capsys):
    for name in ("dog", "cat"):
        (tmp_path / "data" / name).mkdir(parents=True)
    data = base_config(tmp_path, tmp_path / "unused.csv")
    data["data"] = {"kind": "folder", "root": str(tmp_path / "data"), "num_workers": 0}
    path = _write(tmp_path, data)
    assert main(["finetune", str(path), "--quiet"]) == 2
    assert "holds no audio files" in capsys.readouterr().err
    write_manifest(tmp_path / "data2", classes=2, per_class=4)
    manifest = f"data.manifest={tmp_path / 'data2' / 'manifest.csv'}"
    overrides = ["--set", "data.kind=manifest", "--set", manifest, "--set", "model.name=mn01_typo"]
    assert main(["finetune", str(path), "--quiet", *overrides]) == 2
    assert "model.name: unknown model 'mn01_typo'" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_run_that_diverges_in_its_first_epoch_removes_the_directory_it_created(tmp_path):
    manifest = write_manifest(tmp_path, classes=3, per_class=4)
    # A legal but absurd learning rate: Adam's first step sends the weights to ~1e30 and the next loss is nan.
    cfg = RunConfig.from_dict(base_config(tmp_path, manifest, epochs=1, batch_size=3,
                                          optimizer={"name": "adam", "lr": 1e30})).validate()  # fmt: skip
    run = tmp_path / "runs" / "run"
    with pytest.raises(FloatingPointError, match="loss is nan at epoch 1"):
        finetune(cfg, run, progress=False)
    assert not run.exists()
    run.mkdir(parents=True)  # a directory that was there before the run is not the run's to remove
    with pytest.raises(FloatingPointError):
        finetune(cfg, run, progress=False)
    assert sorted(p.relative_to(run).as_posix() for p in run.rglob("*")) == [
        "config.yaml", "holdout", "holdout/metrics.jsonl"]  # fmt: skip


def test_clean_up_keeps_anything_resume_needs_or_that_the_run_did_not_write(tmp_path):
    def make(name: str, *extra: str) -> Path:
        run = tmp_path / name
        (run / "holdout").mkdir(parents=True)
        (run / "config.yaml").write_text("train: {}\n")
        (run / "holdout" / "metrics.jsonl").write_text("")
        for item in extra:
            (run / item).parent.mkdir(parents=True, exist_ok=True)
            (run / item).write_text("x")
        return run

    _remove_unstarted_run(make("bare"), ["holdout"])
    assert not (tmp_path / "bare").exists()
    kept = {
        "checkpoint": make("checkpoint", "holdout/last/trainer_state.pt"),
        "finished_epoch": make("finished_epoch", "holdout/metrics.jsonl"),  # an epoch's record: not empty
        "stranger": make("stranger", "notes.txt"),
    }
    for run in kept.values():
        _remove_unstarted_run(run, ["holdout"])
        assert (run / "config.yaml").is_file() and (run / "holdout" / "metrics.jsonl").is_file()


def test_divergence_and_a_study_directory_that_is_a_file_are_one_line_in_the_cli(tmp_path, capsys):
    manifest = write_manifest(tmp_path, classes=2, per_class=4)
    data = base_config(tmp_path, manifest, epochs=1, batch_size=2, max_steps_per_epoch=3)
    data["model"] = {"name": "bcresnet_1.speechcommands", "pretrained": False}
    path = _write(tmp_path, data)
    assert main(["finetune", str(path), "--quiet", "--set", "train.optimizer.lr=1e30"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("audiokit: error: loss is nan at epoch 1") and err.count("\n") == 1
    (tmp_path / "study").write_text("")
    argv = ["compare-activations", str(path), "--activations", "relu,gelu", "--output", str(tmp_path / "study")]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip().endswith(f"study directory {tmp_path / 'study'} is a file, not a directory")
    assert list((tmp_path / "runs").iterdir()) == []  # the diverged run removed its directory; the study wrote none
