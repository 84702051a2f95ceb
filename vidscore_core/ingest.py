"""Ingestion: a meta file becomes batch manifests, and a manifest becomes `videos` rows."""

from __future__ import annotations

import json
import os
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from vidscore_core import lineage
from vidscore_core.media.probe import probe
from vidscore_core.meta import read_meta, split_batches
from vidscore_core.settings import Settings

MANIFESTS = "manifests"
DEFAULT_BATCH_SIZE = 5000
# Columns the manifest keeps by name; every other meta column travels in `extra` as JSON.
MANIFEST_COLUMNS = ("video_id", "path", "path_original", "text", "meta_row")
PROBE_FIELDS = (
    "exists", "size_bytes", "media_type", "num_frames", "fps", "width", "height", "duration_s", "codec", "error",
)  # fmt: skip
INGEST_CODE = ("vidscore_core.ingest", "vidscore_core.media.probe", "vidscore_core.meta")


def manifest_path(settings: Settings, batch: str) -> Path:
    return settings.staging_dir / MANIFESTS / f"{batch}.parquet"


def _json_cell(value: object) -> object:
    if isinstance(value, float) and value != value:  # NaN: an empty cell
        return None
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def manifest_frame(part: pd.DataFrame, meta_path: Path) -> pd.DataFrame:
    """The rows of one batch in manifest form: fixed columns plus `extra` (JSON of the rest)."""
    other = [c for c in part.columns if c not in MANIFEST_COLUMNS]
    out = pd.DataFrame({c: part[c].to_numpy() if c in part.columns else None for c in MANIFEST_COLUMNS})
    out["text"] = [t if isinstance(t, str) else None for t in out["text"]]
    out["meta_file"] = str(Path(meta_path).resolve())
    out["extra"] = [
        json.dumps({c: _json_cell(row[c]) for c in other}, ensure_ascii=False, default=str)
        for _, row in part[other].iterrows()
    ] if other else ["{}"] * len(part)  # fmt: skip
    return out


def write_parquet_atomic(df: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        df.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def stage_manifests(
    meta_path: str | Path, settings: Settings, batch_size: int = DEFAULT_BATCH_SIZE
) -> list[str]:
    """Read a meta file, split it into batches and stage one manifest per batch; returns the keys."""
    meta_path = Path(meta_path)
    df = read_meta(meta_path)
    keys = []
    for key, part in split_batches(df, meta_path, batch_size):
        write_parquet_atomic(manifest_frame(part, meta_path), manifest_path(settings, key))
        keys.append(key)
    return keys


def read_manifest(settings: Settings, batch: str) -> pd.DataFrame:
    path = manifest_path(settings, batch)
    if not path.exists():
        raise FileNotFoundError(
            f"no manifest for batch {batch!r} at {path}: ingest its meta file first (vidscore ingest META)"
        )
    return pd.read_parquet(path)


def probe_rows(
    manifest: pd.DataFrame, batch: str, *, workers: int = 4, run_id: str | None = None
) -> pd.DataFrame:
    """`videos` rows for a manifest: probe every file (threads: probing waits on I/O and decoders)."""
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        probes = list(pool.map(probe, manifest["path"]))
    rows = manifest.copy()
    for field in PROBE_FIELDS:
        rows[field] = [p.get(field) for p in probes]
    rows.insert(1, "batch", batch)
    rows["run_id"] = run_id or lineage.new_run_id()
    rows["code_version"] = lineage.code_version(*INGEST_CODE)
    rows["ingested_at"] = pd.Timestamp(lineage.utc_now())
    return rows
