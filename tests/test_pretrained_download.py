"""create_model(pretrained=True) end to end: download from a local HTTP server, sha256, cache, offline reuse."""

from __future__ import annotations

import functools
import hashlib
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

import audiokit as ak
from audiokit import _hub, _registry
from tests.conftest import informative_model

NAME = "efficientat_mn01.audioset"


class _QuietHandler(SimpleHTTPRequestHandler):
    requests: list[str] = []

    def log_message(self, *args):  # keep test output clean
        pass

    def do_GET(self):
        type(self).requests.append(self.path)
        super().do_GET()


@pytest.fixture
def served_checkpoint(tmp_path, monkeypatch):
    """A random mn01 state dict in the upstream layout, served on 127.0.0.1, registered as the weights' URL.

    Informative weights: a fresh mn01 outputs ~1e-9 and carries default BatchNorm statistics (those of any fresh
    model), so a download that lost them would still compare equal.
    """
    reference = informative_model(NAME, seed=7)
    root = tmp_path / "www"
    root.mkdir()
    path = root / "mn01_as_mAP_298.pt"
    torch.save(reference.state_dict(), path)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    _QuietHandler.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/{path.name}"
    cfg = _registry._pretrained_cfgs[NAME]
    monkeypatch.setitem(_registry._pretrained_cfgs, NAME, cfg.replace(url=url, sha256=digest))
    monkeypatch.delenv("AUDIOKIT_OFFLINE")
    yield reference, digest
    server.shutdown()
    server.server_close()
    thread.join()


def test_download_verify_cache_and_reuse_offline(served_checkpoint, monkeypatch):
    reference, digest = served_checkpoint
    wave = 0.1 * torch.randn(1, 32000)
    model = ak.create_model(NAME, pretrained=True, progress=False).eval()
    with torch.no_grad():
        assert torch.equal(model(wave), reference(wave))
    cached = _hub.cached_file_path(ak.get_pretrained_cfg(NAME).url)
    assert cached.is_file() and _hub.sha256_file(cached) == digest
    assert len(_QuietHandler.requests) == 1

    monkeypatch.setenv("AUDIOKIT_OFFLINE", "1")
    again = ak.create_model(NAME, pretrained=True).eval()
    with torch.no_grad():
        assert torch.equal(again(wave), reference(wave))
    assert len(_QuietHandler.requests) == 1, "the cached file must be used without a request"


def test_wrong_published_hash_is_refused(served_checkpoint, monkeypatch):
    cfg = ak.get_pretrained_cfg(NAME)
    monkeypatch.setitem(_registry._pretrained_cfgs, NAME, cfg.replace(sha256="0" * 64))
    with pytest.raises(_hub.ChecksumError, match="0000"):
        ak.create_model(NAME, pretrained=True, progress=False)
    assert not _hub.cached_file_path(cfg.url).exists()


def test_new_class_count_keeps_the_pretrained_backbone(served_checkpoint):
    reference, _ = served_checkpoint
    model = ak.create_model(NAME, pretrained=True, num_classes=10, progress=False)
    ours, theirs = model.state_dict(), reference.state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours if not k.startswith("classifier.5."))
    assert model.get_classifier().out_features == 10 and model.label_names[0] == "class_0"


def test_a_published_md5_is_checked_when_no_sha256_is(served_checkpoint, monkeypatch):
    reference, _ = served_checkpoint
    cfg = ak.get_pretrained_cfg(NAME)
    cached = _hub.resolve_weights(cfg.url, sha256=cfg.sha256, progress=False)
    md5 = hashlib.md5(cached.read_bytes()).hexdigest()
    cached.unlink()

    monkeypatch.setitem(_registry._pretrained_cfgs, NAME, cfg.replace(sha256=None, md5="0" * 32))
    assert ak.get_pretrained_cfg(NAME).checksum_kind == "md5"
    with pytest.raises(_hub.ChecksumError, match="MD5 mismatch"):
        ak.create_model(NAME, pretrained=True, progress=False)
    assert not cached.exists()

    monkeypatch.setitem(_registry._pretrained_cfgs, NAME, cfg.replace(sha256=None, md5=md5))
    model = ak.create_model(NAME, pretrained=True, progress=False).eval()
    wave = 0.1 * torch.randn(1, 32000)
    with torch.no_grad():
        assert torch.equal(model(wave), reference(wave))
    assert not _hub.pinned_digest_path(cached).exists(), "a published digest needs no pin"


def test_registry_digests_are_validated():
    cfg = ak.get_pretrained_cfg(NAME)
    with pytest.raises(ValueError, match="md5 must be 32 lowercase hexadecimal"):
        cfg.replace(md5="abc")
    with pytest.raises(ValueError, match="sha256 must be 64"):
        cfg.replace(sha256="Z" * 64)
    assert cfg.replace(url=None).checksum_kind is None
    assert cfg.replace(sha256=None, md5=None).checksum_kind == "pinned"
