"""Lineage values stamped on every score row: file digests, code versions, run ids, params."""

from __future__ import annotations

import hashlib
import json
import os
import sys
from datetime import timezone
from pathlib import Path

import pytest

from vidscore_core.scoring import lineage


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The default on-disk cache lives under $VIDSCORE_HOME; keep each test's cache private.
    monkeypatch.setenv("VIDSCORE_HOME", str(tmp_path / "home"))
    lineage.clear_sha256_memory_cache()


def _write(path: Path, data: bytes, mtime_ns: int | None = None) -> None:
    path.write_bytes(data)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


def test_file_sha256_is_the_real_digest(tmp_path: Path) -> None:
    f = tmp_path / "w.bin"
    data = os.urandom(3 * (1 << 20) + 17)  # spans several read chunks
    f.write_bytes(data)
    assert lineage.file_sha256(f) == hashlib.sha256(data).hexdigest()
    assert lineage.file_sha256(str(f)) == hashlib.sha256(data).hexdigest()


def test_file_sha256_cache_follows_file_changes(tmp_path: Path) -> None:
    f = tmp_path / "w.bin"
    _write(f, b"a" * 1000, mtime_ns=1_000_000_000_000_000_000)
    first = lineage.file_sha256(f)
    # Same size, new content and mtime (an in-place rewrite): the cached digest must not be reused.
    _write(f, b"b" * 1000, mtime_ns=1_000_000_001_000_000_000)
    assert lineage.file_sha256(f) == hashlib.sha256(b"b" * 1000).hexdigest() != first
    # Replaced by a new file of another size (an atomic download).
    other = tmp_path / "new.bin"
    other.write_bytes(b"c" * 10)
    os.replace(other, f)
    assert lineage.file_sha256(f) == hashlib.sha256(b"c" * 10).hexdigest()


def test_disk_cache_is_used_across_processes_and_survives_corruption(tmp_path: Path) -> None:
    f = tmp_path / "w.bin"
    f.write_bytes(b"payload")
    cache = tmp_path / "home" / "cache" / "sha256.json"
    digest = lineage.file_sha256(f)
    entry = json.loads(cache.read_text())[str(f.resolve())]
    assert entry["sha256"] == digest and entry["size"] == 7

    # A fresh process has an empty memory cache; it must trust the disk entry for an unchanged file.
    # Planting a fake digest proves the file was not re-read.
    entry["sha256"] = "f" * 64
    cache.write_text(json.dumps({str(f.resolve()): entry}))
    lineage.clear_sha256_memory_cache()
    assert lineage.file_sha256(f) == "f" * 64

    # disk_cache=False ignores it entirely.
    lineage.clear_sha256_memory_cache()
    assert lineage.file_sha256(f, disk_cache=False) == digest

    # A corrupt cache file is treated as empty and rewritten.
    lineage.clear_sha256_memory_cache()
    cache.write_text("{not json")
    assert lineage.file_sha256(f) == digest
    assert json.loads(cache.read_text())[str(f.resolve())]["sha256"] == digest


def test_file_sha256_missing_file_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        lineage.file_sha256(tmp_path / "absent.pth")


@pytest.fixture
def temp_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A throwaway module and package on sys.path, with a writer to change their source."""
    root = tmp_path / "src"
    (root / "vs_tmp_pkg").mkdir(parents=True)
    (root / "vs_tmp_mod.py").write_text("X = 1\n")
    (root / "vs_tmp_pkg" / "__init__.py").write_text("")
    (root / "vs_tmp_pkg" / "part.py").write_text("Y = 1\n")
    monkeypatch.syspath_prepend(str(root))
    yield root
    for name in ("vs_tmp_mod", "vs_tmp_pkg", "vs_tmp_pkg.part"):
        sys.modules.pop(name, None)


def test_code_version_is_stable_and_tracks_source(temp_module: Path) -> None:
    v1 = lineage.code_version("vs_tmp_mod")
    assert v1 == lineage.code_version("vs_tmp_mod")
    version, _, digest = v1.partition("+")
    assert version == lineage.package_version()
    assert len(digest) == 8 and int(digest, 16) >= 0

    (temp_module / "vs_tmp_mod.py").write_text("X = 2\n")
    v2 = lineage.code_version("vs_tmp_mod")
    assert v2 != v1
    # CRLF checkouts of the same code give the same version.
    (temp_module / "vs_tmp_mod.py").write_bytes(b"X = 2\r\n")
    assert lineage.code_version("vs_tmp_mod") == v2


def test_code_version_covers_every_file_of_a_package_and_ignores_argument_order(temp_module: Path) -> None:
    before = lineage.code_version("vs_tmp_pkg", "vs_tmp_mod")
    assert before == lineage.code_version("vs_tmp_mod", "vs_tmp_pkg")
    (temp_module / "vs_tmp_pkg" / "part.py").write_text("Y = 2\n")
    assert lineage.code_version("vs_tmp_mod", "vs_tmp_pkg") != before
    # A module added to the package after the first lookup changes the version too.
    mid = lineage.code_version("vs_tmp_pkg")
    (temp_module / "vs_tmp_pkg" / "extra.py").write_text("Z = 0\n")
    assert lineage.code_version("vs_tmp_pkg") != mid


def test_code_version_of_real_project_modules() -> None:
    v = lineage.code_version("vidscore_core.settings", "vidscore_core.scoring.lineage")
    assert v.startswith(lineage.package_version() + "+")


def test_code_version_rejects_unknown_modules(temp_module: Path) -> None:
    with pytest.raises(ModuleNotFoundError, match="vs_no_such_module"):
        lineage.code_version("vs_tmp_mod", "vs_no_such_module")
    with pytest.raises(ModuleNotFoundError, match="vs_no_such_pkg.sub"):
        lineage.code_version("vs_no_such_pkg.sub")


def test_run_id_time_and_params() -> None:
    a, b = lineage.new_run_id(), lineage.new_run_id()
    assert a != b and len(a) == 32 and int(a, 16) >= 0
    now = lineage.utc_now()
    assert now.tzinfo is not None and now.utcoffset() == timezone.utc.utcoffset(now)

    text = lineage.params_json(
        resolution=224, frame_points=(0.1, 0.5, 0.9), backend="decord", path=Path("/m")
    )
    assert text == '{"backend":"decord","frame_points":[0.1,0.5,0.9],"path":"/m","resolution":224}'
    assert lineage.params_json(b=1, a=2) == lineage.params_json(a=2, b=1)
    with pytest.raises(ValueError):
        lineage.params_json(x=float("nan"))  # not valid JSON for DuckDB
    with pytest.raises(TypeError):
        lineage.params_json(x=object())


def test_params_json_accepts_numpy_scalars() -> None:
    np = pytest.importorskip("numpy")
    assert lineage.params_json(bs=np.int64(4), sizes=np.array([320, 576])) == '{"bs":4,"sizes":[320,576]}'
