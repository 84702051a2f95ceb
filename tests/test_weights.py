"""Model file registry: where weights are looked for, what users are told, and safe downloads.

Downloads are exercised against a real HTTP server on 127.0.0.1 that serves test bytes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from vidscore_core import scores, weights
from vidscore_core.scoring import lineage
from vidscore_core.settings import Settings

# The public contract's file names below $VIDSCORE_MODELS_DIR (the upstream names).
CLIP_FILE = "clip/ViT-L-14.pt"
AESTHETIC_FILE = "aesthetic.pth"
UNIMATCH_FILE = "unimatch/gmflow-scale2-regrefine6-mixdata-train320x576-4e7b215d.pth"

ENV_VARS = ("VIDSCORE_CLIP_WEIGHTS", "VIDSCORE_AESTHETIC_WEIGHTS", "VIDSCORE_UNIMATCH_WEIGHTS")


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # HOME decides whether OpenAI's ~/.cache/clip copy exists; the developer's real one must not leak in.
    monkeypatch.setenv("HOME", str(tmp_path / "userhome"))
    monkeypatch.setenv("VIDSCORE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VIDSCORE_MODELS_DIR", str(tmp_path / "models"))
    for var in ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    lineage.clear_sha256_memory_cache()


@pytest.fixture
def settings() -> Settings:
    return Settings.from_env()


class FileServer:
    """A threaded HTTP server serving in-memory files; `truncate` paths send half the body and hang up."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.truncate: set[str] = set()
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.path in server.truncate:
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[FileServer]:
    srv = FileServer()
    yield srv
    srv.close()


def _payload(size: int = 300_000) -> tuple[bytes, str]:
    data = os.urandom(size)
    return data, hashlib.sha256(data).hexdigest()


def _leftovers(directory: Path) -> list[str]:
    return (
        sorted(p.name for p in directory.iterdir() if p.name.endswith(".part")) if directory.exists() else []
    )


def _publish(monkeypatch: pytest.MonkeyPatch, name: str, **changes: object) -> None:
    """Pretend the publisher states another digest (test bytes cannot match the real ones), size unknown."""
    changes.setdefault("expected_size", None)
    monkeypatch.setitem(weights.REGISTRY, name, dataclasses.replace(weights.REGISTRY[name], **changes))


# --------------------------------------------------------------------------------------------------------
# Registry, status, require
# --------------------------------------------------------------------------------------------------------


def test_registry_holds_the_official_sources() -> None:
    assert weights.NAMES == ("clip", "aesthetic", "unimatch")
    clip = weights.get("clip")
    # OpenAI's URL embeds the file's sha256, which is what its clip package checks.
    assert clip.sha256 and clip.sha256 in clip.url and clip.url.endswith("/ViT-L-14.pt")
    assert weights.get("aesthetic").url.endswith("sac+logos+ava1-l14-linearMSE.pth")
    unimatch = weights.get("unimatch")
    assert unimatch.sha256_prefix == "4e7b215d" and unimatch.url.endswith("-4e7b215d.pth")
    # Every official file has a full sha256 pinned; UniMatch's starts with the prefix in its file name.
    for spec in weights.REGISTRY.values():
        assert spec.sha256 and len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0
    assert unimatch.sha256.startswith(unimatch.sha256_prefix)
    with pytest.raises(KeyError, match="clip, aesthetic, unimatch"):
        weights.get("vae")


def test_status_on_empty_models_dir(settings: Settings, tmp_path: Path) -> None:
    rows = {row["name"]: row for row in weights.status(settings)}
    assert list(rows) == ["clip", "aesthetic", "unimatch"]
    expected_paths = {"clip": CLIP_FILE, "aesthetic": AESTHETIC_FILE, "unimatch": UNIMATCH_FILE}
    for name, row in rows.items():
        assert row["path"] == str(tmp_path / "models" / expected_paths[name])
        assert row["present"] is False
        assert row["size_bytes"] is None and row["sha256"] is None and row["verified"] is None
        assert row["location"] == "models_dir"
        assert row["env_var"] == f"VIDSCORE_{name.upper()}_WEIGHTS"
        assert row["description"] and row["url"].startswith("https://")
    assert rows["clip"]["expected_sha256"] == weights.get("clip").sha256
    assert rows["unimatch"]["expected_sha256_prefix"] == "4e7b215d"


@pytest.mark.parametrize("name", ["clip", "aesthetic", "unimatch"])
def test_require_tells_where_and_how(settings: Settings, name: str) -> None:
    with pytest.raises(weights.WeightsMissingError) as info:
        weights.require(name, settings)
    err = info.value
    assert isinstance(err, FileNotFoundError)
    path = weights.get(name).default_path(settings)
    text = str(err)
    assert str(path) in text
    assert f"VIDSCORE_{name.upper()}_WEIGHTS" in text
    assert f"vidscore weights download {name}" in text
    assert err.path == path


def test_env_overrides_are_honoured(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    custom = tmp_path / "elsewhere"
    for name in weights.NAMES:
        monkeypatch.setenv(f"VIDSCORE_{name.upper()}_WEIGHTS", str(custom / f"{name}.bin"))
    settings = Settings.from_env()

    rows = {row["name"]: row for row in weights.status(settings)}
    for name, row in rows.items():
        assert row["path"] == str(custom / f"{name}.bin") and row["location"] == "override"
        assert row["present"] is False
    with pytest.raises(weights.WeightsMissingError, match="set by VIDSCORE_CLIP_WEIGHTS"):
        weights.require("clip", settings)

    custom.mkdir()
    for name in weights.NAMES:
        (custom / f"{name}.bin").write_bytes(name.encode() * 100)
    rows = {row["name"]: row for row in weights.status(settings)}
    for name in weights.NAMES:
        assert weights.require(name, settings) == custom / f"{name}.bin"
        row = rows[name]
        assert row["present"] and row["size_bytes"] == len(name) * 100
        assert row["sha256"] == hashlib.sha256(name.encode() * 100).hexdigest()
    # Arbitrary bytes are not the published files.
    assert rows["clip"]["verified"] is False
    assert rows["unimatch"]["verified"] is False
    assert rows["aesthetic"]["verified"] is False


def test_openai_clip_cache_is_used_but_never_overwritten(
    settings: Settings, tmp_path: Path, server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    cached = tmp_path / "userhome" / ".cache" / "clip" / "ViT-L-14.pt"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"stale")
    row = weights.status(settings)[0]
    assert row["path"] == str(cached) and row["location"] == "openai_cache" and row["verified"] is False

    data, digest = _payload()
    server.files["/clip.pt"] = data
    _publish(monkeypatch, "clip", sha256=digest)
    got = weights.download("clip", settings, url=server.url("/clip.pt"), progress=False)
    assert got == tmp_path / "models" / CLIP_FILE
    assert got.read_bytes() == data
    assert cached.read_bytes() == b"stale"
    # The models dir copy now takes precedence over OpenAI's cache.
    assert weights.require("clip", settings) == got


# --------------------------------------------------------------------------------------------------------
# Downloads
# --------------------------------------------------------------------------------------------------------


def test_download_verifies_and_then_skips(
    settings: Settings, tmp_path: Path, server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, digest = _payload()
    server.files["/ViT-L-14.pt"] = data
    _publish(monkeypatch, "clip", sha256=digest)

    target = weights.download("clip", settings, url=server.url("/ViT-L-14.pt"), progress=False)
    assert target == tmp_path / "models" / CLIP_FILE  # parent dirs created
    assert target.read_bytes() == data
    assert _leftovers(target.parent) == []
    assert target.stat().st_mode & 0o777 == 0o644  # readable by other users/containers
    row = weights.status(settings)[0]
    assert row["present"] and row["sha256"] == digest and row["verified"] is True
    # The digest computed while streaming is cached, so status does not need to re-read the file.
    cache = json.loads((tmp_path / "home" / "cache" / "sha256.json").read_text())
    assert cache[str(target.resolve())]["sha256"] == digest

    assert server.requests == ["/ViT-L-14.pt"]
    assert weights.download("clip", settings, url=server.url("/ViT-L-14.pt"), progress=False) == target
    assert server.requests == ["/ViT-L-14.pt"]  # present and valid: no second request
    weights.download("clip", settings, url=server.url("/ViT-L-14.pt"), progress=False, force=True)
    assert len(server.requests) == 2


def test_download_checks_the_full_digest_not_the_prefix(
    settings: Settings, tmp_path: Path, server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    data, digest = _payload()
    # Bytes whose digest starts with the published prefix but is not the pinned digest are refused.
    _publish(monkeypatch, "unimatch", sha256_prefix=digest[:8], sha256=digest[:8] + "0" * 56)
    server.files["/unimatch.pth"] = data
    with pytest.raises(weights.ChecksumMismatchError):
        weights.download("unimatch", settings, url=server.url("/unimatch.pth"), progress=False)
    assert not (tmp_path / "models" / UNIMATCH_FILE).exists()
    _publish(monkeypatch, "unimatch", sha256_prefix=digest[:8], sha256=digest)
    target = weights.download("unimatch", settings, url=server.url("/unimatch.pth"), progress=False)
    assert target.read_bytes() == data
    assert weights.status(settings)[2]["verified"] is True


def test_download_with_wrong_digest_leaves_nothing(
    settings: Settings, tmp_path: Path, server: FileServer
) -> None:
    server.files["/fake.pth"] = os.urandom(200_000)  # not the official UniMatch checkpoint
    with pytest.raises(weights.ChecksumMismatchError, match=weights.get("unimatch").sha256):
        weights.download("unimatch", settings, url=server.url("/fake.pth"), progress=False)
    target = tmp_path / "models" / UNIMATCH_FILE
    assert not target.exists()
    assert _leftovers(target.parent) == []


def test_failed_download_keeps_the_previous_file(
    settings: Settings, tmp_path: Path, server: FileServer
) -> None:
    target = tmp_path / "models" / CLIP_FILE
    target.parent.mkdir(parents=True)
    target.write_bytes(b"old")
    server.files["/ViT-L-14.pt"] = os.urandom(100_000)
    # The present file does not verify, so a download is attempted; its bytes do not verify either.
    with pytest.raises(weights.ChecksumMismatchError):
        weights.download("clip", settings, url=server.url("/ViT-L-14.pt"), progress=False)
    assert target.read_bytes() == b"old"
    assert _leftovers(target.parent) == []


def test_truncated_download_leaves_nothing(settings: Settings, tmp_path: Path, server: FileServer) -> None:
    # The aesthetic file has no published digest, so only the length check can catch a dropped connection.
    server.files["/aesthetic.pth"] = os.urandom(500_000)
    server.truncate.add("/aesthetic.pth")
    with pytest.raises(weights.WeightsDownloadError, match="interrupted"):
        weights.download("aesthetic", settings, url=server.url("/aesthetic.pth"), progress=False)
    target = tmp_path / "models" / AESTHETIC_FILE
    assert not target.exists()
    assert _leftovers(target.parent) == []


def test_unpinned_file_needs_the_users_digest(
    settings: Settings, tmp_path: Path, server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Were no digest pinned for a file, nothing could verify a download of it: --sha256 is then required.
    _publish(monkeypatch, "aesthetic", sha256=None)
    data, digest = _payload(5000)
    server.files["/aesthetic.pth"] = data
    target = tmp_path / "models" / AESTHETIC_FILE
    with pytest.raises(weights.WeightsDownloadError, match="--sha256"):
        weights.download("aesthetic", settings, url=server.url("/aesthetic.pth"), progress=False)
    with pytest.raises(weights.WeightsDownloadError, match="--sha256"):
        weights.download("aesthetic", settings, progress=False)  # the publisher's URL: same rule
    assert server.requests == [] and not target.exists()
    with pytest.raises(weights.ChecksumMismatchError):
        weights.download(
            "aesthetic", settings, url=server.url("/aesthetic.pth"), sha256="ab" * 32, progress=False
        )
    assert not target.exists() and _leftovers(target.parent) == []
    with pytest.raises(ValueError, match="64 hex digits"):
        weights.download("aesthetic", settings, url=server.url("/aesthetic.pth"), sha256=digest[:8])
    got = weights.download(
        "aesthetic", settings, url=server.url("/aesthetic.pth"), sha256=digest.upper(), progress=False
    )
    assert got == target and target.read_bytes() == data


def test_user_digest_cannot_override_the_pinned_one(
    settings: Settings, tmp_path: Path, server: FileServer
) -> None:
    data, digest = _payload(5000)
    server.files["/aesthetic.pth"] = data
    with pytest.raises(weights.WeightsDownloadError, match="VIDSCORE_AESTHETIC_WEIGHTS"):
        weights.download("aesthetic", settings, url=server.url("/aesthetic.pth"), sha256=digest)
    assert server.requests == [] and not (tmp_path / "models" / AESTHETIC_FILE).exists()


def test_present_file_that_verifies_is_not_refetched(
    settings: Settings, tmp_path: Path, server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "models" / AESTHETIC_FILE
    target.parent.mkdir(parents=True)
    target.write_bytes(b"mine")
    _publish(monkeypatch, "aesthetic", sha256=hashlib.sha256(b"mine").hexdigest())
    server.files["/aesthetic.pth"] = b"theirs"
    assert weights.download("aesthetic", settings, url=server.url("/aesthetic.pth"), progress=False) == target
    assert server.requests == [] and target.read_bytes() == b"mine"
    # A present file that does not verify is replaced only by bytes that do.
    _publish(monkeypatch, "aesthetic", sha256=hashlib.sha256(b"theirs").hexdigest())
    weights.download("aesthetic", settings, url=server.url("/aesthetic.pth"), progress=False)
    assert target.read_bytes() == b"theirs"


def test_file_url_of_another_file_installs_nothing(settings: Settings, tmp_path: Path) -> None:
    other = tmp_path / "hostname"
    other.write_text("not a checkpoint\n")
    with pytest.raises(weights.ChecksumMismatchError, match=weights.get("aesthetic").sha256):
        weights.download("aesthetic", settings, url=other.as_uri(), progress=False)
    target = tmp_path / "models" / AESTHETIC_FILE
    assert not target.exists() and _leftovers(target.parent) == []


def test_missing_lists_every_absent_file(settings: Settings, tmp_path: Path) -> None:
    assert [m.name for m in weights.missing(["clip", "aesthetic", "clip"], settings)] == ["clip", "aesthetic"]
    with pytest.raises(weights.WeightsMissingError) as info:
        weights.require_all(scores.AESTHETIC.weights_for({}), settings, purpose="aesthetic scores")
    err = info.value
    assert [m.name for m in err.missing] == ["clip", "aesthetic"]
    text = str(err)
    assert "\n" not in text and "for aesthetic scores" in text
    for name in ("clip", "aesthetic"):
        assert str(weights.get(name).default_path(settings)) in text
        assert f"VIDSCORE_{name.upper()}_WEIGHTS" in text
        assert f"`vidscore weights download {name}`" in text
    assert "`vidscore weights download clip aesthetic`" in text
    assert scores.FLOW.weights_for({"flow": {"backend": "dis"}}) == () and scores.MATCHING.weights_for({}) == ("clip",)
    (tmp_path / "models" / "clip").mkdir(parents=True)
    weights.get("clip").default_path(settings).write_bytes(b"x")
    assert [m.name for m in weights.missing(weights.NAMES, settings)] == ["aesthetic", "unimatch"]


def test_download_installs_into_the_models_folder_even_with_an_override(
    tmp_path: Path, server: FileServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    override = tmp_path / "custom" / "deep" / "aes.pth"
    monkeypatch.setenv("VIDSCORE_AESTHETIC_WEIGHTS", str(override))
    server.files["/a"] = b"x" * 1000
    _publish(monkeypatch, "aesthetic", sha256=hashlib.sha256(b"x" * 1000).hexdigest(), expected_size=1000)
    settings = Settings.from_env()
    got = weights.download("aesthetic", settings, url=server.url("/a"), progress=True)
    assert got == tmp_path / "models" / AESTHETIC_FILE and got.read_bytes() == b"x" * 1000
    assert not override.parent.exists()
    assert "VIDSCORE_AESTHETIC_WEIGHTS is set" in (weights.override_note("aesthetic", settings) or "")


def test_unreachable_host_gives_a_manual_fallback(settings: Settings, tmp_path: Path) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago: connection refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(weights.WeightsDownloadError) as info:
        weights.download(
            "aesthetic", settings, url=f"http://127.0.0.1:{port}/a.pth", progress=False, timeout=5
        )
    text = str(info.value)
    target = tmp_path / "models" / AESTHETIC_FILE
    assert "could not reach 127.0.0.1" in text
    assert f"place it at {target}" in text
    assert not target.exists() and _leftovers(target.parent) == []


def test_http_error_status_is_reported(settings: Settings, server: FileServer) -> None:
    with pytest.raises(weights.WeightsDownloadError, match="HTTP 404"):
        weights.download("aesthetic", settings, url=server.url("/missing.pth"), progress=False)
