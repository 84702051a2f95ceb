"""Ingestion: a meta file becomes batch manifests, and a manifest becomes `videos` rows."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from vidscore_core.ingest.meta import (
    batch_key,
    batch_key_prefix,
    check_batch_size,
    file_column_name,
    read_meta_chunks,
)
from vidscore_core.media.probe import probe_many
from vidscore_core.scoring import lineage
from vidscore_core.tables.store import TableStore

DEFAULT_BATCH_SIZE = 5000
CHUNK_ROWS = 100_000  # rows of the meta file read at a time (memory stays bounded at any length)
# Columns the manifest keeps by name; every other meta column travels in `extra` as JSON.
MANIFEST_COLUMNS = ("video_id", "path", "path_original", "text", "meta_row")
PROBE_FIELDS = (
    "exists", "size_bytes", "media_type", "num_frames", "fps", "width", "height", "duration_s", "codec", "error",
)  # fmt: skip
INGEST_CODE = ("vidscore_core.ingest.batches", "vidscore_core.media.probe", "vidscore_core.ingest.meta")


def _json_cell(value: object) -> object:
    if value is pd.NA or (isinstance(value, float) and value != value):  # an empty cell
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
    columns = {c: [_json_cell(v) for v in part[c].tolist()] for c in other}
    names = [file_column_name(c) for c in other]  # the file's own names (a user `video_id` too)
    out["extra"] = [
        json.dumps(dict(zip(names, values, strict=True)), ensure_ascii=False, default=str)
        for values in zip(*columns.values(), strict=True)
    ] if other else ["{}"] * len(part)  # fmt: skip
    return out


def write_manifests(meta_path: str | Path, store: TableStore, batch_size: int = DEFAULT_BATCH_SIZE) -> dict[str, int]:
    """Read a meta file, split it into batches and publish one manifest per batch; returns rows per key.

    Each manifest is a partition of the internal `manifests` table, so every machine that reads the
    tables (a shared folder, S3) sees the same batches. The file is read in chunks and each batch is
    published as soon as it is full, so memory stays bounded whatever the file's length (what is kept
    for the whole file is the set of clip ids seen, for "one clip, one row").
    """
    meta_path = Path(meta_path)
    check_batch_size(batch_size)
    prefix = batch_key_prefix(meta_path)
    seen: set[int] = set()  # clip ids as 64-bit ints: a fraction of the memory of 10 M strings
    pending: list[pd.DataFrame] = []
    pending_rows = 0
    rows: dict[str, int] = {}

    def publish(part: pd.DataFrame) -> None:
        key = batch_key(prefix, len(rows))  # the keys batch_keys gives: same file, same keys
        rows[key] = store.publish(manifest_frame(part, meta_path), "manifests", key).rows

    for chunk in read_meta_chunks(meta_path, chunk_rows=max(batch_size, CHUNK_ROWS)):
        # One clip, one row: the first listing wins, later ones (in this chunk or earlier) are the same video.
        ids = [int(v, 16) for v in chunk["video_id"]]
        first = ~chunk["video_id"].duplicated().to_numpy()
        fresh = [keep and i not in seen for keep, i in zip(first, ids, strict=True)]
        chunk = chunk[fresh]
        seen.update(i for i, keep in zip(ids, fresh, strict=True) if keep)
        pending.append(chunk)
        pending_rows += len(chunk)
        while pending_rows >= batch_size:
            merged = pd.concat(pending, ignore_index=True)
            publish(merged.iloc[:batch_size])
            rest = merged.iloc[batch_size:]
            pending, pending_rows = [rest], len(rest)
    if pending_rows:
        publish(pd.concat(pending, ignore_index=True))
    return rows


def read_manifest(store: TableStore, batch: str) -> pd.DataFrame:
    if not store.has("manifests", batch):
        raise FileNotFoundError(
            f"no manifest for batch {batch!r} in {store.root}: ingest its meta file first (vidscore ingest META)"
        )
    return store.read("manifests", [batch]).sort_values("meta_row", kind="stable").reset_index(drop=True)


def probe_rows(
    manifest: pd.DataFrame, batch: str, *, workers: int = 4, run_id: str | None = None
) -> pd.DataFrame:
    """`videos` rows for a manifest: probe every file (threads: probing waits on I/O and decoders)."""
    # Isolated worker processes: a decoder that aborts, segfaults or hangs is that file's error.
    probes = probe_many(list(manifest["path"]), workers=max(1, workers))
    rows = manifest.copy()
    for field in PROBE_FIELDS:
        rows[field] = [p.get(field) for p in probes]
    rows["batch"] = batch
    rows["run_id"] = run_id or lineage.new_run_id()
    rows["code_version"] = lineage.code_version(*INGEST_CODE)
    rows["ingested_at"] = pd.Timestamp(lineage.utc_now())
    return rows
