"""Ingestion: a meta file becomes batch manifests, and a manifest becomes `videos` rows."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from vidscore_core.ingest.meta import (
    batch_key,
    batch_key_prefix,
    check_batch_size,
    file_column_name,
    has_caption,
    meta_location,
    read_meta_chunks,
)
from vidscore_core.media.probe import probe_many
from vidscore_core.media.sources import safe_url
from vidscore_core.scoring import lineage
from vidscore_core.tables.store import TableStore

DEFAULT_BATCH_SIZE = 5000
CHUNK_ROWS = 100_000  # rows of the meta file read at a time (memory stays bounded at any length)
# Columns the manifest keeps by name; every other meta column travels in `extra` as JSON.
MANIFEST_COLUMNS = ("video_id", "path", "path_original", "text", "meta_row")
PROBE_FIELDS = (
    "exists", "size_bytes", "media_type", "num_frames", "fps", "width", "height", "duration_s", "codec", "error",
)  # fmt: skip
PENDING = -1  # a clip whose batch is not published yet
INGEST_CODE = ("vidscore_core.ingest.batches", "vidscore_core.media.probe", "vidscore_core.ingest.meta")


def _json_cell(value: object) -> object:
    if value is pd.NA or (isinstance(value, float) and value != value):  # an empty cell
        return None
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def manifest_frame(part: pd.DataFrame, meta_path: str | Path) -> pd.DataFrame:
    """The rows of one batch in manifest form: fixed columns plus `extra` (JSON of the rest).

    `path`, `path_original` and `meta_file` are what the public tables show: URLs without a query
    string or user:password@ (a presigned URL's signature and credential). The URL as written, which
    reading the clip needs, is kept in `read_path` (internal; `with_read_paths` puts it back).
    """
    other = [c for c in part.columns if c not in MANIFEST_COLUMNS]
    out = pd.DataFrame({c: part[c].to_numpy() if c in part.columns else None for c in MANIFEST_COLUMNS})
    out["text"] = [t if isinstance(t, str) else None for t in out["text"]]
    full = out["path"].tolist()
    out["path"] = [safe_url(p) for p in full]
    out["read_path"] = [p if p != shown else None for p, shown in zip(full, out["path"], strict=True)]
    out["path_original"] = [safe_url(p) for p in out["path_original"]]
    out["meta_file"] = safe_url(meta_location(meta_path))
    columns = {c: [_json_cell(v) for v in part[c].tolist()] for c in other}
    names = [file_column_name(c) for c in other]  # the file's own names (a user `video_id` too)
    out["extra"] = [
        json.dumps(dict(zip(names, values, strict=True)), ensure_ascii=False, default=str)
        for values in zip(*columns.values(), strict=True)
    ] if other else ["{}"] * len(part)  # fmt: skip
    return out


@dataclass
class ManifestSummary:
    """What ingesting a meta file did: its batches and what it found in the rows."""

    clips: dict[str, int] = field(default_factory=dict)  # batch key -> distinct clips in it
    rows: int = 0  # meta rows, every one kept
    repeated_rows: int = 0  # rows listing a path that an earlier row lists (another caption of the clip)
    repeated_paths: int = 0  # clips listed in more than one row
    no_caption: int = 0  # rows whose `text` is missing or blank (all of them when there is no `text`)

    def lines(self) -> list[str]:
        """The ingest summary's lines about the rows (none when every row is a distinct, captioned clip)."""
        out = []
        if self.repeated_rows:
            out.append(f"{self.repeated_paths} path(s) listed in more than one row ({self.repeated_rows} extra "
                       "row(s)): kept, one `videos` row per clip and one `matching_scores` row per caption")  # fmt: skip
        if self.no_caption:
            out.append(f"{self.no_caption} row(s) without a caption (`text` missing or blank): kept, their "
                       "`match` is NULL with the error 'no caption'")  # fmt: skip
        return out


def _no_caption(chunk: pd.DataFrame) -> int:
    if "text" not in chunk.columns:
        return len(chunk)
    return sum(not has_caption(t) for t in chunk["text"])


def write_manifests(meta_path: str | Path, store: TableStore, batch_size: int = DEFAULT_BATCH_SIZE) -> ManifestSummary:
    """Read a meta file, split it into batches of at most `batch_size` clips and publish one manifest
    per batch.

    Each manifest is a partition of the internal `manifests` table, so every machine that reads the
    tables (a shared folder, S3) sees the same batches. Every meta row is kept: a path listed again
    (another caption of the clip) goes to the batch of its first listing, so the clip is probed and
    decoded once (one `videos` row) and each of its captions is matched. The file is read in chunks
    and each batch is published as soon as it is full, so memory stays bounded whatever the file's
    length (what is kept for the whole file is each clip's batch); a later listing of a clip whose
    batch was already published is added to that manifest at the end.
    """
    meta_path = meta_location(meta_path)
    check_batch_size(batch_size)
    prefix = batch_key_prefix(meta_path)
    summary = ManifestSummary()
    batch_of: dict[int, int] = {}  # clip id (64-bit int) -> its batch index, PENDING until published
    repeated: set[int] = set()
    firsts: list[pd.DataFrame] = []  # first listings not yet published
    firsts_rows = 0
    more: list[pd.DataFrame] = []  # later listings of clips not yet published
    late: dict[int, list[pd.DataFrame]] = {}  # batch index -> later listings of its (published) clips

    def publish(part: pd.DataFrame) -> None:
        index = len(summary.clips)
        key = batch_key(prefix, index)  # the keys batch_keys gives: same file, same keys
        ids = {int(v, 16) for v in part["video_id"]}
        for i in ids:
            batch_of[i] = index
        waiting = pd.concat(more, ignore_index=True) if more else part.iloc[:0]
        mine = waiting["video_id"].map(lambda v: int(v, 16) in ids).to_numpy(dtype=bool)
        more[:] = [waiting[~mine]]
        rows = pd.concat([part, waiting[mine]], ignore_index=True).sort_values("meta_row", kind="stable")
        store.publish(manifest_frame(rows, meta_path), "manifests", key)
        summary.clips[key] = len(part)

    for chunk in read_meta_chunks(meta_path, chunk_rows=max(batch_size, CHUNK_ROWS)):
        summary.rows += len(chunk)
        summary.no_caption += _no_caption(chunk)
        ids = [int(v, 16) for v in chunk["video_id"]]
        first = np.zeros(len(ids), dtype=bool)
        published: dict[int, list[int]] = {}  # batch index -> rows of this chunk listing its clips again
        for row, i in enumerate(ids):
            if i not in batch_of:
                batch_of[i], first[row] = PENDING, True
            else:
                repeated.add(i)
                if batch_of[i] != PENDING:
                    published.setdefault(batch_of[i], []).append(row)
        for index, rows in published.items():
            late.setdefault(index, []).append(chunk.iloc[rows])
        pending = ~first & np.array([batch_of[i] == PENDING for i in ids], dtype=bool)
        summary.repeated_rows += int((~first).sum())
        more.append(chunk[pending])
        firsts.append(chunk[first])
        firsts_rows += int(first.sum())
        while firsts_rows >= batch_size:
            merged = pd.concat(firsts, ignore_index=True)
            publish(merged.iloc[:batch_size])
            rest = merged.iloc[batch_size:]
            firsts, firsts_rows = [rest], len(rest)
    if firsts_rows:
        publish(pd.concat(firsts, ignore_index=True))
    for index, parts in late.items():
        key = batch_key(prefix, index)
        added = manifest_frame(pd.concat(parts, ignore_index=True), meta_path)
        rows = pd.concat([store.read("manifests", [key]).drop(columns="batch"), added], ignore_index=True)
        store.publish(rows.sort_values("meta_row", kind="stable"), "manifests", key)
    summary.repeated_paths = len(repeated)
    return summary


def read_manifest(store: TableStore, batch: str) -> pd.DataFrame:
    if not store.has("manifests", batch):
        raise FileNotFoundError(
            f"no manifest for batch {batch!r} in {store.root}: ingest its meta file first (vidscore ingest META)"
        )
    return store.read("manifests", [batch]).sort_values("meta_row", kind="stable").reset_index(drop=True)


def probe_rows(
    manifest: pd.DataFrame, batch: str, *, workers: int = 4, run_id: str | None = None
) -> pd.DataFrame:
    """`videos` rows for a manifest: each clip's first listing, its file probed once."""
    rows = manifest.drop_duplicates("video_id", keep="first").reset_index(drop=True)
    # Isolated worker processes: a decoder that aborts, segfaults or hangs is that file's error.
    probes = probe_many(list(_read_paths(rows)), workers=max(1, workers))
    rows = rows.drop(columns="read_path", errors="ignore")  # internal: never in `videos`
    for name in PROBE_FIELDS:
        rows[name] = [p.get(name) for p in probes]
    rows["batch"] = batch
    rows["run_id"] = run_id or lineage.new_run_id()
    rows["code_version"] = lineage.code_version(*INGEST_CODE)
    rows["ingested_at"] = pd.Timestamp(lineage.utc_now())
    return rows


def _read_paths(rows: pd.DataFrame) -> pd.Series:
    """Each row's URL to read the clip from: `read_path` where the manifest has one, else `path`."""
    if "read_path" not in rows.columns:
        return rows["path"]
    return rows["read_path"].where(rows["read_path"].notna(), rows["path"])


def read_paths(store: TableStore, batch: str) -> dict[str, str]:
    """{video_id: URL as written} for the clips of `batch` that are read by another URL than their
    public `path` (a presigned URL's query string, which the public tables leave out)."""
    if not store.has("manifests", batch):
        return {}
    manifest = store.read("manifests", [batch], ["video_id", "read_path"]).dropna(subset=["read_path"])
    return dict(zip(manifest["video_id"], manifest["read_path"], strict=True))


def with_read_paths(store: TableStore, batch: str, videos: pd.DataFrame) -> pd.DataFrame:
    """`videos` rows of `batch` with `path` as the clip is read (`read_paths`): for the score steps,
    never stored."""
    signed = read_paths(store, batch)
    if not signed:
        return videos
    out = videos.copy()
    out["path"] = _read_paths(out.assign(read_path=out["video_id"].map(signed)))
    return out
