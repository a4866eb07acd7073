"""``hf-hub:ORG/NAME[@REVISION]`` names: a Hugging Face Hub repository, resolved to a snapshot directory.

huggingface_hub does all of the work: its cache (``HF_HOME`` / ``HF_HUB_CACHE``), offline mode, revisions (a
branch, a tag or a commit) and tokens (``HF_TOKEN`` or ``hf auth login``). audiokit keeps no copy of its own: the
snapshot directory inside that cache is then loaded exactly as a ``local-dir:`` is.

Only what a model needs is fetched: its ``config.json``, the feature extractor's file, tokenizer files where the
repository has them, and one weights file (``model.safetensors``, else ``pytorch_model.bin``; never both).
"""

from __future__ import annotations

import logging
from pathlib import Path

from ._hub import CheckpointLoadError, WeightsUnavailableError, is_offline

__all__ = ["HF_HUB_PREFIX", "HubModelUnavailableError", "hub_snapshot", "parse_hub_name"]

_logger = logging.getLogger(__name__)

HF_HUB_PREFIX = "hf-hub:"
DEFAULT_REVISION = "main"

# Small files a model directory may hold besides its weights. The shard indexes are fetched so that a sharded
# repository is reported as such rather than as one without weights.
_DESCRIPTION_FILES = [
    "config.json",
    "preprocessor_config.json",
    "feature_extractor_config.json",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "model.safetensors.index.json",
    "pytorch_model.bin.index.json",
]
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class HubModelUnavailableError(WeightsUnavailableError):
    """An ``hf-hub:`` repository that cannot be obtained (not cached while offline, unknown, gated, no network)."""


def parse_hub_name(name: str) -> tuple[str, str | None]:
    """``hf-hub:ORG/NAME[@REVISION]`` -> (repository id, revision or None for the default branch)."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    spec = name[len(HF_HUB_PREFIX) :] if name.startswith(HF_HUB_PREFIX) else name
    repo_id, at, revision = spec.partition("@")  # repository ids cannot hold '@'; branch names may hold '/'
    if at and not revision:
        raise ValueError(f"{name}: empty revision after '@' (hf-hub:ORG/NAME@REVISION)")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"{name}: not a Hugging Face repository id ({' '.join(str(err).split())})") from None
    return repo_id, revision or None


def _offline() -> bool:
    from huggingface_hub import constants

    # huggingface_hub reads HF_HUB_OFFLINE once, when it is imported; the environment is read again here so that
    # setting it later (or AUDIOKIT_OFFLINE) still keeps every call off the network.
    return bool(constants.HF_HUB_OFFLINE) or is_offline()


def _cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def _unavailable(label: str, repo_id: str, revision: str, err: Exception, offline: bool) -> Exception:
    """One line saying why ``label`` could not be obtained, and what to do about it."""
    from huggingface_hub import errors

    incomplete = getattr(errors, "IncompleteSnapshotError", None)  # huggingface_hub >= 1.x
    fetch = f"`hf download {repo_id}" + (f" --revision {revision}`" if revision != DEFAULT_REVISION else "`")
    if incomplete is not None and isinstance(err, incomplete):
        return HubModelUnavailableError(
            f"{label}: the cached snapshot in {_cache_dir()} is incomplete and the Hub cannot be reached; "
            f"complete it online ({fetch})"
        )
    if isinstance(err, errors.LocalEntryNotFoundError):
        if offline:
            return HubModelUnavailableError(
                f"{label}: revision {revision!r} of {repo_id} is not in the Hugging Face cache ({_cache_dir()}) and "
                f"offline mode is on (HF_HUB_OFFLINE/AUDIOKIT_OFFLINE); fetch it once online ({fetch})"
            )
        return HubModelUnavailableError(
            f"{label}: the Hugging Face Hub cannot be reached and revision {revision!r} of {repo_id} is not in the "
            f"cache ({_cache_dir()})"
        )
    if isinstance(err, errors.GatedRepoError):
        return HubModelUnavailableError(
            f"{label}: {repo_id} is gated; accept its terms on huggingface.co and log in (`hf auth login` or HF_TOKEN)"
        )
    if isinstance(err, errors.RepositoryNotFoundError):
        return HubModelUnavailableError(
            f"{label}: no repository {repo_id} on the Hugging Face Hub (or it is private: log in with "
            "`hf auth login` or set HF_TOKEN)"
        )
    if isinstance(err, errors.RevisionNotFoundError):
        return HubModelUnavailableError(f"{label}: {repo_id} has no revision {revision!r} (branch, tag or commit)")
    return HubModelUnavailableError(f"{label}: {type(err).__name__}: {' '.join(str(err).split())}")


def hub_snapshot(name: str) -> Path:
    """The snapshot directory of ``hf-hub:ORG/NAME[@REVISION]`` in huggingface_hub's cache, with the files a model
    needs (downloaded unless cached, or offline). Every failure is one line naming the repository and revision."""
    from huggingface_hub import errors, snapshot_download

    repo_id, revision = parse_hub_name(name)
    shown_revision = revision or DEFAULT_REVISION
    label = f"{HF_HUB_PREFIX}{repo_id}@{shown_revision}"
    offline = _offline()

    def fetch(patterns: list[str], at: str | None) -> Path:
        try:
            return Path(snapshot_download(repo_id, revision=at, allow_patterns=patterns, local_files_only=offline))
        except (errors.HfHubHTTPError, errors.LocalEntryNotFoundError, OSError, ValueError) as err:
            raise _unavailable(label, repo_id, shown_revision, err, offline) from None

    snapshot = fetch([*_DESCRIPTION_FILES, _WEIGHT_FILES[0]], revision)
    if not (snapshot / _WEIGHT_FILES[0]).is_file():
        # The pickle only where there is no safetensors file; the snapshot's name is the commit just resolved, so
        # this second look needs no second resolution of the revision.
        snapshot = fetch([_WEIGHT_FILES[1]], snapshot.name)
    where = "the cached snapshot of" if offline else "the repository"
    if not (snapshot / "config.json").is_file():
        raise CheckpointLoadError(
            f"{label}: {where} {repo_id} has no config.json, so what to build is unknown ({snapshot})"
        )
    if not any((snapshot / w).is_file() for w in _WEIGHT_FILES):
        if any((snapshot / f"{w}.index.json").is_file() for w in _WEIGHT_FILES):
            raise CheckpointLoadError(
                f"{label}: {repo_id} is sharded (*.index.json); sharded checkpoints are not supported"
            )
        raise CheckpointLoadError(
            f"{label}: {where} {repo_id} has a config.json but no weights ({' or '.join(_WEIGHT_FILES)})"
            + ("; fetch them once online" if offline else "")
        )
    _logger.debug("%s: snapshot %s", label, snapshot)
    return snapshot
