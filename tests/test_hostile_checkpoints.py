"""Hostile and unlucky checkpoints: a saved directory whose config asks for huge or impossible models, weights that
hold NaN or inf, files that cannot be read. Each is refused with one line naming the file and the key, and a config
is refused before anything of the size it asks for is allocated."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import audiokit as ak
from audiokit import FrontendCfg
from audiokit._builder import architecture_arguments
from audiokit._weights import CheckpointMismatchError


def _one_line(err: BaseException) -> str:
    message = str(err)
    assert "\n" not in message, message
    return message


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> Path:
    """A tiny model written by save_pretrained, the source every hostile directory is derived from."""
    directory = tmp_path_factory.mktemp("saved") / "bcresnet"
    ak.create_model("bcresnet_1").save_pretrained(directory)
    return directory


def _variant(saved: Path, where: Path, edit) -> Path:
    """A copy of ``saved`` whose config.json went through ``edit(config)`` (the weights are the original ones)."""
    where.mkdir(parents=True, exist_ok=True)
    (where / "model.safetensors").write_bytes((saved / "model.safetensors").read_bytes())
    config = json.loads((saved / "config.json").read_text())
    edit(config)
    (where / "config.json").write_text(json.dumps(config))
    return where


# -- 1. configs that ask for huge or impossible models ---------------------------------------------------------------
def _set(*path_and_value):
    *path, value = path_and_value

    def edit(config):
        node = config
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


# name: (edit, file the message names, words it must contain). Sizes are what the unchecked build would allocate.
HOSTILE_CONFIGS = {
    "num_classes 2e7 (2.6 GB classifier)": (_set("pretrained_cfg", "num_classes", 20_000_000), "config.json",
                                          ["num_classes", "20000000"]),
    "num_classes 1e9 (128 GB classifier)": (_set("pretrained_cfg", "num_classes", 10**9), "config.json",
                                            ["num_classes", "1000000000"]),
    "head hidden 1e9 (128 GB hidden layer)": (_set("head", {"hidden": [10**9]}), "model.safetensors",
                                              ["classifier.5.layers.0.linear.weight"]),
    "num_classes in bounds, not the weights'": (_set("pretrained_cfg", "num_classes", 100_000), "model.safetensors",
                                                ["classifier.5.weight (12, 32) vs model (100000, 32)"]),
    "n_fft 2**30 (2 GB window, 2 PB mel matrix)": (_set("pretrained_cfg", "frontend", "n_fft", 2**30), "config.json",
                                                   ["frontend.n_fft", str(2**30)]),
    "n_mels 1e6": (_set("pretrained_cfg", "frontend", "n_mels", 10**6), "config.json", ["frontend.n_mels"]),
    "hop_length 0": (_set("pretrained_cfg", "frontend", "hop_length", 0), "config.json", ["frontend.hop_length"]),
    "sample_rate 0": (_set("pretrained_cfg", "frontend", "sample_rate", 0), "config.json", ["frontend.sample_rate"]),
    "sample_rate negative": (_set("pretrained_cfg", "frontend", "sample_rate", -16000), "config.json",
                             ["frontend.sample_rate", "-16000"]),
    "std 0 (NaN scores)": (_set("pretrained_cfg", "frontend", "std", 0.0), "config.json", ["frontend.std"]),
    "unknown model_kwargs": (_set("model_kwargs", {"tau": 1.0, "bogus": 3}), "config.json", ["bogus"]),
    "model_kwargs not an object": (_set("model_kwargs", [1, 2]), "config.json", ["model_kwargs"]),
    "unknown architecture in pretrained_cfg": (_set("pretrained_cfg", "architecture", "nope"), "config.json",
                                               ["pretrained_cfg.architecture", "nope"]),
    "head with a string width": (_set("head", {"hidden": ["64"]}), "config.json", ["head", "hidden"]),
    "output activation unknown": (_set("output_activation", "exp"), "config.json", ["output_activation"]),
}  # fmt: skip

# Run in one child process whose address space may grow by at most HEADROOM past what the imports took: every
# hostile config above asks for far more (the smallest, n_mels 1e6, a 2 GB mel matrix), the good one fits easily.
HEADROOM = 1536 << 20
_CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    import audiokit as ak
    import audiokit.models.bcresnet, torchaudio.functional  # what any load imports, before the limit
    vm = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (vm + int(sys.argv[2]), resource.RLIM_INFINITY))
    results = {}
    for name, directory in json.loads(sys.argv[1]).items():
        start = time.perf_counter()
        try:
            ak.create_model("local-dir:" + directory)
            outcome = ("loaded", "")
        except BaseException as err:
            outcome = (type(err).__name__, str(err))
        results[name] = (*outcome, time.perf_counter() - start)
    print(json.dumps(results))
    """
)


@pytest.fixture(scope="module")
def hostile_outcomes(saved, tmp_path_factory) -> dict[str, tuple[str, str, float]]:
    root = tmp_path_factory.mktemp("hostile")
    dirs = {"untouched": str(_variant(saved, root / "untouched", lambda config: None))}
    for i, (name, (edit, _, _)) in enumerate(HOSTILE_CONFIGS.items()):
        dirs[name] = str(_variant(saved, root / f"case{i}", edit))
    done = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(dirs), str(HEADROOM)],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    outcomes = json.loads(done.stdout.splitlines()[-1])
    return {name: (kind, message.replace(dirs[name], "DIR"), seconds) for name, (kind, message, seconds) in
            outcomes.items()}  # fmt: skip


def test_the_untouched_directory_loads_under_the_memory_limit(hostile_outcomes):
    assert hostile_outcomes["untouched"][0] == "loaded", hostile_outcomes["untouched"]


@pytest.mark.parametrize("name", list(HOSTILE_CONFIGS))
def test_a_hostile_config_fails_fast_in_one_line_naming_file_and_key(hostile_outcomes, name):
    kind, message, seconds = hostile_outcomes[name]
    _, file, words = HOSTILE_CONFIGS[name]
    # A MemoryError or RuntimeError ("can't allocate memory") here means something was built before the check.
    assert kind in ("ValueError", "CheckpointMismatchError", "UnknownModelError"), (kind, message)
    assert "\n" not in message and message.startswith(f"DIR/{file}"), message
    for word in words:
        assert word in message, message
    assert seconds < 10, seconds


def test_every_registered_configuration_passes_validation():
    for name in ak.list_models():
        cfg = ak.get_pretrained_cfg(name)
        again = ak.PretrainedCfg.from_dict(cfg.to_dict())
        assert again.frontend == cfg.frontend and again.num_classes == cfg.num_classes


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"n_fft": 1 << 17}, "frontend.n_fft"),
        ({"n_fft": 8192, "stft": "dft_conv"}, "frontend.n_fft"),  # numpy kernels of 8192 x 4097 complex128
        ({"win_length": 2048}, "win_length"),
        ({"hop_length": 1000, "win_length": 800}, "frontend.hop_length"),
        ({"n_mels": 0}, "frontend.n_mels"),
        ({"sample_rate": 16000.5}, "frontend.sample_rate"),
        ({"sample_rate": True}, "frontend.sample_rate"),
        ({"f_max": 20000.0, "sample_rate": 32000}, "frontend.f_max"),
        ({"f_min": 9000.0, "f_max": 8000.0}, "frontend.f_min"),
        ({"f_min": math.nan}, "frontend.f_min"),
        ({"mean": math.inf}, "frontend.mean"),
        ({"std": -1.0}, "frontend.std"),
        ({"std": math.nan}, "frontend.std"),
        ({"amin": 0.0}, "frontend.amin"),
        ({"preemphasis": 1.5}, "frontend.preemphasis"),
        ({"center": "yes"}, "frontend.center"),
        ({"window": "hamming"}, "frontend.window"),
        ({"pad_mode": "mirror"}, "frontend.pad_mode"),
        ({"max_frames": 0}, "frontend.max_frames"),
    ],
)
def test_frontend_cfg_bounds(changes, key):
    with pytest.raises(ValueError) as info:
        FrontendCfg(**{**FrontendCfg().to_dict(), **changes})
    assert key in _one_line(info.value)


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"num_classes": -1}, "num_classes"),
        ({"num_classes": 100_001}, "num_classes"),
        ({"num_classes": 5.0}, "num_classes"),
        ({"clip_seconds": 0.0}, "clip_seconds"),
        ({"clip_seconds": 1e-9}, "clip_seconds"),  # a tagging window of no samples
        ({"clip_seconds": math.inf}, "clip_seconds"),
        ({"task": "regression"}, "task"),
        ({"label_set": "../../secrets"}, "label_set"),
        ({"classifier": ""}, "classifier"),
    ],
)
def test_pretrained_cfg_bounds(changes, key):
    cfg = ak.get_pretrained_cfg("bcresnet_1")
    with pytest.raises(ValueError) as info:
        cfg.replace(**changes)
    assert key in _one_line(info.value)


def test_create_model_refuses_an_argument_the_architecture_does_not_take():
    # PANNs pass **kwargs through Cnn6 -> _CnnStack -> PannsClassifier: the whole chain is read.
    assert architecture_arguments("panns_cnn6") == {"drop_rate", "block_drop_rate"}
    with pytest.raises(ValueError) as info:
        ak.create_model("panns_cnn6", dropout=0.1)
    message = _one_line(info.value)
    assert "panns_cnn6 takes no argument(s) dropout" in message and "block_drop_rate" in message
    # An argument the entrypoint sets itself is refused by name too.
    with pytest.raises(ValueError, match="bcresnet_1 sets tau itself"):
        ak.create_model("bcresnet_1", tau=2.0)
    assert ak.create_model("efficientat_mn01", drop_rate=0.1).classifier[4].p == 0.1


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        # Rejected before building: transformers allocates masked_spec_embed (hidden_size floats) for real even on
        # the meta device, 4.8 GB here.
        ({"hidden_size": 12 * 10**8, "num_heads": 12}, ["hidden_size=1200000000 exceeds 65536"]),
        ({"conv_dim": [512] * 6 + [10**9]}, ["conv_dim=", "exceeds 65536"]),
        # Within the per-argument bound, but a million Python modules: stopped while sizing the blueprint.
        ({"num_layers": 50_000}, ["over 100000 tensor operations"]),
    ],
)
def test_architecture_arguments_in_a_saved_config_are_bounded(tmp_path, kwargs, words):
    # No weights are needed: the config is refused before the weights file is opened.
    cfg = ak.get_pretrained_cfg("wav2vec2_base.superb_ks")
    config = {"architecture": cfg.architecture, "model_kwargs": {**cfg.model_kwargs, **kwargs},
              "pretrained_cfg": cfg.to_dict()}  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(config))
    save_file({"x": torch.zeros(1)}, tmp_path / "model.safetensors")
    with pytest.raises(ValueError) as info:
        ak.create_model(f"local-dir:{tmp_path}")
    message = _one_line(info.value)
    assert message.startswith(f"{tmp_path / 'config.json'}: cannot build wav2vec2_base"), message
    for word in words:
        assert word in message, message
    assert torch.is_grad_enabled(), "the refused build left autograd switched off"


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"\xff\xfe{not text", ["not UTF-8"]),
        (b"[1, 2, 3]", ["expected a JSON object, got list"]),
        (b'"a string"', ["expected a JSON object, got str"]),
        (b"{'single': 'quotes'}", ["not JSON"]),
        (b"[" * 100_000, ["not JSON"]),
        (b'{"architecture": "bcresnet_1"}', ["no 'pretrained_cfg'"]),
        (b'{"architecture": "bcresnet_1", "pretrained_cfg": [1]}', ["pretrained_cfg", "JSON object"]),
    ],
)
def test_a_config_that_is_not_a_json_object_is_one_line_naming_the_file(saved, tmp_path, content, words):
    directory = _variant(saved, tmp_path / "d", lambda config: None)
    (directory / "config.json").write_bytes(content)
    with pytest.raises(ValueError) as info:
        ak.create_model(f"local-dir:{directory}")
    message = _one_line(info.value)
    assert message.startswith(f"{directory / 'config.json'}: invalid audiokit config"), message
    for word in words:
        assert word in message, message


def test_json_nan_in_the_frontend_is_refused(saved, tmp_path):
    directory = _variant(saved, tmp_path / "d", lambda config: None)
    path = directory / "config.json"
    path.write_text(path.read_text().replace('"mean": 0.0', '"mean": NaN'))
    with pytest.raises(ValueError, match=r"frontend\.mean must be a finite number, got nan"):
        ak.create_model(f"local-dir:{directory}")


# -- 2. non-finite weights -------------------------------------------------------------------------------------------
def _poison(state: dict[str, torch.Tensor], keys: list[str]) -> dict[str, torch.Tensor]:
    state = {k: v.clone() for k, v in state.items()}
    for i, key in enumerate(keys):
        state[key].view(-1)[i % state[key].numel()] = math.nan if i % 2 == 0 else -math.inf
    return state


def test_nan_and_inf_in_a_saved_directory_are_refused(saved, tmp_path):
    directory = _variant(saved, tmp_path / "d", lambda config: None)
    weights = directory / "model.safetensors"
    save_file(_poison(load_file(weights), ["cnn_head.0.weight", "classifier.5.bias"]), weights)
    with pytest.raises(CheckpointMismatchError) as info:
        ak.create_model(f"local-dir:{directory}")
    message = _one_line(info.value)
    assert message.startswith(f"{weights}: 2 tensor(s) hold NaN or inf: ")
    assert "cnn_head.0.weight" in message and "classifier.5.bias" in message


def test_nan_in_a_safetensors_checkpoint_is_refused_and_many_are_counted(tmp_path):
    state = ak.create_model("bcresnet_1").state_dict()
    floating = [k for k, v in state.items() if v.is_floating_point()]
    path = tmp_path / "weights.safetensors"
    save_file(_poison(state, floating[:9]), path)
    with pytest.raises(CheckpointMismatchError) as info:
        ak.create_model("bcresnet_1", checkpoint_path=path)
    message = _one_line(info.value)
    assert message.startswith(f"{path}: 9 tensor(s) hold NaN or inf: ") and ", ... (9 in all); " in message
    shown = message.split("inf: ")[1].split(", ...")[0].split(", ")
    assert len(shown) == 5 and set(shown) <= set(floating[:9]), shown


def test_inf_in_an_upstream_layout_pt_checkpoint_is_refused(tmp_path):
    # The reference code's layout: DataParallel prefix, the final layer stored as a 1x1 convolution.
    state = ak.create_model("bcresnet_1").state_dict()
    state["classifier.5.weight"] = state["classifier.5.weight"][:, :, None, None]
    upstream = {f"module.{k}": v for k, v in state.items()}
    good, bad = tmp_path / "good.pt", tmp_path / "bad.pt"
    torch.save(upstream, good)
    torch.save(_poison(upstream, ["module.classifier.5.weight"]), bad)
    ak.create_model("bcresnet_1", checkpoint_path=good)  # the layout itself is accepted
    with pytest.raises(CheckpointMismatchError) as info:
        ak.create_model("bcresnet_1", checkpoint_path=bad)
    assert _one_line(info.value) == (
        f"{bad}: 1 tensor(s) hold NaN or inf: classifier.5.weight; the weights are damaged (or come from a diverged "
        "training run) and would give NaN scores"
    )


# -- 3. unreadable files ---------------------------------------------------------------------------------------------
# Run in a fresh process: root reads files whatever their mode, so as root the process is started by setpriv without
# the capabilities that let it (a fork that becomes another user cannot be used: torch's thread pool hangs in it).
_UNREADABLE_CHILD = textwrap.dedent(
    """
    import json, os, sys
    import audiokit as ak
    from audiokit._hub import load_state_dict_file
    results = {}
    for name, (call, path, locked) in json.loads(sys.argv[1]).items():
        if os.access(locked, os.R_OK):
            results[name] = "readable"
            continue
        try:
            if call == "load":
                load_state_dict_file(path)
            elif call == "checkpoint":
                ak.create_model("bcresnet_1", checkpoint_path=path)
            else:
                ak.create_model("local-dir:" + path)
            results[name] = "no error"
        except BaseException as err:
            results[name] = f"{type(err).__name__}: {err}"
    print(json.dumps(results))
    """
)
_WITHOUT_DAC = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--inh-caps", "-all"]


@pytest.fixture(scope="module")
def unreadable(saved, tmp_path_factory) -> tuple[dict[str, str], dict[str, Path]]:
    root = tmp_path_factory.mktemp("unreadable")
    state = ak.create_model("bcresnet_1").state_dict()
    save_file(state, root / "weights.safetensors")
    torch.save(state, root / "weights.pt")
    weights_locked = _variant(saved, root / "weights_locked", lambda config: None)
    config_locked = _variant(saved, root / "config_locked", lambda config: None)
    locked = {
        "safetensors": root / "weights.safetensors",
        "pt": root / "weights.pt",
        "dir weights": weights_locked / "model.safetensors",
        "dir config": config_locked / "config.json",
    }
    cases = {
        "load safetensors": ("load", locked["safetensors"], locked["safetensors"]),
        "load pt": ("load", locked["pt"], locked["pt"]),
        "checkpoint safetensors": ("checkpoint", locked["safetensors"], locked["safetensors"]),
        "checkpoint pt": ("checkpoint", locked["pt"], locked["pt"]),
        "dir weights": ("dir", weights_locked, locked["dir weights"]),
        "dir config": ("dir", config_locked, locked["dir config"]),
    }
    command = [sys.executable, "-c", _UNREADABLE_CHILD, json.dumps({k: [c, str(p), str(q)] for k, (c, p, q) in
                                                                   cases.items()})]  # fmt: skip
    if os.geteuid() == 0:
        if subprocess.run([*_WITHOUT_DAC, "true"], capture_output=True).returncode != 0:
            pytest.skip("running as root, where chmod 000 does not deny reading, and setpriv cannot drop that")
        command = [*_WITHOUT_DAC, *command]
    for path in locked.values():
        path.chmod(0)
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    finally:
        for path in locked.values():
            path.chmod(0o644)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.splitlines()[-1])
    if "readable" in results.values():
        pytest.skip("this user reads files whatever their mode, so chmod 000 cannot make one unreadable")
    return results, locked


@pytest.mark.parametrize("case", ["load safetensors", "load pt", "checkpoint safetensors", "checkpoint pt"])
def test_an_unreadable_checkpoint_says_permission_denied(unreadable, case):
    results, locked = unreadable
    path = locked[case.split()[1]]
    assert results[case] == f"CheckpointLoadError: Cannot load checkpoint {path}: permission denied"


def test_an_unreadable_file_in_a_saved_directory_says_permission_denied(unreadable):
    results, locked = unreadable
    assert results["dir weights"] == (
        f"CheckpointLoadError: Cannot load checkpoint {locked['dir weights']}: permission denied"
    )
    assert results["dir config"] == f"CheckpointLoadError: Cannot load {locked['dir config']}: permission denied"


# -- the CLI ---------------------------------------------------------------------------------------------------------
def test_the_cli_prints_one_line_and_exits_2(saved, tmp_path, make_wav, capsys):
    from audiokit.cli import main

    wav = make_wav("a.wav", 1.0)
    hostile = _variant(saved, tmp_path / "huge", _set("pretrained_cfg", "num_classes", 10**9))
    poisoned = _variant(saved, tmp_path / "nan", lambda config: None)
    save_file(_poison(load_file(poisoned / "model.safetensors"), ["cnn_head.0.weight"]), poisoned / "model.safetensors")
    for directory, words in ((hostile, "num_classes must be"), (poisoned, "hold NaN or inf")):
        code = main(["tag", str(wav), "--model", f"local-dir:{directory}"])
        out, err = capsys.readouterr()
        assert code == 2 and out == "", (code, out, err)
        assert err.count("\n") == 1 and err.startswith(f"audiokit: error: {directory}/") and words in err, err
