"""Download, cache and safely load pretrained checkpoints.

Everything that touches the network or reads a checkpoint file goes through this module, so that the
policies live in one place:

* **Cache location** is resolved from the environment at call time (``AUDIOKIT_HOME``, then
  ``XDG_CACHE_HOME/audiokit``, then ``~/.cache/audiokit``); importing this module does no I/O.
* **Downloads** go to ``<dest>.part`` and are moved into place with an atomic :func:`os.replace` only after the
  size and (optionally) the SHA-256 have been checked, so a crash never leaves a half-written file under the
  final name. An existing ``.part`` is resumed with an HTTP ``Range`` request.
* **Offline mode** (``AUDIOKIT_OFFLINE`` / ``HF_HUB_OFFLINE``) never touches the network.
* **Loading** uses ``safetensors`` or ``torch.load(..., weights_only=True)``, never an unrestricted unpickler:
  a checkpoint is data, and a pickle that wants to build arbitrary objects is refused rather than executed.

Only the standard library (``urllib.request``) is used for HTTP so that no extra dependency is needed.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import logging
import os
import pathlib
import pickletools
import posixpath
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from typing import IO, Any

__all__ = [
    "CheckpointLoadError",
    "ChecksumError",
    "WeightsUnavailableError",
    "cached_file_path",
    "download_file",
    "file_digest",
    "get_cache_dir",
    "get_checkpoint_dir",
    "is_cached",
    "is_offline",
    "load_state_dict_file",
    "pinned_digest_path",
    "read_pinned_digest",
    "read_safetensors_shapes",
    "resolve_weights",
    "sha256_file",
]

logger = logging.getLogger(__name__)

_CHUNK_SIZE = 1 << 20  # 1 MiB, for both hashing and downloading.
_TRUTHY = frozenset({"1", "true", "yes", "on"})
_USER_AGENT = "audiokit (python-urllib)"
# Base delay between retries; doubled per consecutive failure and capped. Module-level so tests can set it to 0.
_RETRY_BACKOFF_S = 0.5
_RETRY_BACKOFF_MAX_S = 10.0
# HTTP statuses worth retrying: the server or a proxy is temporarily unhappy, the resource itself may be fine.
_RETRYABLE_HTTP_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
# Errors raised by urllib/http.client/socket for problems that a new attempt can plausibly fix.
_TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    urllib.error.URLError,
    http.client.HTTPException,  # includes IncompleteRead and RemoteDisconnected
    ConnectionError,  # includes ConnectionResetError
    TimeoutError,  # socket.timeout is an alias since Python 3.10
)
_CONTENT_RANGE_RE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.IGNORECASE)
_UNSATISFIED_RANGE_RE = re.compile(r"^\s*bytes\s+\*/(\d+)\s*$", re.IGNORECASE)


# --------------------------------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------------------------------


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be obtained (offline and not cached, network failure, HTTP error, ...)."""


class ChecksumError(WeightsUnavailableError):
    """A downloaded or cached file does not have the expected SHA-256 digest."""


class CheckpointLoadError(ValueError):
    """A file exists but is not a checkpoint that can be (safely) loaded."""


def _advice() -> str:
    return (
        "To use a local copy of the weights instead, pass `checkpoint_path=` (Python) or `--checkpoint-path FILE` "
        "(CLI); "
        "if offline mode is enabled and you want to download, unset AUDIOKIT_OFFLINE (and HF_HUB_OFFLINE)."
    )


def _unavailable_message(url: str, path: pathlib.Path, reason: str) -> str:
    return f"Could not obtain weights from {url} (cache path: {path}): {reason}. {_advice()}"


def _checksum_message(
    path: pathlib.Path, expected: str, actual: str, url: str | None = None, algorithm: str = "sha256"
) -> str:
    source = f" (downloaded from {url})" if url else ""
    return f"{_DIGEST_NAMES[algorithm]} mismatch for {path}{source}: expected {expected}, got {actual}."


# --------------------------------------------------------------------------------------------------------------
# Cache layout and environment
# --------------------------------------------------------------------------------------------------------------


def get_cache_dir() -> pathlib.Path:
    """Return the audiokit cache directory (not created).

    Precedence: ``$AUDIOKIT_HOME``, then ``$XDG_CACHE_HOME/audiokit``, then ``~/.cache/audiokit``. The environment is
    read on every call so that tests and long-running processes can change it. Empty values are ignored, and so is
    a relative ``XDG_CACHE_HOME``, which the XDG Base Directory specification says must be treated as unset.
    """
    home = os.environ.get("AUDIOKIT_HOME", "").strip()
    if home:
        return pathlib.Path(home).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "").strip()
    if xdg and os.path.isabs(os.path.expanduser(xdg)):
        return pathlib.Path(xdg).expanduser() / "audiokit"
    return pathlib.Path.home() / ".cache" / "audiokit"


def get_checkpoint_dir() -> pathlib.Path:
    """Return the directory holding downloaded checkpoints (not created)."""
    return get_cache_dir() / "checkpoints"


def is_offline() -> bool:
    """Whether network access is disabled via ``AUDIOKIT_OFFLINE`` or ``HF_HUB_OFFLINE`` (1/true/yes/on)."""
    return any(os.environ.get(var, "").strip().lower() in _TRUTHY for var in ("AUDIOKIT_OFFLINE", "HF_HUB_OFFLINE"))


def _filename_from_url(url: str) -> str:
    # urlsplit separates the query (?download=1) and fragment; unquote turns %20 etc. back into characters.
    name = urllib.parse.unquote(posixpath.basename(urllib.parse.urlsplit(url).path))
    if not name:
        raise ValueError(f"Cannot derive a file name from URL {url!r}; pass filename= explicitly.")
    return name


def cached_file_path(url: str, filename: str | None = None) -> pathlib.Path:
    """Return where the file downloaded from ``url`` is stored in the checkpoint directory.

    The name defaults to the basename of the URL path. Files are keyed by name only, so two URLs with the same
    basename (e.g. several ``.../pytorch_model.bin``) must be given distinct ``filename`` values by the caller.
    """
    name = filename if filename is not None else _filename_from_url(url)
    # The name is joined onto the cache dir; refuse anything that could escape it (e.g. "%2F..%2F" in a URL).
    if name in ("", ".", "..") or "/" in name or "\\" in name or "\x00" in name:
        raise ValueError(f"Invalid checkpoint file name {name!r} (from URL {url!r}).")
    return get_checkpoint_dir() / name


def is_cached(url: str, filename: str | None = None) -> bool:
    """Whether the file for ``url`` is present in the cache (the checksum is not verified here)."""
    return cached_file_path(url, filename).is_file()


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Return the hex SHA-256 digest of a file, read in 1 MiB chunks so large checkpoints use constant memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def _normalize_sha256(sha256: str | None) -> str | None:
    return _normalize_digest(sha256, "sha256")


_DIGEST_LENGTHS = {"sha256": 64, "md5": 32}
_DIGEST_NAMES = {"sha256": "SHA-256", "md5": "MD5"}


def _normalize_digest(digest: str | None, algorithm: str) -> str | None:
    if digest is None:
        return None
    value = digest.strip().lower().removeprefix(f"{algorithm}:")
    if not re.fullmatch(rf"[0-9a-f]{{{_DIGEST_LENGTHS[algorithm]}}}", value):
        raise ValueError(
            f"Invalid {_DIGEST_NAMES[algorithm]} digest {digest!r}: expected {_DIGEST_LENGTHS[algorithm]} hexadecimal "
            "characters."
        )
    return value


def file_digest(path: str | os.PathLike[str], algorithm: str) -> str:
    """Hex digest of a file (``sha256`` or ``md5``), read in 1 MiB chunks."""
    # md5 only checks integrity against what Zenodo publishes; it is not a security boundary.
    digest = hashlib.new(algorithm, usedforsecurity=False) if algorithm == "md5" else hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK_SIZE):
            digest.update(chunk)
    return digest.hexdigest()


def _expected_digest(sha256: str | None, md5: str | None) -> tuple[str, str] | None:
    """The strongest digest given, as (algorithm, hex): a published SHA-256 wins over a published MD5."""
    if sha256 is not None:
        return "sha256", _normalize_digest(sha256, "sha256")  # type: ignore[return-value]
    if md5 is not None:
        return "md5", _normalize_digest(md5, "md5")  # type: ignore[return-value]
    return None


# --------------------------------------------------------------------------------------------------------------
# Downloading
# --------------------------------------------------------------------------------------------------------------


class _RestartDownload(Exception):
    """Internal: the .part file cannot be resumed and has been discarded; start again from zero."""


def _file_size(path: pathlib.Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _unlink_quietly(path: pathlib.Path) -> None:
    path.unlink(missing_ok=True)


def _parse_int_header(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        parsed = int(value.strip())
    except ValueError:
        return None
    return parsed if parsed >= 0 else None


def _attempt_download(
    url: str, part: pathlib.Path, *, progress: bool, timeout: float, desc: str
) -> tuple[int | None, bool]:
    """Run one HTTP request, appending to or rewriting ``part``.

    Returns ``(expected_total_size_or_None, complete)``. ``complete`` is False only when the server answered 416
    and the part's size could not be confirmed; the caller then verifies it another way. Raises the transient
    network errors unchanged (the caller decides whether to retry), ``_RestartDownload`` when the part has to be
    discarded, and ``urllib.error.HTTPError`` for HTTP error statuses.
    """
    from tqdm import tqdm  # Imported lazily: only needed when something is actually downloaded.

    offset = _file_size(part)
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if offset > 0:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)

    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or offset == 0:
            raise
        # 416 Range Not Satisfiable: our part is already at least as long as the file (complete), or it belongs
        # to a different/longer file. The server usually tells us the real size as "Content-Range: bytes */N".
        content_range = exc.headers.get("Content-Range", "") if exc.headers else ""
        exc.close()
        match = _UNSATISFIED_RANGE_RE.match(content_range)
        if match and int(match.group(1)) == offset:
            logger.debug("Server reports %s already complete (%d bytes).", part, offset)
            return offset, True
        if match:
            logger.warning("Discarding %s: its size %d does not match the remote size %s.", part, offset, match[1])
            _unlink_quietly(part)
            raise _RestartDownload from None
        return None, False

    with response:
        status = getattr(response, "status", None) or response.getcode()
        length = _parse_int_header(response.headers.get("Content-Length"))
        if status == 206 and offset > 0:
            match = _CONTENT_RANGE_RE.match(response.headers.get("Content-Range", ""))
            if match is None or int(match.group(1)) != offset:
                # The server sent some other slice; appending it would corrupt the file.
                logger.warning("Server returned an unexpected Content-Range for %s; restarting from zero.", url)
                _unlink_quietly(part)
                raise _RestartDownload
            start = offset
            total = int(match.group(3)) if match.group(3) != "*" else (offset + length if length is not None else None)
            mode = "ab"
        else:
            # 200 (possibly after we asked for a Range: the server ignored it) -> the body is the whole file.
            if offset > 0:
                logger.info("Server ignored the Range request for %s; restarting download from zero.", url)
            start = 0
            total = length
            mode = "wb"

        expected_body = (total - start) if total is not None else length
        received = 0
        with (
            open(part, mode) as fh,
            tqdm(
                total=total,
                initial=start,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=desc,
                disable=not progress,
                file=sys.stderr,
                leave=False,
            ) as bar,
        ):
            while True:
                chunk = response.read(_CHUNK_SIZE)
                if not chunk:
                    break
                fh.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        # http.client's read(n) returns b"" (instead of raising) when the peer closes before Content-Length bytes
        # were sent, so a dropped connection has to be detected here. The bytes written so far stay in the part.
        if expected_body is not None and received < expected_body:
            raise http.client.IncompleteRead(b"", expected_body - received)
        return total, True


def download_file(
    url: str,
    dest: pathlib.Path,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    progress: bool = True,
    timeout: float = 30.0,
    max_retries: int = 3,
) -> pathlib.Path:
    """Download ``url`` to ``dest`` atomically, resuming and retrying as needed, and return ``dest``.

    The data is written to ``dest.name + ".part"`` next to ``dest``; an existing part (from an interrupted run) is
    resumed with a ``Range`` request. Transient failures (connection errors, timeouts, a body shorter than its
    ``Content-Length``, 5xx/429 statuses) are retried, each retry resuming where the previous attempt stopped.
    ``max_retries`` bounds the number of *consecutive* failed attempts that did not extend the part file, so a slow
    but progressing connection can finish a large file while a dead one fails quickly.

    When ``sha256`` (or, where a publisher lists only that, ``md5``) is given, the part is verified before it is moved
    into place. On a mismatch the part is deleted
    and :class:`ChecksumError` is raised (after one fresh attempt if the mismatch could come from a stale part left
    over by an earlier run). Other failures raise :class:`WeightsUnavailableError`; the part is kept so that a
    later call can resume.
    """
    dest = pathlib.Path(dest)
    expected = _expected_digest(sha256, md5)
    if max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, got {max_retries}")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")

    resumed = part.exists() and _file_size(part) > 0
    if resumed:
        logger.info("Resuming download of %s at byte %d.", url, _file_size(part))
    logger.info("Downloading %s to %s", url, dest)

    failures = 0
    high_water = _file_size(part)
    while True:
        try:
            total, confirmed = _attempt_download(url, part, progress=progress, timeout=timeout, desc=dest.name)
        except _RestartDownload:
            failures += 1
            if failures > max_retries:
                raise WeightsUnavailableError(
                    _unavailable_message(url, dest, "the server repeatedly sent data that could not be resumed")
                ) from None
            continue
        except urllib.error.HTTPError as exc:
            exc.close()
            reason = f"HTTP {exc.code} {exc.reason}"
            if exc.code not in _RETRYABLE_HTTP_STATUS:
                raise WeightsUnavailableError(_unavailable_message(url, dest, reason)) from exc
            last_error: BaseException = exc
        except _TRANSIENT_ERRORS as exc:
            last_error = exc
        else:
            size = _file_size(part)
            if total is not None and size != total:
                # Should not happen with a well-behaved server; start over rather than keep a wrong-sized file.
                logger.warning("Size of %s is %d bytes, expected %d; restarting.", part, size, total)
                _unlink_quietly(part)
                failures += 1
                if failures > max_retries:
                    raise WeightsUnavailableError(
                        _unavailable_message(url, dest, f"downloaded size {size} does not match expected {total}")
                    )
                continue
            if expected is not None:
                algorithm, expected_hex = expected
                actual = file_digest(part, algorithm)
                if actual != expected_hex:
                    _unlink_quietly(part)
                    if resumed or not confirmed:
                        # The bytes we resumed from may belong to an older version of the file; try once cleanly.
                        logger.warning("Checksum mismatch after resuming %s; retrying from scratch.", url)
                        resumed = False
                        continue
                    raise ChecksumError(_checksum_message(dest, expected_hex, actual, url, algorithm))
            elif not confirmed:
                # 416 without a usable size and nothing to verify against: we cannot know the part is right.
                logger.warning("Cannot confirm that %s is complete; restarting from zero.", part)
                _unlink_quietly(part)
                failures += 1
                if failures > max_retries:
                    raise WeightsUnavailableError(_unavailable_message(url, dest, "could not confirm download size"))
                continue
            os.replace(part, dest)
            logger.info("Saved %s", dest)
            return dest

        # A transient failure. Retry, resetting the budget whenever the part grew past the largest size it has had
        # during this call (a high-water mark that never goes down, so a server that keeps forcing restarts cannot
        # keep the loop alive forever).
        size = _file_size(part)
        if size > high_water:
            high_water = size
            failures = 0
        failures += 1
        if failures > max_retries:
            reason = f"{type(last_error).__name__}: {last_error}"
            if isinstance(last_error, http.client.IncompleteRead):
                reason = f"the transfer was truncated ({reason})"
            if size > 0:
                reason += f"; {size} bytes kept in {part} for resuming"
            raise WeightsUnavailableError(
                _unavailable_message(url, dest, f"{reason} (gave up after {max_retries} retries)")
            ) from last_error
        delay = min(_RETRY_BACKOFF_S * 2 ** (failures - 1), _RETRY_BACKOFF_MAX_S)
        logger.warning(
            "Download of %s failed (%s: %s); retry %d/%d in %.1fs.",
            url,
            type(last_error).__name__,
            last_error,
            failures,
            max_retries,
            delay,
        )
        if delay > 0:
            time.sleep(delay)


def pinned_digest_path(path: pathlib.Path) -> pathlib.Path:
    """Where the SHA-256 pinned on the first download of an unhashed cached file is kept (``sha256sum`` format)."""
    return path.with_name(path.name + ".sha256")


def read_pinned_digest(path: pathlib.Path) -> str | None:
    """The digest pinned for cached file ``path``, or None when none is pinned (or the pin file is unreadable)."""
    try:
        text = pinned_digest_path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError):
        return None
    value = text.split()[0].lower() if text.split() else ""
    return value if re.fullmatch(r"[0-9a-f]{64}", value) else None


def _pin_digest(path: pathlib.Path, digest: str) -> None:
    pin = pinned_digest_path(path)
    tmp = pin.with_name(pin.name + ".tmp")
    try:
        tmp.write_text(f"{digest}  {path.name}\n", encoding="ascii")
        os.replace(tmp, pin)
    except OSError as exc:  # a read-only cache still serves the file; it just cannot be pinned
        logger.warning("Cannot pin the SHA-256 of %s in %s (%s); it will not be verified later.", path, pin, exc)
        _unlink_quietly(tmp)


_warned_unhashed: set[str] = set()


def _warn_unhashed_once(url: str, path: pathlib.Path, digest: str, first: bool) -> None:
    if url in _warned_unhashed:
        return
    _warned_unhashed.add(url)
    if first:
        what = f"its SHA-256 {digest} was pinned on this first use ({pinned_digest_path(path)})"
    else:
        what = f"it is verified against the SHA-256 pinned on its first download ({digest})"
    logger.warning("No checksum is published for %s; %s.", url, what)


def resolve_weights(
    url: str,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    filename: str | None = None,
    progress: bool = True,
) -> pathlib.Path:
    """Return a local path to the weights at ``url``, downloading them into the cache if needed.

    A cached file is returned without network access, after verifying it against the published ``sha256`` (or the
    publisher's ``md5`` where that is all there is). Where no digest is published, the SHA-256 of the first download
    is pinned next to the cached file (trust on first use), every later use is verified against it, and a warning
    says so once per process. A corrupt cached file is replaced by a fresh download, unless offline mode is on, in
    which case :class:`ChecksumError` is raised. In offline mode an uncached file raises
    :class:`WeightsUnavailableError`. All network failures are reported as :class:`WeightsUnavailableError` naming
    the URL, the cache path and how to supply a local checkpoint.
    """
    path = cached_file_path(url, filename)
    expected = _expected_digest(sha256, md5)
    pinned = read_pinned_digest(path) if expected is None else None
    if pinned is not None:
        expected = ("sha256", pinned)

    if path.is_file():
        if expected is None:  # cached before pinning existed, or placed there by hand: pinned now
            digest = sha256_file(path)
            _pin_digest(path, digest)
            _warn_unhashed_once(url, path, digest, first=True)
            return path
        algorithm, expected_hex = expected
        actual = file_digest(path, algorithm)
        if actual == expected_hex:
            if pinned is not None:
                _warn_unhashed_once(url, path, pinned, first=False)
            logger.debug("Using cached %s (checksum verified)", path)
            return path
        kind = "pinned on its first download" if pinned is not None else "published"
        if is_offline():
            raise ChecksumError(
                f"{_checksum_message(path, expected_hex, actual, algorithm=algorithm)} (the digest {kind}) The cached "
                f"file is corrupt and offline mode prevents downloading {url} again. Delete it and retry online, or: "
                f"{_advice()}"
            )
        logger.warning(
            "Cached %s is corrupt (%s %s, expected %s, %s); downloading again.",
            path,
            algorithm,
            actual,
            expected_hex,
            kind,
        )
        _unlink_quietly(path)

    if is_offline():
        raise WeightsUnavailableError(
            _unavailable_message(
                url, path, "offline mode is enabled (AUDIOKIT_OFFLINE/HF_HUB_OFFLINE) and the file is not cached"
            )
        )

    algorithm, expected_hex = expected if expected is not None else ("sha256", None)
    try:
        path = download_file(
            url,
            path,
            sha256=expected_hex if algorithm == "sha256" else None,
            md5=expected_hex if algorithm == "md5" else None,
            progress=progress,
        )
    except ChecksumError as exc:
        if pinned is not None:
            raise ChecksumError(
                f"{exc} The file at {url} differs from the one first downloaded (its SHA-256 is pinned in "
                f"{pinned_digest_path(path)}): the publisher replaced it, or something between you and them did. "
                "If the change is expected, delete the pin file and download again."
            ) from None
        raise
    except WeightsUnavailableError:
        raise  # Already carries the URL, cache path and advice.
    except (OSError, http.client.HTTPException) as exc:  # URLError is an OSError; also disk/permission problems.
        raise WeightsUnavailableError(_unavailable_message(url, path, f"{type(exc).__name__}: {exc}")) from exc
    if expected is None:
        digest = sha256_file(path)
        _pin_digest(path, digest)
        _warn_unhashed_once(url, path, digest, first=True)
    elif pinned is not None:
        _warn_unhashed_once(url, path, pinned, first=False)
    return path


# --------------------------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------------------------


def _describe_unrecognized(head: bytes) -> str:
    stripped = head.lstrip()
    if stripped[:1] == b"<":
        return "file looks like HTML/XML (perhaps an error page was saved instead of the weights)"
    if stripped[:1] in (b"{", b"["):
        return "file looks like JSON text, not a checkpoint"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return f"unrecognized file format (starts with {head[:16]!r})"
    return f"file looks like plain text, not a checkpoint (starts with {head[:32]!r})"


def _pickle_globals(stream: IO[bytes]) -> list[str] | None:
    """List the globals (``module.name``) a pickle stream references, without executing it.

    Returns None when the stream is not a well-formed pickle. Only used to explain a refusal: it lets us tell a
    pickle of arbitrary objects (well-formed, references classes/functions) from a corrupt file, which
    ``torch.load`` sometimes reports with the same exception.
    """
    found: list[str] = []
    recent_strings: list[str] = []
    try:
        for opcode, arg, _pos in pickletools.genops(stream):
            if isinstance(arg, str):
                recent_strings = [*recent_strings[-1:], arg]
            if opcode.name in ("GLOBAL", "INST") and isinstance(arg, str):
                found.append(arg.replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL":
                found.append(".".join(recent_strings[-2:]) if len(recent_strings) == 2 else "<unknown>")
    except Exception:
        return None
    return found


def _refused_globals(path: pathlib.Path) -> list[str] | None:
    """Globals referenced by the checkpoint's (main) pickle, or None if it cannot be parsed as a pickle."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if n.endswith("data.pkl")]
                if not names:
                    return None
                with archive.open(names[0]) as member:
                    return _pickle_globals(member)
        with open(path, "rb") as fh:
            return _pickle_globals(fh)
    except (OSError, zipfile.BadZipFile):
        return None


# Globals that a weights_only-loadable checkpoint legitimately references; anything else explains a refusal.
_BENIGN_GLOBAL_PREFIXES = ("torch.", "collections.OrderedDict", "builtins.set", "builtins.frozenset")


def _check_checkpoint_file(path: pathlib.Path) -> None:
    """The failures every checkpoint read shares, each as one line naming the file."""
    try:
        if not path.exists():
            raise FileNotFoundError(errno.ENOENT, f"Checkpoint file not found: {path}", str(path))
        if path.is_dir():
            raise CheckpointLoadError(f"Cannot load checkpoint {path}: it is a directory, not a file.")
        if path.stat().st_size == 0:
            raise CheckpointLoadError(
                f"Cannot load checkpoint {path}: the file is empty (0 bytes; interrupted download?)."
            )
        # Opened here because the readers misreport it: safetensors says "No such file or directory" for a file it
        # may not read.
        with open(path, "rb"):
            pass
    except PermissionError:
        raise CheckpointLoadError(f"Cannot load checkpoint {path}: permission denied") from None


def _permission_denied(path: pathlib.Path, exc: BaseException) -> bool:
    # The file was readable a moment ago (_check_checkpoint_file); this covers its mode changing in between.
    return isinstance(exc, PermissionError) or not os.access(path, os.R_OK)


def load_state_dict_file(path: str | os.PathLike[str]) -> Any:
    """Load a checkpoint file safely and return the object it holds (usually a dict of tensors, possibly nested).

    ``.safetensors`` files are read with :func:`safetensors.torch.load_file`; anything else with
    ``torch.load(path, map_location="cpu", weights_only=True)``, which only rebuilds tensors and plain containers.
    This is the single place where checkpoint files are read.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        CheckpointLoadError: the file is unreadable (permission denied), empty, truncated, corrupt, not a checkpoint,
            or a pickle that would need to construct arbitrary Python objects (refused: unpickling those can execute
            code).
    """
    path = pathlib.Path(path)
    _check_checkpoint_file(path)

    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except MemoryError:
            raise
        except Exception as exc:  # SafetensorError and friends: header/size problems mean a corrupt file.
            if _permission_denied(path, exc):
                raise CheckpointLoadError(f"Cannot load checkpoint {path}: permission denied") from None
            raise CheckpointLoadError(
                f"Cannot load checkpoint {path}: not a valid safetensors file (corrupt or truncated?): {exc}"
            ) from exc

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except MemoryError:
        raise
    except Exception as exc:
        if _permission_denied(path, exc):
            raise CheckpointLoadError(f"Cannot load checkpoint {path}: permission denied") from None
        raise CheckpointLoadError(f"Cannot load checkpoint {path}: {_classify_torch_failure(path, exc)}") from exc


def read_safetensors_shapes(path: str | os.PathLike[str]) -> dict[str, tuple[int, ...]]:
    """The name and shape of every tensor in a ``.safetensors`` file, read from its header alone (no tensor data is
    loaded), so that a model can be checked against the file before anything of the model's size is allocated.

    Raises as :func:`load_state_dict_file` does.
    """
    from safetensors import safe_open

    path = pathlib.Path(path)
    _check_checkpoint_file(path)
    try:
        with safe_open(str(path), framework="pt") as archive:
            return {name: tuple(archive.get_slice(name).get_shape()) for name in archive.keys()}  # noqa: SIM118
    except Exception as exc:
        if _permission_denied(path, exc):
            raise CheckpointLoadError(f"Cannot load checkpoint {path}: permission denied") from None
        raise CheckpointLoadError(
            f"Cannot load checkpoint {path}: not a valid safetensors file (corrupt or truncated?): {exc}"
        ) from exc


def _classify_torch_failure(path: pathlib.Path, exc: BaseException) -> str:
    """Turn a ``torch.load`` failure into a human-readable reason.

    ``torch.load(weights_only=True)`` raises ``UnpicklingError("Weights only load failed ...")`` both when a pickle
    references non-allowlisted objects and for some malformed data, so for that case the pickle is parsed (never
    executed) with :mod:`pickletools` to decide which one it is.
    """
    with open(path, "rb") as fh:
        head = fh.read(64)
    is_zip = head.startswith(b"PK\x03\x04")
    is_pickle = head[:1] == b"\x80"  # pickle PROTO opcode, first byte of legacy (non-zip) torch.save files
    if "Weights only load failed" in str(exc):
        globals_ = _refused_globals(path)
        if globals_ is not None:
            suspicious = sorted({g for g in globals_ if not g.startswith(_BENIGN_GLOBAL_PREFIXES)})
            # torch's own message also suggests weights_only=False, which is exactly what we refuse to do, so it
            # is only quoted when the referenced globals cannot be named.
            detail = f" (references {', '.join(suspicious[:5])})" if suspicious else f" ({' '.join(str(exc).split())})"
            return (
                f"it is a pickle that contains arbitrary Python objects{detail}, and audiokit refuses to unpickle "
                "arbitrary objects for safety (torch.load with weights_only=True). Re-save the checkpoint as a plain "
                "state_dict of tensors (or as safetensors)."
            )
    if is_zip:
        if not zipfile.is_zipfile(path):
            return f"the file is truncated or corrupt (incomplete zip archive): {exc}"
        return f"corrupt PyTorch checkpoint: {exc}"
    if is_pickle:
        if isinstance(exc, EOFError):
            return f"the file is truncated (unexpected end of data): {exc!r}"
        return f"corrupt or truncated PyTorch checkpoint: {type(exc).__name__}: {exc}"
    return f"{_describe_unrecognized(head)}; torch.load failed with {type(exc).__name__}: {exc}"


CHECKPOINT_FILES_IN_DIR = ("model.safetensors", "pytorch_model.bin")


def resolve_checkpoint_path(path: str | os.PathLike[str]) -> pathlib.Path:
    """A checkpoint file as given, or the weights file inside a model directory (a Hugging Face or audiokit
    ``save_pretrained`` directory: ``model.safetensors``, else ``pytorch_model.bin``)."""
    path = pathlib.Path(path).expanduser()
    if not path.is_dir():
        return path
    for name in CHECKPOINT_FILES_IN_DIR:
        if (path / name).is_file():
            return path / name
    if any(path.glob("*.index.json")):
        raise CheckpointLoadError(f"{path}: sharded checkpoints are not supported; merge the shards into one file")
    raise FileNotFoundError(f"{path}: no {' or '.join(CHECKPOINT_FILES_IN_DIR)} in this directory")
