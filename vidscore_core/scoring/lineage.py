"""Lineage helpers: what produced a score (weights hash, code version, run id, params, time).

Every score row carries `weights_sha256`, `code_version`, `run_id`, `params` and `scored_at` (docs/ARCHITECTURE.md,
"Public contract"). This module computes those values without depending on Dagster, so the CLI and the
Dagster layer stamp rows the same way.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import json
import os
import tempfile
import threading
import uuid
from collections import OrderedDict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vidscore_core.settings import Settings

PACKAGE_NAME = "vidscore"
_CHUNK = 1 << 20
_CODE_HASH_CHARS = 8
_MEMO_SIZE = 128

_Key = tuple[str, int, int, int]
_memo: OrderedDict[_Key, str] = OrderedDict()
_memo_lock = threading.Lock()
_disk_lock = threading.Lock()


# --------------------------------------------------------------------------------------------------------
# File hashes
# --------------------------------------------------------------------------------------------------------


def sha256_cache_file(settings: Settings | None = None) -> Path:
    """Where the on-disk sha256 cache lives: `$VIDSCORE_HOME/cache/sha256.json`."""
    settings = settings or Settings.from_env()
    return settings.home / "cache" / "sha256.json"


def _stat_key(path: Path) -> _Key:
    # Size + mtime_ns + inode: an in-place rewrite changes mtime, an atomic replace (as downloads do)
    # changes the inode, so either invalidates the cached digest without rereading the file.
    st = path.stat()
    return (str(path), st.st_size, st.st_mtime_ns, st.st_ino)


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _memo_get(key: _Key) -> str | None:
    with _memo_lock:
        value = _memo.get(key)
        if value is not None:
            _memo.move_to_end(key)
        return value


def _memo_put(key: _Key, sha256: str) -> None:
    with _memo_lock:
        _memo[key] = sha256
        _memo.move_to_end(key)
        while len(_memo) > _MEMO_SIZE:
            _memo.popitem(last=False)


def _disk_entry_matches(entry: Any, key: _Key) -> str | None:
    if not isinstance(entry, dict):
        return None
    _, size, mtime_ns, ino = key
    if entry.get("size") == size and entry.get("mtime_ns") == mtime_ns and entry.get("ino") == ino:
        value = entry.get("sha256")
        if isinstance(value, str) and len(value) == 64:
            return value
    return None


def _read_disk_cache(cache_file: Path) -> dict[str, Any]:
    # The cache is an optimisation: a missing, unreadable or corrupt file is treated as empty.
    try:
        data = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_disk_cache(cache_file: Path, key: _Key, sha256: str) -> None:
    path, size, mtime_ns, ino = key
    with _disk_lock:
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            data = _read_disk_cache(cache_file)
            data[path] = {"size": size, "mtime_ns": mtime_ns, "ino": ino, "sha256": sha256}
            # Temp file + atomic rename: readers never see half a file. Two processes racing may drop one
            # entry (last writer wins); that only costs a re-hash later.
            fd, tmp = tempfile.mkstemp(dir=cache_file.parent, prefix=".sha256.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(data, fh, sort_keys=True, indent=0)
                os.replace(tmp, cache_file)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError:
            # A read-only home must not stop scoring; we simply hash again next time.
            pass


def file_sha256(
    path: str | os.PathLike[str], *, cache_file: Path | None = None, disk_cache: bool = True
) -> str:
    """The sha256 hex digest of a file, cached by (absolute path, size, mtime_ns, inode).

    Hashing a 900 MB checkpoint takes seconds, and every Dagster step runs in a fresh process, so the
    digest is kept in memory (LRU) and in `cache_file` (default `$VIDSCORE_HOME/cache/sha256.json`).
    Pass `disk_cache=False` to use only the in-process cache.
    """
    resolved = Path(path).expanduser().resolve()
    key = _stat_key(resolved)
    cached = _memo_get(key)
    if cached is not None:
        return cached
    cache_path = (cache_file or sha256_cache_file()) if disk_cache else None
    if cache_path is not None:
        cached = _disk_entry_matches(_read_disk_cache(cache_path).get(key[0]), key)
        if cached is not None:
            _memo_put(key, cached)
            return cached
    digest = _hash_file(resolved)
    # Only cache if the file did not change while we read it; otherwise the digest may be of neither.
    if _stat_key(resolved) == key:
        _memo_put(key, digest)
        if cache_path is not None:
            _write_disk_cache(cache_path, key, digest)
    return digest


def record_sha256(
    path: str | os.PathLike[str], sha256: str, *, cache_file: Path | None = None, disk_cache: bool = True
) -> None:
    """Store a digest computed elsewhere (e.g. while downloading) so the file is not read again."""
    resolved = Path(path).expanduser().resolve()
    key = _stat_key(resolved)
    _memo_put(key, sha256.lower())
    if disk_cache:
        _write_disk_cache(cache_file or sha256_cache_file(), key, sha256.lower())


def clear_sha256_memory_cache() -> None:
    """Forget in-process digests (the on-disk cache is untouched)."""
    with _memo_lock:
        _memo.clear()


# --------------------------------------------------------------------------------------------------------
# Code versions
# --------------------------------------------------------------------------------------------------------


def package_version() -> str:
    """The installed vidscore version, or `0+unknown` when running from a bare source tree."""
    try:
        return importlib.metadata.version(PACKAGE_NAME)
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


def _find_spec(name: str) -> importlib.machinery.ModuleSpec:
    try:
        spec = importlib.util.find_spec(name)
        if spec is None:
            # A module file created after the import system listed its directory is invisible until
            # the finders' caches are dropped (tests and hot-reloading dev servers hit this).
            importlib.invalidate_caches()
            spec = importlib.util.find_spec(name)
    except (ImportError, ValueError) as exc:
        raise ModuleNotFoundError(f"code_version: cannot import module {name!r}: {exc}", name=name) from exc
    if spec is None:
        raise ModuleNotFoundError(f"code_version: no module named {name!r}", name=name)
    return spec


def _module_sources(name: str) -> list[tuple[str, bytes]]:
    """(label, source bytes) pairs for a module, or for every .py file of a package."""
    spec = _find_spec(name)
    if spec.submodule_search_locations:
        # A package stands for all the code inside it (e.g. the UniMatch model split over several files).
        files: list[tuple[str, bytes]] = []
        for root in spec.submodule_search_locations:
            root_path = Path(root)
            for file in sorted(root_path.rglob("*.py")):
                if "__pycache__" in file.parts:
                    continue
                files.append((f"{name}:{file.relative_to(root_path).as_posix()}", file.read_bytes()))
        if files:
            return files
    origin = spec.origin
    if origin and origin not in ("built-in", "frozen") and Path(origin).is_file() and origin.endswith(".py"):
        return [(name, Path(origin).read_bytes())]
    source = spec.loader.get_source(name) if spec.loader and hasattr(spec.loader, "get_source") else None
    if source is None:
        raise ModuleNotFoundError(f"code_version: module {name!r} has no Python source to hash", name=name)
    return [(name, source.encode("utf-8"))]


def code_version(*modules: str) -> str:
    """A deterministic version of the code behind a score: `<package version>+<8 hex chars>`.

    The hash covers the source text of the named modules (all .py files for a package), so a scorer's
    rows can be detected as stale when its code changes, even without a release. Modules are looked up,
    not imported, so naming a heavy module is cheap. Raises ModuleNotFoundError for an unknown module.
    """
    digest = hashlib.sha256()
    for name in sorted(set(modules)):
        for label, source in _module_sources(name):
            # Normalise line endings so a Windows checkout of the same code gets the same version.
            text = source.replace(b"\r\n", b"\n")
            digest.update(label.encode("utf-8") + b"\0" + str(len(text)).encode() + b"\0" + text)
    return f"{package_version()}+{digest.hexdigest()[:_CODE_HASH_CHARS]}"


# --------------------------------------------------------------------------------------------------------
# Run ids, timestamps, params
# --------------------------------------------------------------------------------------------------------


def new_run_id() -> str:
    """A run id for scoring outside Dagster (Dagster runs use their own run id)."""
    return uuid.uuid4().hex


def utc_now() -> datetime:
    """The current time as a timezone-aware UTC datetime (for `scored_at`)."""
    return datetime.now(timezone.utc)


def _json_default(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if hasattr(value, "tolist") and callable(value.tolist):
        # numpy / torch scalars and arrays
        return value.tolist()
    raise TypeError(f"params_json: {type(value).__name__} is not JSON serializable")


def params_json(**params: Any) -> str:
    """Compact JSON with sorted keys, so equal params always give the same string (comparable in SQL)."""
    return json.dumps(params, sort_keys=True, separators=(",", ":"), default=_json_default, allow_nan=False)
