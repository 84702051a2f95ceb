"""Contact sheets: the middle frame of a few clips from the bottom, middle and top of a signal.

Clips are picked with SQL (lowest values, those nearest the median, highest values; for a
non-numeric signal, its most frequent values), their middle frames decoded in supervised worker
processes (media.isolation: a decoder that crashes or hangs costs one clip) and cached as small
JPEGs under `$VIDSCORE_HOME/reports/frames/`, keyed by path, size and modification time: each clip
is decoded once, whatever the number of reports. A clip that cannot be read is skipped with a note
(also cached, so it is not retried every hour), and the next candidate takes its place.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from vidscore_core.curation.corpus_report.numbers import Distribution
from vidscore_core.ingest.batches import read_paths
from vidscore_core.media.sources import is_remote
from vidscore_core.tables.schema import quote_ident
from vidscore_core.tables.store import TableStore

PER_ROW = 4  # clips shown per position
CANDIDATES = 2 * PER_ROW  # clips picked per position, so unreadable ones can be replaced
THUMB_HEIGHT = 144
DECODE_TIMEOUT_S = 60.0
CATEGORY_ROWS = 3  # non-numeric signals: one row per most frequent value


@dataclass
class Pick:
    position: str  # "bottom", "middle", "top", or a value of a non-numeric signal
    video_id: str
    batch: str
    value: float | str
    path: str = ""


@dataclass
class Tile:
    pick: Pick
    jpeg: bytes | None = None
    error: str | None = None


@dataclass
class ContactSheet:
    column: str
    rows: list[tuple[str, list[Tile]]]  # (position, the tiles shown)
    skipped: list[Tile] = field(default_factory=list)  # candidates that could not be read


def pick_clips(con: duckdb.DuckDBPyConnection, dist: Distribution) -> list[Pick]:
    """CANDIDATES clips per position of one signal (ties broken by video_id), with their paths."""
    signal = dist.signal
    table, col = quote_ident(signal.table), quote_ident(signal.column)
    base = f"SELECT video_id, batch, {col} AS value FROM {table} WHERE {col} IS NOT NULL"
    parts: list[tuple[str, str, list]] = []
    if signal.numeric and dist.scored:
        parts = [("bottom", f"{base} ORDER BY value ASC, video_id LIMIT {CANDIDATES}", []),
                 ("middle", f"{base} ORDER BY abs(value - ?), video_id LIMIT {CANDIDATES}", [dist.quantile(0.5)]),
                 ("top", f"{base} ORDER BY value DESC, video_id LIMIT {CANDIDATES}", [])]  # fmt: skip
    else:
        for value, _ in dist.values[:CATEGORY_ROWS]:
            query = f"{base} AND CAST({col} AS VARCHAR) = ? ORDER BY video_id LIMIT {CANDIDATES}"
            parts.append((value, query, [value]))
    picks = []
    for position, query, params in parts:
        picks += [Pick(position, v, b, value) for v, b, value in con.execute(query, params).fetchall()]
    return picks


def add_paths(con: duckdb.DuckDBPyConnection, picks: Sequence[Pick]) -> None:
    """Fill in each pick's path from `videos` (one query; the batch filter prunes the other files)."""
    if not picks:
        return
    rows = con.execute(
        "SELECT video_id, batch, path FROM videos WHERE batch IN (SELECT unnest(?)) AND video_id IN (SELECT unnest(?))",
        [sorted({p.batch for p in picks}), sorted({p.video_id for p in picks})],
    ).fetchall()
    paths = {(v, b): path for v, b, path in rows}
    for pick in picks:
        pick.path = paths.get((pick.video_id, pick.batch)) or ""


def build_sheets(
    con: duckdb.DuckDBPyConnection,
    dists: Sequence[Distribution],
    cache: FrameCache,
    *,
    workers: int = 2,
    store: TableStore | None = None,
) -> list[ContactSheet]:
    """A contact sheet per signal with values: PER_ROW readable clips per position where there are.
    With `store`, clips are read by the URL their manifest keeps (a presigned URL's query string)."""
    picked = {d.signal.column: pick_clips(con, d) for d in dists if d.scored}
    every = [p for picks in picked.values() for p in picks]
    add_paths(con, every)
    read_as: dict[str, str] = {}  # public path -> the URL to read it by, where they differ
    remote = [p for p in every if is_remote(p.path)]  # local clips: no manifest to read
    for batch in sorted({p.batch for p in remote}) if store is not None else []:
        signed = read_paths(store, batch)
        read_as.update({p.path: signed[p.video_id] for p in remote if p.batch == batch and p.video_id in signed})
    rows = {(column, position): _distinct_paths([p for p in picks if p.position == position])
            for column, picks in picked.items() for position in dict.fromkeys(p.position for p in picks)}  # fmt: skip
    frames: dict[str, tuple[bytes | None, str | None]] = {}  # path -> (JPEG, None) or (None, reason)
    # Rounds: decode what each row still lacks, next candidates first, until rows are full or out of clips.
    while True:
        wanted = []
        for row in rows.values():
            readable = sum(1 for p in row if frames.get(p.path, (None,))[0] is not None)
            wanted += [p.path for p in row if p.path not in frames][: max(0, PER_ROW - readable)]
        if not wanted:
            break
        frames.update(cache.middle_frames(wanted, workers=workers, read_as=read_as))
    sheets = {column: ContactSheet(column, []) for column in picked}
    for (column, position), row in rows.items():
        tiles = [Tile(p, *frames[p.path]) for p in row if p.path in frames]
        sheets[column].rows.append((position, [t for t in tiles if t.jpeg is not None][:PER_ROW]))
        sheets[column].skipped += [t for t in tiles if t.jpeg is None]
    return list(sheets.values())


def _distinct_paths(picks: list[Pick]) -> list[Pick]:
    """One pick per file (a clip ingested in two batches has a row in each)."""
    seen: set[str] = set()
    return [p for p in picks if not (p.path in seen or seen.add(p.path))]


class FrameCache:
    """Middle frames as small JPEGs (or the reason they could not be read) under `folder`."""

    def __init__(self, folder: Path, timeout_s: float = DECODE_TIMEOUT_S) -> None:
        self.folder = Path(folder)
        self.timeout_s = timeout_s

    def key(self, path: str) -> str:
        try:
            st = os.stat(path)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:  # not a local file (or gone): the path alone
            stamp = "-"
        return hashlib.sha256(f"{path}\0{stamp}".encode("utf-8", "surrogateescape")).hexdigest()[:32]

    def cached(self, path: str) -> tuple[bytes | None, str | None] | None:
        stem = self.folder / self.key(path)
        if stem.with_suffix(".jpg").is_file():
            return stem.with_suffix(".jpg").read_bytes(), None
        if stem.with_suffix(".txt").is_file():
            return None, stem.with_suffix(".txt").read_text(encoding="utf-8")
        return None

    def middle_frames(
        self, paths: Sequence[str], *, workers: int = 2, read_as: Mapping[str, str] | None = None
    ) -> dict[str, tuple[bytes | None, str | None]]:
        """path -> (JPEG, None) or (None, reason); decodes only what is not cached yet, each path by
        `read_as[path]` where given (its cache entry stays keyed by `path`)."""
        from vidscore_core.media.isolation import IsolatedPool

        out: dict[str, tuple[bytes | None, str | None]] = {}
        todo = []
        for path in dict.fromkeys(paths):
            hit = self.cached(path) if path else (None, "no path in `videos`")
            if hit is None:
                todo.append(path)
            else:
                out[path] = hit
        if not todo:
            return out
        self.folder.mkdir(parents=True, exist_ok=True)
        with IsolatedPool(MiddleFrame(self.timeout_s), workers=min(workers, len(todo)),
                          timeout_s=self.timeout_s + 30) as pool:  # fmt: skip
            for path in todo:
                pool.submit(path, (read_as or {}).get(path, path))
            while pool.pending:
                for outcome in pool.collect():
                    result = (outcome.value, None) if outcome.error is None else (None, outcome.error)
                    self._store(outcome.key, *result)
                    out[outcome.key] = result
        return out

    def _store(self, path: str, jpeg: bytes | None, error: str | None) -> None:
        stem = self.folder / self.key(path)
        if jpeg is not None:
            replace_file(stem.with_suffix(".jpg"), jpeg)
        else:
            replace_file(stem.with_suffix(".txt"), (error or "unreadable").encode())


def replace_file(path: Path, data: bytes) -> None:
    """Write `path` whole under a temporary name, then rename: a reader sees the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class MiddleFrame:
    """What a decode worker runs: the frame at 50 % of the clip (an image: itself) as a JPEG thumbnail."""

    def __init__(self, timeout_s: float, height: int = THUMB_HEIGHT) -> None:
        self.timeout_s = timeout_s
        self.height = height

    def __call__(self, path: str) -> bytes:
        from PIL import Image

        from vidscore_core.media.decode import read_frames

        frame = read_frames(path, points=(0.5,), timeout_s=self.timeout_s).frames[0]
        image = Image.fromarray(frame)
        width = max(1, round(image.width * self.height / max(1, image.height)))
        image = image.resize((width, self.height), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
        return buffer.getvalue()
