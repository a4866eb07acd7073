"""Model registry: architecture builders and the pretrained configurations (tags) that go with them.

Names are ``architecture.tag`` (``efficientat_mn10.audioset``); the tag names the training data. Registration does
no I/O: label files and weights are read only when a model is built.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Iterable
from typing import Any

from ._pretrained import PretrainedCfg

_model_entrypoints: dict[str, Callable[..., Any]] = {}
_model_to_module: dict[str, str] = {}
_pretrained_cfgs: dict[str, PretrainedCfg] = {}  # "arch.tag" -> cfg, in registration order
_default_tag: dict[str, str] = {}  # arch -> first registered tag


class UnknownModelError(ValueError):
    """Raised for a model name that is not registered; the message suggests close names."""


def register_model(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Register a builder ``fn(pretrained_cfg: PretrainedCfg, **kwargs) -> nn.Module`` under its function name."""
    name = fn.__name__
    if name in _model_entrypoints:
        raise ValueError(f"model architecture {name!r} is registered twice")
    _model_entrypoints[name] = fn
    _model_to_module[name] = fn.__module__.rsplit(".", 1)[-1]
    return fn


def register_pretrained_cfgs(cfgs: Iterable[PretrainedCfg]) -> None:
    for cfg in cfgs:
        if cfg.name in _pretrained_cfgs:
            raise ValueError(f"pretrained config {cfg.name!r} is registered twice")
        _pretrained_cfgs[cfg.name] = cfg
        _default_tag.setdefault(cfg.architecture, cfg.tag)


def split_model_name_tag(name: str) -> tuple[str, str | None]:
    arch, _, tag = name.partition(".")
    return arch, (tag or None)


def _all_names() -> list[str]:
    return list(_pretrained_cfgs)


def list_models(
    filter: str | Iterable[str] = "",
    pretrained: bool = False,
    exclude: str | Iterable[str] = "",
) -> list[str]:
    """Registered ``architecture.tag`` names matching shell-style wildcards, sorted.

    A pattern matches either the full name or the architecture alone, so ``"panns_cnn14"`` and ``"panns_*"`` both
    find ``panns_cnn14.audioset``. ``pretrained=True`` keeps only names whose weights can be downloaded.
    """
    includes = [filter] if isinstance(filter, str) else list(filter)
    excludes = [exclude] if isinstance(exclude, str) else list(exclude)

    def matches(name: str, patterns: list[str]) -> bool:
        arch = split_model_name_tag(name)[0]
        return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(arch, p) for p in patterns if p)

    names = _all_names()
    if any(includes):
        names = [n for n in names if matches(n, includes)]
    if any(excludes):
        names = [n for n in names if not matches(n, excludes)]
    if pretrained:
        names = [n for n in names if _pretrained_cfgs[n].has_weights]
    return sorted(names)


def is_model(name: str) -> bool:
    arch, tag = split_model_name_tag(name)
    if arch not in _model_entrypoints:
        return False
    return tag is None or f"{arch}.{tag}" in _pretrained_cfgs


def resolve_model_name(name: str) -> str:
    """Full ``architecture.tag`` name for ``name`` (the default tag when none is given), or UnknownModelError."""
    arch, tag = split_model_name_tag(name)
    if arch in _model_entrypoints:
        full = f"{arch}.{tag or _default_tag.get(arch, '')}"
        if full in _pretrained_cfgs:
            return full
    close = difflib.get_close_matches(name, _all_names() + list(_model_entrypoints), n=5, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise UnknownModelError(
        f"unknown model {name!r}{hint} (`audiokit models` or audiokit.list_models() lists all {len(_all_names())})"
    )


def get_pretrained_cfg(name: str) -> PretrainedCfg:
    """The configuration registered for ``architecture.tag`` (or the architecture's default tag)."""
    return _pretrained_cfgs[resolve_model_name(name)]


def model_entrypoint(architecture: str) -> Callable[..., Any]:
    return _model_entrypoints[architecture]


def get_model_family(architecture: str) -> str:
    """The module (family) that defines an architecture, e.g. ``"panns"``."""
    return _model_to_module[architecture]
