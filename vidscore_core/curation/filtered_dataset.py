"""The filtered dataset over the DuckDB score tables, and its Open-Sora style export."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from vidscore_core.curation.filters import FilterSpec
from vidscore_core.scores import SCORES
from vidscore_core.tables.schema import quote_ident
from vidscore_core.tables.store import TableStore

# Named presets users can pick without typing thresholds, in the real models' units (README, "What
# the numbers mean"): Open-Sora's usual aesthetic cut-offs, and a curated training set.
PRESETS: dict[str, FilterSpec] = {
    "fair": FilterSpec(aesmin=5.5),
    "good": FilterSpec(aesmin=6.5),
    # Good-looking, moving but not shaky, captioned to match, at least 2 s at 8 fps, no near-duplicates.
    "curated": FilterSpec(aesmin=5.0, flowmin=0.5, flowmax=100.0, matchmin=20.0, fmin=16, dedup=True),
}

# Every score's value columns (the score, then e.g. camera motion's object_motion), as `filtered_videos` has them.
_VALUES = [name for s in SCORES for name, _ in s.value_columns]
_SCORE_SELECT = ", ".join(f"v.{quote_ident(name)}" for name in _VALUES)
# One row per (clip, caption) of `video_scores`: a clip listed with two captions is two rows, each kept
# by its own match; the same clip and caption ingested in two batches (two meta files) is one row.
CANDIDATES_SQL = (
    f"SELECT v.video_id, v.batch, v.path, v.text, v.meta_row, {_SCORE_SELECT}, v.extra\nFROM video_scores v\n"
    + """{dedup_join}
WHERE v.video_error IS NULL AND ({predicate})
QUALIFY row_number() OVER (PARTITION BY v.video_id, v.text ORDER BY v.batch, v.meta_row) = 1
ORDER BY v.batch, v.meta_row
"""
)


# Only `keep` from near_duplicates: its other columns (aes, width, …) would make the bounds ambiguous.
_DEDUP_JOIN = "LEFT JOIN (SELECT video_id, batch, keep FROM near_duplicates) n USING (video_id, batch)"
# Clips without a 50 % frame embedding have no group: nothing to deduplicate them against.
_DEDUP_CLAUSE = "coalesce(n.keep, TRUE)"


def _dedup_join(store: TableStore, spec: FilterSpec) -> str:
    if not spec.dedup:
        return ""
    if not store.partitions("near_duplicates"):
        raise ValueError("dedup asked for, but `near_duplicates` has not been materialized yet")
    return _DEDUP_JOIN


def select_rows(store: TableStore, spec: FilterSpec) -> pd.DataFrame:
    """Readable clips that pass `spec`: one row per (clip, caption), even if ingested in two batches."""
    predicate, params = spec.sql("v.")
    if spec.dedup:
        predicate = f"({predicate}) AND {_DEDUP_CLAUSE}"
    return store.query_df(CANDIDATES_SQL.format(predicate=predicate, dedup_join=_dedup_join(store, spec)), params)


def removed_by_bound(store: TableStore, spec: FilterSpec) -> dict[str, int]:
    """Readable (clip, caption) rows each bound of `spec` removes on its own ("aesmin 5.0" -> 3, "dedup" -> 1)."""
    clauses = [*spec.sql_clauses("v."), *([("dedup", "coalesce(v.keep, TRUE)", [])] if spec.dedup else [])]
    if not clauses:
        return {}
    counts = ", ".join(f"count(*) FILTER (WHERE NOT coalesce({c}, FALSE))" for _, c, _ in clauses)
    candidates = (
        f"SELECT v.*{', n.keep' if spec.dedup else ''} FROM video_scores v\n"
        f"{_dedup_join(store, spec)}\nWHERE v.video_error IS NULL\n"
        "QUALIFY row_number() OVER (PARTITION BY v.video_id, v.text ORDER BY v.batch, v.meta_row) = 1"
    )
    params = [p for _, _, ps in clauses for p in ps]
    row = store.query_df(f"SELECT {counts} FROM ({candidates}) v", params).iloc[0]
    return {label: int(n) for (label, _, _), n in zip(clauses, row.tolist(), strict=True)}


def source_counts(store: TableStore) -> dict[str, int]:
    counts = store.query_df(
        "SELECT (SELECT count(*) FROM videos) AS videos, "
        + ", ".join(f"(SELECT count({quote_ident(s.column)}) FROM {s.table}) AS {quote_ident(s.column)}"
                    for s in SCORES)  # fmt: skip
    ).iloc[0]
    return {k: int(v) for k, v in counts.items()}


def export_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """Open-Sora's meta format: path, text, the scores (aes, match, flow, …), then the input's other columns."""
    out = rows[["path", "text", *_VALUES]].reset_index(drop=True)
    extras = pd.DataFrame([json.loads(e) if isinstance(e, str) else {} for e in rows["extra"]])
    extras = extras[[c for c in extras.columns if c not in out.columns]]
    return pd.concat([out, extras], axis=1)


def write_exports(rows: pd.DataFrame, exports_dir: Path, preset: str) -> dict[str, Path]:
    from vidscore_core.ingest.meta import write_table

    frame = export_frame(rows)
    paths = {fmt: exports_dir / f"filtered_{preset}.{fmt}" for fmt in ("csv", "parquet")}
    for path in paths.values():
        write_table(frame, path)
    return paths
