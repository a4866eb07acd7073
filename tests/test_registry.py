"""Registry look-ups, names, and the pretrained configurations' metadata."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import audiokit as ak
from audiokit._pretrained import load_label_set


def test_list_models_filters_by_full_name_or_architecture():
    assert ak.list_models("panns_cnn14") == ["panns_cnn14.audioset"]
    assert "efficientat_mn10.audioset" in ak.list_models("efficientat_*")
    assert all(n.startswith("efficientat_dymn") for n in ak.list_models("efficientat_dymn*"))
    assert not set(ak.list_models("efficientat_*", exclude="*dymn*")) & set(ak.list_models("*dymn*"))
    assert ak.list_models(["panns_cnn6", "panns_cnn10"]) == ["panns_cnn10.audioset", "panns_cnn6.audioset"]


def test_pretrained_filter_keeps_downloadable_weights():
    names = ak.list_models(pretrained=True)
    assert names and all(ak.get_pretrained_cfg(n).url for n in names)


def test_default_tag_and_unknown_names():
    assert ak.get_pretrained_cfg("efficientat_mn10").name == "efficientat_mn10.audioset"
    assert ak.is_model("panns_cnn14") and ak.is_model("panns_cnn14.audioset") and not ak.is_model("panns_cnn15")
    with pytest.raises(ak.UnknownModelError, match=r"did you mean.*panns_cnn14"):
        ak.create_model("panns_cnn41")
    with pytest.raises(ak.UnknownModelError, match=r"unknown model .efficientat_mn10\.speech."):
        ak.get_pretrained_cfg("efficientat_mn10.speech")


@pytest.mark.parametrize("name", ak.list_models())
def test_every_cfg_is_complete(name):
    cfg = ak.get_pretrained_cfg(name)
    assert cfg.task in ("multilabel", "multiclass")
    assert cfg.num_params and cfg.license and cfg.paper
    # Published weights come with their published result; architecture-only entries (no weights) may have none.
    assert cfg.metrics or not cfg.has_weights
    assert cfg.url is None or cfg.url.startswith("https://")
    assert cfg.sha256 is None or len(cfg.sha256) == 64
    labels = cfg.get_label_names()
    assert labels is not None and len(labels) == cfg.num_classes


def test_audioset_labels_are_in_output_order():
    labels = load_label_set("audioset")
    assert len(labels) == 527 and labels[0] == "Speech" and labels[526] == "Field recording"
    assert labels[137] == "Music"


def test_create_model_rejects_wrong_label_count():
    with pytest.raises(ValueError, match="2 label names given for 3 classes"):
        ak.create_model("efficientat_mn01", num_classes=3, label_names=["a", "b"])


def _imported_modules(path: Path) -> set[str]:
    """Every module a source file imports, at any depth (function-level imports included), as absolute names."""
    package = "audiokit." + ".".join(path.relative_to(Path(ak.__file__).parent).with_suffix("").parts[:-1])
    package = package.rstrip(".")
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join([*base, node.module] if node.module else base)
            names.add(module)
            names |= {f"{module}.{alias.name}" for alias in node.names}
    return names


def test_model_families_sit_below_the_builder():
    # The builder imports the model package; a family (or the weight fitting they share) importing the builder back,
    # even inside a function, is the circle that made imports order-dependent.
    root = Path(ak.__file__).parent
    lower = [*sorted((root / "models").glob("*.py")), root / "_weights.py"]
    offenders = {p.name for p in lower if "audiokit._builder" in _imported_modules(p)}
    assert not offenders, offenders
    assert "audiokit._weights.load_weights" in _imported_modules(root / "models" / "sat.py")  # the scan sees them
