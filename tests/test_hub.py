"""Tests for audiokit._hub: cache layout, resumable downloads against a real local HTTP server, safe loading."""

from __future__ import annotations

import hashlib
import http.server
import os
import pathlib
import pickle
import random
import re
import socket
import threading
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import torch
from safetensors.torch import save_file

from audiokit import _hub as hub

# 3 MiB + a bit: spans several 1 MiB read chunks, and is not a multiple of the chunk size.
PAYLOAD = random.Random(1234).randbytes(3 * 1024 * 1024 + 12345)
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()
FILE_PATH = "/weights/model%20v1.pth"
FILE_NAME = "model v1.pth"


# --------------------------------------------------------------------------------------------------------------
# A small, configurable HTTP server
# --------------------------------------------------------------------------------------------------------------


@dataclass
class RecordedRequest:
    path: str
    range: str | None


@dataclass
class ServerState:
    """What the handler serves and how it misbehaves; tests mutate it before making requests."""

    files: dict[str, bytes] = field(default_factory=dict)
    truncate_after: int | None = None  # send only this many body bytes (but the full Content-Length), then close
    truncate_times: int = 0  # how many responses to truncate; -1 means all of them
    corrupt: bool = False  # flip bytes in the body
    ignore_range: bool = False  # always answer 200 with the whole file
    fail_status: int | None = None  # answer with this status ...
    fail_times: int = 0  # ... for this many requests
    requests: list[RecordedRequest] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _StatefulServer

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:
        state = self.server.state
        with state.lock:
            state.requests.append(RecordedRequest(self.path, self.headers.get("Range")))
            fail = state.fail_status is not None and state.fail_times > 0
            if fail:
                state.fail_times -= 1
            truncate = state.truncate_after is not None and state.truncate_times != 0
            if truncate and state.truncate_times > 0:
                state.truncate_times -= 1
        if fail:
            assert state.fail_status is not None
            self.send_error(state.fail_status)
            return

        data = state.files.get(urllib.parse.urlsplit(self.path).path)
        if data is None:
            self.send_error(404, "Not Found")
            return
        if state.corrupt:
            data = bytes(b ^ 0x5A for b in data[:100]) + data[100:]

        status, start, end = 200, 0, len(data) - 1
        range_header = self.headers.get("Range")
        if range_header and not state.ignore_range:
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", range_header)
            assert match, range_header
            start = int(match.group(1))
            if match.group(2):
                end = min(int(match.group(2)), end)
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206

        body = data[start : end + 1]
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        if truncate:
            assert state.truncate_after is not None
            body = body[: state.truncate_after]  # the connection closes after this: a dropped transfer
        self.wfile.write(body)
        self.wfile.flush()
        self.close_connection = True


class _StatefulServer(http.server.ThreadingHTTPServer):
    # Non-daemon request threads are joined by server_close(), so nothing outlives the fixture.
    daemon_threads = False
    block_on_close = True

    def __init__(self, state: ServerState) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


@dataclass
class LocalServer:
    state: ServerState
    base_url: str

    def url(self, path: str = FILE_PATH) -> str:
        return self.base_url + path

    @property
    def requests(self) -> list[RecordedRequest]:
        return self.state.requests


def _is_tqdm_monitor(thread: threading.Thread) -> bool:
    # tqdm starts one process-wide daemon monitor thread on first use; it is not ours to stop.
    return type(thread).__name__ == "TMonitor"


@pytest.fixture
def server() -> Iterator[LocalServer]:
    before = set(threading.enumerate())
    state = ServerState(files={urllib.parse.unquote(FILE_PATH): PAYLOAD, FILE_PATH: PAYLOAD})
    httpd = _StatefulServer(state)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    host, port = httpd.server_address[:2]
    try:
        yield LocalServer(state, f"http://{host}:{port}")
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)
    leftover = [t for t in set(threading.enumerate()) - before if t.is_alive() and not _is_tqdm_monitor(t)]
    assert not leftover, f"threads left running: {leftover}"


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    home = tmp_path / "audiokit_home"
    monkeypatch.setenv("AUDIOKIT_HOME", str(home))
    monkeypatch.delenv("AUDIOKIT_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "_RETRY_BACKOFF_S", 0.0)
    return home


# --------------------------------------------------------------------------------------------------------------
# Environment and cache layout
# --------------------------------------------------------------------------------------------------------------


def test_cache_dir_precedence(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("AUDIOKIT_HOME", str(tmp_path / "ak"))
    assert hub.get_cache_dir() == tmp_path / "ak"
    assert hub.get_checkpoint_dir() == tmp_path / "ak" / "checkpoints"

    monkeypatch.delenv("AUDIOKIT_HOME")
    assert hub.get_cache_dir() == tmp_path / "xdg" / "audiokit"

    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # the XDG spec says relative paths are ignored
    assert hub.get_cache_dir() == tmp_path / "home" / ".cache" / "audiokit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert hub.get_cache_dir() == tmp_path / "home" / ".cache" / "audiokit"
    assert hub.get_checkpoint_dir() == tmp_path / "home" / ".cache" / "audiokit" / "checkpoints"
    assert not (tmp_path / "home").exists(), "resolving the cache dir must not create it"


@pytest.mark.parametrize("value", ["1", "true", "TRUE", "Yes", "on", " 1 "])
@pytest.mark.parametrize("var", ["AUDIOKIT_OFFLINE", "HF_HUB_OFFLINE"])
def test_is_offline_truthy(monkeypatch: pytest.MonkeyPatch, var: str, value: str) -> None:
    assert not hub.is_offline()
    monkeypatch.setenv(var, value)
    assert hub.is_offline()


@pytest.mark.parametrize("value", ["", "0", "false", "no", "off"])
def test_is_offline_falsy(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("AUDIOKIT_OFFLINE", value)
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    assert not hub.is_offline()


def test_cached_file_path(isolated_env: pathlib.Path) -> None:
    ckpt = isolated_env / "checkpoints"
    assert hub.cached_file_path("https://x.org/a/b/Cnn14_mAP%3D0.431.pth?download=1") == ckpt / "Cnn14_mAP=0.431.pth"
    assert hub.cached_file_path("https://x.org/a/model.bin#frag") == ckpt / "model.bin"
    assert hub.cached_file_path("https://x.org/a/model.bin", filename="other.bin") == ckpt / "other.bin"
    with pytest.raises(ValueError):
        hub.cached_file_path("https://x.org/a/")
    with pytest.raises(ValueError):
        hub.cached_file_path("https://x.org/a/..%2F..%2Fevil")
    with pytest.raises(ValueError):
        hub.cached_file_path("https://x.org/a/model.bin", filename="../escape.bin")
    assert not hub.is_cached("https://x.org/a/model.bin")
    (ckpt).mkdir(parents=True)
    (ckpt / "model.bin").write_bytes(b"x")
    assert hub.is_cached("https://x.org/a/model.bin")


def test_sha256_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(PAYLOAD)
    assert hub.sha256_file(path) == PAYLOAD_SHA
    assert hub.sha256_file(str(path)) == PAYLOAD_SHA


# --------------------------------------------------------------------------------------------------------------
# Downloads
# --------------------------------------------------------------------------------------------------------------


def test_download_verifies_and_caches(server: LocalServer, isolated_env: pathlib.Path) -> None:
    path = hub.resolve_weights(server.url(), sha256=PAYLOAD_SHA, progress=True)
    assert path == isolated_env / "checkpoints" / FILE_NAME
    assert path.read_bytes() == PAYLOAD
    assert not path.with_name(path.name + ".part").exists()
    assert len(server.requests) == 1
    assert server.requests[0].range is None
    assert hub.is_cached(server.url())

    again = hub.resolve_weights(server.url(), sha256=PAYLOAD_SHA.upper(), progress=False)
    assert again == path
    again = hub.resolve_weights(server.url(), progress=False)
    assert again == path
    assert len(server.requests) == 1, "a cached file must not trigger another request"


def test_resume_from_existing_part(server: LocalServer, tmp_path: pathlib.Path) -> None:
    dest = tmp_path / "sub" / "dir" / "model.pth"
    dest.parent.mkdir(parents=True)
    part_size = 1_500_000
    dest.with_name("model.pth.part").write_bytes(PAYLOAD[:part_size])

    out = hub.download_file(server.url(), dest, sha256=PAYLOAD_SHA, progress=False)

    assert out == dest
    assert [r.range for r in server.requests] == [f"bytes={part_size}-"]
    assert dest.read_bytes() == PAYLOAD
    assert not dest.with_name("model.pth.part").exists()


def test_resume_when_server_ignores_range(server: LocalServer, tmp_path: pathlib.Path) -> None:
    server.state.ignore_range = True
    dest = tmp_path / "model.pth"
    dest.with_name("model.pth.part").write_bytes(PAYLOAD[:1000])

    hub.download_file(server.url(), dest, sha256=PAYLOAD_SHA, progress=False)

    assert [r.range for r in server.requests] == ["bytes=1000-"]
    assert dest.read_bytes() == PAYLOAD, "a 200 answer to a Range request must restart, not append"


def test_part_already_complete_gets_416(server: LocalServer, tmp_path: pathlib.Path) -> None:
    dest = tmp_path / "model.pth"
    dest.with_name("model.pth.part").write_bytes(PAYLOAD)

    hub.download_file(server.url(), dest, sha256=PAYLOAD_SHA, progress=False)

    assert [r.range for r in server.requests] == [f"bytes={len(PAYLOAD)}-"]
    assert dest.read_bytes() == PAYLOAD


def test_oversized_part_is_discarded(server: LocalServer, tmp_path: pathlib.Path) -> None:
    dest = tmp_path / "model.pth"
    dest.with_name("model.pth.part").write_bytes(PAYLOAD + b"garbage")

    hub.download_file(server.url(), dest, progress=False)

    assert [r.range for r in server.requests] == [f"bytes={len(PAYLOAD) + 7}-", None]
    assert dest.read_bytes() == PAYLOAD


def test_stale_part_with_wrong_bytes_is_redownloaded(server: LocalServer, tmp_path: pathlib.Path) -> None:
    dest = tmp_path / "model.pth"
    dest.with_name("model.pth.part").write_bytes(b"\0" * 5000)  # e.g. left over from an older file version

    hub.download_file(server.url(), dest, sha256=PAYLOAD_SHA, progress=False)

    assert [r.range for r in server.requests] == ["bytes=5000-", None]
    assert dest.read_bytes() == PAYLOAD


def test_truncated_transfer_is_resumed(server: LocalServer, tmp_path: pathlib.Path) -> None:
    server.state.truncate_after = 700_000
    server.state.truncate_times = 1
    dest = tmp_path / "model.pth"

    hub.download_file(server.url(), dest, sha256=PAYLOAD_SHA, progress=False)

    assert [r.range for r in server.requests] == [None, "bytes=700000-"]
    assert dest.read_bytes() == PAYLOAD


def test_repeated_truncation_keeps_making_progress(server: LocalServer, tmp_path: pathlib.Path) -> None:
    # Every response is cut short, but each one extends the part: the retry budget only counts stalled attempts.
    server.state.truncate_after = 1_000_000
    server.state.truncate_times = -1
    dest = tmp_path / "model.pth"

    hub.download_file(server.url(), dest, sha256=PAYLOAD_SHA, progress=False, max_retries=1)

    assert [r.range for r in server.requests] == [None, "bytes=1000000-", "bytes=2000000-", "bytes=3000000-"]
    assert dest.read_bytes() == PAYLOAD


def test_truncation_without_progress_gives_clear_error(server: LocalServer, tmp_path: pathlib.Path) -> None:
    server.state.truncate_after = 0
    server.state.truncate_times = -1
    dest = tmp_path / "model.pth"

    with pytest.raises(hub.WeightsUnavailableError, match="truncated") as excinfo:
        hub.download_file(server.url(), dest, progress=False, max_retries=2)

    assert len(server.requests) == 3  # the first attempt plus two retries
    assert server.url() in str(excinfo.value)
    assert not dest.exists()


def test_transient_http_error_is_retried(server: LocalServer, tmp_path: pathlib.Path) -> None:
    server.state.fail_status = 503
    server.state.fail_times = 2
    dest = tmp_path / "model.pth"

    hub.download_file(server.url(), dest, sha256=PAYLOAD_SHA, progress=False)

    assert len(server.requests) == 3
    assert dest.read_bytes() == PAYLOAD


def test_corrupted_download_raises_checksum_error(server: LocalServer, tmp_path: pathlib.Path) -> None:
    server.state.corrupt = True
    dest = tmp_path / "model.pth"

    with pytest.raises(hub.ChecksumError) as excinfo:
        hub.download_file(server.url(), dest, sha256=PAYLOAD_SHA, progress=False)

    message = str(excinfo.value)
    assert PAYLOAD_SHA in message
    assert hashlib.sha256(bytes(b ^ 0x5A for b in PAYLOAD[:100]) + PAYLOAD[100:]).hexdigest() in message
    assert "model.pth" in message
    assert not dest.exists()
    assert not dest.with_name("model.pth.part").exists()
    assert isinstance(excinfo.value, hub.WeightsUnavailableError)


def test_resolve_corrupted_download_leaves_cache_empty(server: LocalServer) -> None:
    server.state.corrupt = True
    with pytest.raises(hub.ChecksumError):
        hub.resolve_weights(server.url(), sha256=PAYLOAD_SHA, progress=False)
    assert not hub.is_cached(server.url())
    assert list(hub.get_checkpoint_dir().iterdir()) == []


def test_404_raises_weights_unavailable(server: LocalServer) -> None:
    url = server.url("/missing/model.pth?download=1")
    with pytest.raises(hub.WeightsUnavailableError) as excinfo:
        hub.resolve_weights(url, progress=False)

    message = str(excinfo.value)
    assert url in message
    assert "404" in message
    assert "--checkpoint" in message
    assert "checkpoint_path=" in message
    assert str(hub.cached_file_path(url)) in message
    assert len(server.requests) == 1, "a 404 is permanent and must not be retried"
    assert not isinstance(excinfo.value, hub.ChecksumError)


def test_connection_refused_raises_weights_unavailable() -> None:
    with socket.socket() as sock:  # find a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/model.pth"
    with pytest.raises(hub.WeightsUnavailableError) as excinfo:
        hub.resolve_weights(url, progress=False)
    assert url in str(excinfo.value)
    assert "--checkpoint" in str(excinfo.value)


def test_offline_without_cache_makes_no_request(server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDIOKIT_OFFLINE", "1")
    with pytest.raises(hub.WeightsUnavailableError) as excinfo:
        hub.resolve_weights(server.url(), sha256=PAYLOAD_SHA, progress=False)

    message = str(excinfo.value)
    assert server.url() in message
    assert str(hub.cached_file_path(server.url())) in message
    assert "--checkpoint" in message
    assert "AUDIOKIT_OFFLINE" in message
    assert server.requests == []


def test_offline_with_cache_returns_it(server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    cached = hub.cached_file_path(server.url())
    cached.parent.mkdir(parents=True)
    cached.write_bytes(PAYLOAD)
    monkeypatch.setenv("HF_HUB_OFFLINE", "true")

    assert hub.resolve_weights(server.url(), sha256=PAYLOAD_SHA, progress=False) == cached
    assert hub.resolve_weights(server.url(), progress=False) == cached
    assert server.requests == []


def test_corrupt_cache_is_redownloaded_online(server: LocalServer) -> None:
    cached = hub.cached_file_path(server.url())
    cached.parent.mkdir(parents=True)
    cached.write_bytes(PAYLOAD[:-1] + b"!")

    path = hub.resolve_weights(server.url(), sha256=PAYLOAD_SHA, progress=False)

    assert path == cached
    assert path.read_bytes() == PAYLOAD
    assert len(server.requests) == 1


def test_corrupt_cache_offline_raises_checksum_error(server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    cached = hub.cached_file_path(server.url())
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"not the weights")
    monkeypatch.setenv("AUDIOKIT_OFFLINE", "yes")

    with pytest.raises(hub.ChecksumError) as excinfo:
        hub.resolve_weights(server.url(), sha256=PAYLOAD_SHA, progress=False)

    message = str(excinfo.value)
    assert PAYLOAD_SHA in message
    assert hashlib.sha256(b"not the weights").hexdigest() in message
    assert "--checkpoint" in message
    assert cached.read_bytes() == b"not the weights", "offline mode must not delete the only copy"
    assert server.requests == []


# --------------------------------------------------------------------------------------------------------------
# Loading checkpoints
# --------------------------------------------------------------------------------------------------------------


class _MakesDirOnUnpickle:
    """Unpickling this runs os.mkdir(marker): a harmless stand-in for arbitrary code execution."""

    def __init__(self, marker: pathlib.Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (str(self.marker),))


def test_load_torch_state_dict(tmp_path: pathlib.Path) -> None:
    state = {"layer.weight": torch.randn(3, 4), "layer.bias": torch.arange(3)}
    path = tmp_path / "model.pth"
    torch.save({"model": state, "epoch": 3}, path)

    loaded = hub.load_state_dict_file(path)

    assert set(loaded) == {"model", "epoch"}
    assert loaded["epoch"] == 3
    assert torch.equal(loaded["model"]["layer.weight"], state["layer.weight"])
    assert torch.equal(loaded["model"]["layer.bias"], state["layer.bias"])
    assert loaded["model"]["layer.weight"].device.type == "cpu"


def test_load_safetensors(tmp_path: pathlib.Path) -> None:
    state = {"a": torch.randn(2, 5), "b": torch.ones(7, dtype=torch.int64)}
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))

    loaded = hub.load_state_dict_file(str(path))

    assert set(loaded) == {"a", "b"}
    assert torch.equal(loaded["a"], state["a"])
    assert torch.equal(loaded["b"], state["b"])


def test_load_truncated_safetensors(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "model.safetensors"
    save_file({"a": torch.randn(100, 100)}, str(path))
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(hub.CheckpointLoadError, match=re.escape(str(path))):
        hub.load_state_dict_file(path)


def test_load_text_file_renamed_pth(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "model.pth"
    path.write_text("<html><body>404: rate limited</body></html>\n")
    with pytest.raises(hub.CheckpointLoadError) as excinfo:
        hub.load_state_dict_file(path)
    assert str(path) in str(excinfo.value)
    assert "HTML" in str(excinfo.value)

    path.write_text("just some notes\n")
    with pytest.raises(hub.CheckpointLoadError, match="text"):
        hub.load_state_dict_file(path)


def test_load_empty_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "empty.pth"
    path.write_bytes(b"")
    with pytest.raises(hub.CheckpointLoadError, match="empty") as excinfo:
        hub.load_state_dict_file(path)
    assert str(path) in str(excinfo.value)


@pytest.mark.parametrize("zip_format", [True, False])
def test_load_truncated_torch_file(tmp_path: pathlib.Path, zip_format: bool) -> None:
    path = tmp_path / "model.pt"
    torch.save({"w": torch.randn(64, 64)}, path, _use_new_zipfile_serialization=zip_format)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(hub.CheckpointLoadError, match="truncated") as excinfo:
        hub.load_state_dict_file(path)
    assert str(path) in str(excinfo.value)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_load_refuses_arbitrary_objects_without_running_them(tmp_path: pathlib.Path, writer: str) -> None:
    # Sanity check that the payload is live: an unrestricted unpickler does run it.
    control = tmp_path / "control_marker"
    pickle.loads(pickle.dumps(_MakesDirOnUnpickle(control)))
    assert control.exists()

    marker = tmp_path / "marker"
    path = tmp_path / "evil.pth"
    payload = {"model": {"w": torch.zeros(2)}, "hook": _MakesDirOnUnpickle(marker)}
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        with open(path, "wb") as fh:
            pickle.dump(_MakesDirOnUnpickle(marker), fh, protocol=pickle.HIGHEST_PROTOCOL)

    with pytest.raises(hub.CheckpointLoadError) as excinfo:
        hub.load_state_dict_file(path)

    message = str(excinfo.value)
    assert str(path) in message
    assert "refuses to unpickle arbitrary objects" in message
    assert "mkdir" in message  # names the offending global
    assert not marker.exists(), "loading must not execute code embedded in the pickle"


def test_load_missing_file(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "nope" / "model.pth"
    with pytest.raises(FileNotFoundError) as excinfo:
        hub.load_state_dict_file(path)
    assert str(path) in str(excinfo.value)
    assert not isinstance(excinfo.value, hub.CheckpointLoadError)


def test_load_directory(tmp_path: pathlib.Path) -> None:
    with pytest.raises(hub.CheckpointLoadError, match="directory"):
        hub.load_state_dict_file(tmp_path)


# --------------------------------------------------------------------------------------------------------------
# Published MD5s and digests pinned on first use
# --------------------------------------------------------------------------------------------------------------

PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub, "_warned_unhashed", set())


def test_published_md5_is_verified(server: LocalServer) -> None:
    path = hub.resolve_weights(server.url(), md5=PAYLOAD_MD5.upper(), progress=False)
    assert path.read_bytes() == PAYLOAD
    assert not hub.pinned_digest_path(path).exists(), "a published digest needs no pin"
    assert hub.resolve_weights(server.url(), md5=PAYLOAD_MD5, progress=False) == path
    assert len(server.requests) == 1


def test_wrong_published_md5_is_refused(server: LocalServer) -> None:
    with pytest.raises(hub.ChecksumError, match=f"MD5 mismatch .*expected {'0' * 32}, got {PAYLOAD_MD5}"):
        hub.resolve_weights(server.url(), md5="0" * 32, progress=False)
    assert not hub.is_cached(server.url())


def test_a_published_sha256_wins_over_an_md5(server: LocalServer) -> None:
    with pytest.raises(hub.ChecksumError, match="SHA-256 mismatch"):
        hub.resolve_weights(server.url(), sha256="0" * 64, md5=PAYLOAD_MD5, progress=False)


def test_unhashed_download_is_pinned_and_verified_afterwards(
    server: LocalServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger=hub.__name__):
        path = hub.resolve_weights(server.url(), progress=False)
        hub.resolve_weights(server.url(), progress=False)
    pin = hub.pinned_digest_path(path)
    assert pin.read_text() == f"{PAYLOAD_SHA}  {FILE_NAME}\n"  # sha256sum's format: `sha256sum -c` checks it
    assert hub.read_pinned_digest(path) == PAYLOAD_SHA
    warnings = [r.getMessage() for r in caplog.records if "No checksum is published" in r.getMessage()]
    assert len(warnings) == 1 and PAYLOAD_SHA in warnings[0] and server.url() in warnings[0]
    assert len(server.requests) == 1

    # A cached file that no longer matches its pin is fetched again, and the new copy must match the pin.
    path.write_bytes(PAYLOAD[:-1] + b"!")
    assert hub.resolve_weights(server.url(), progress=False).read_bytes() == PAYLOAD
    assert len(server.requests) == 2


def test_a_replaced_upstream_file_is_refused_against_the_pin(server: LocalServer) -> None:
    path = hub.resolve_weights(server.url(), progress=False)
    path.unlink()
    replaced = PAYLOAD[:-1] + b"?"
    server.state.files = {k: replaced for k in server.state.files}
    with pytest.raises(hub.ChecksumError, match="differs from the one first downloaded") as excinfo:
        hub.resolve_weights(server.url(), progress=False)
    assert str(hub.pinned_digest_path(path)) in str(excinfo.value)
    assert not path.exists() and hub.read_pinned_digest(path) == PAYLOAD_SHA


def test_a_corrupt_pinned_file_offline_is_refused(server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> None:
    path = hub.resolve_weights(server.url(), progress=False)
    path.write_bytes(b"not the weights")
    monkeypatch.setenv("AUDIOKIT_OFFLINE", "1")
    with pytest.raises(hub.ChecksumError, match="pinned on its first download"):
        hub.resolve_weights(server.url(), progress=False)
    assert path.read_bytes() == b"not the weights", "offline mode must not delete the only copy"


def test_a_file_cached_before_pinning_is_pinned_on_its_first_use(
    server: LocalServer, caplog: pytest.LogCaptureFixture
) -> None:
    cached = hub.cached_file_path(server.url())
    cached.parent.mkdir(parents=True)
    cached.write_bytes(PAYLOAD)
    with caplog.at_level("WARNING", logger=hub.__name__):
        assert hub.resolve_weights(server.url(), progress=False) == cached
    assert hub.read_pinned_digest(cached) == PAYLOAD_SHA
    assert "pinned on this first use" in caplog.text
    assert server.requests == []


def test_an_unwritable_cache_still_serves_the_file(
    server: LocalServer, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = hub.resolve_weights(server.url(), md5=PAYLOAD_MD5, progress=False)  # cached, nothing pinned

    def refuse(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(pathlib.Path, "write_text", refuse)
    with caplog.at_level("WARNING", logger=hub.__name__):
        assert hub.resolve_weights(server.url(), progress=False) == path
    assert "Cannot pin" in caplog.text and not hub.pinned_digest_path(path).exists()
