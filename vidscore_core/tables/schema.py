"""Table definitions, in one place.

Tables are Parquet partitions (one file per table and batch) that DuckDB reads through views.
Everything derived from a table's definition (the Arrow schema files are written with, the views of
`vidscore.duckdb`, the `video_scores` join, identifier quoting) comes from the data below, so a new
column is added here and nowhere else. Old partition files lacking a new column read it as NULL.
"""

from __future__ import annotations

import hashlib
import json

from vidscore_core.scores import EMBEDDINGS, SCORES

# Bump when a change needs more than "add the missing columns".
SCHEMA_VERSION = 2

# Shared by every score table: which model/weights/params produced the row, and in which run.
LINEAGE_COLUMNS: list[tuple[str, str]] = [
    ("model", "VARCHAR"),
    ("weights_sha256", "VARCHAR"),
    ("params", "JSON"),
    ("run_id", "VARCHAR"),
    ("code_version", "VARCHAR"),
    ("scored_at", "TIMESTAMPTZ"),
]

_KEY_COLUMNS: list[tuple[str, str]] = [("video_id", "VARCHAR"), ("batch", "VARCHAR")]

TABLES: dict[str, list[tuple[str, str]]] = {
    # A batch of an ingested meta file, as the `meta_files` asset split it (internal: no view).
    "manifests": [
        ("video_id", "VARCHAR"),
        ("batch", "VARCHAR"),
        ("path", "VARCHAR"),
        ("path_original", "VARCHAR"),
        ("text", "VARCHAR"),
        ("meta_file", "VARCHAR"),
        ("meta_row", "INTEGER"),
        ("extra", "JSON"),
        # The URL the clip is read from when it is not `path`: a presigned URL with its query string
        # (signature, credential), kept here only, never in a public table (NULL otherwise).
        ("read_path", "VARCHAR"),
    ],
    "videos": [
        *_KEY_COLUMNS,
        ("path", "VARCHAR"),
        ("path_original", "VARCHAR"),
        ("text", "VARCHAR"),
        ("meta_file", "VARCHAR"),
        ("meta_row", "INTEGER"),
        ("extra", "JSON"),  # the meta file's other columns, kept so exports can reproduce the input rows
        ("exists", "BOOLEAN"),
        ("size_bytes", "BIGINT"),
        ("media_type", "VARCHAR"),
        ("num_frames", "INTEGER"),
        ("fps", "DOUBLE"),
        ("width", "INTEGER"),
        ("height", "INTEGER"),
        ("duration_s", "DOUBLE"),
        ("codec", "VARCHAR"),
        ("error", "VARCHAR"),
        ("run_id", "VARCHAR"),
        ("code_version", "VARCHAR"),
        ("ingested_at", "TIMESTAMPTZ"),
    ],
    # One row per sampled frame; a clip that failed to decode gets one row with a NULL embedding.
    EMBEDDINGS.table: [
        *_KEY_COLUMNS,
        ("frame_index", "INTEGER"),
        ("frame_point", "DOUBLE"),
        ("embedding", "FLOAT[]"),  # L2-normalised CLIP image embedding
        ("num_frames", "INTEGER"),
        ("error", "VARCHAR"),
        *LINEAGE_COLUMNS,
    ],
    # Partitioned by filter preset, not by batch: one preset's output spans all batches.
    "filtered_videos": [
        ("preset", "VARCHAR"),
        *_KEY_COLUMNS,
        ("path", "VARCHAR"),
        ("text", "VARCHAR"),  # one row per (clip, caption): a clip listed with two captions can be two rows
        ("meta_row", "INTEGER"),
        *(value for score in SCORES for value in score.value_columns),  # in registry order, as the exports
        ("extra", "JSON"),
        ("filter_spec", "JSON"),
        ("run_id", "VARCHAR"),
        ("code_version", "VARCHAR"),
        ("filtered_at", "TIMESTAMPTZ"),
    ],
}

# Near-duplicate groups over the whole corpus: one row per clip with a 50 % frame embedding. Not
# partitioned by batch (a group spans batches); its one partition is `scope` = "corpus".
TABLES["near_duplicates"] = [
    ("scope", "VARCHAR"),
    *_KEY_COLUMNS,
    ("group_id", "VARCHAR"),  # the smallest video_id of the group: stable across runs
    ("group_size", "INTEGER"),
    ("keep", "BOOLEAN"),  # one per group: the highest aes, ties by the smallest video_id
    ("width", "INTEGER"),
    ("height", "INTEGER"),
    ("aes", "DOUBLE"),
    ("threshold", "DOUBLE"),
    ("same_resolution", "BOOLEAN"),
    ("method", "VARCHAR"),
    *LINEAGE_COLUMNS,
]

# A score scored per meta row (matching: one row per caption of a clip) also keys its rows by the meta
# file's row, and says which caption it scored.
LISTING_COLUMNS: list[tuple[str, str]] = [("meta_row", "INTEGER"), ("text", "VARCHAR")]

# Each registered score's table: key, its columns, error, lineage (vidscore_core/scores.py).
for _score in SCORES:
    _listing = LISTING_COLUMNS if _score.per_row else []
    TABLES[_score.table] = [*_KEY_COLUMNS, *_listing, *_score.columns, ("error", "VARCHAR"), *LINEAGE_COLUMNS]

# The column whose value names a table's partition (what `TableStore.publish` replaces whole).
PARTITION_KEYS: dict[str, str] = {
    "manifests": "batch",
    "videos": "batch",
    EMBEDDINGS.table: "batch",
    "filtered_videos": "preset",
    "near_duplicates": "scope",
    **{score.table: "batch" for score in SCORES},
}
PARTITIONED_TABLES: frozenset[str] = frozenset(t for t, key in PARTITION_KEYS.items() if key == "batch")
# Tables users query (a view each in vidscore.duckdb); `manifests` is the pipeline's own input.
PUBLIC_TABLES: tuple[str, ...] = tuple(t for t in TABLES if t != "manifests")

# Score tables joined into `video_scores`: table -> (alias, its value columns (the score first), name of
# its error column there).
SCORE_TABLES: dict[str, tuple[str, tuple[str, ...], str]] = {
    s.table: (s.alias, tuple(name for name, _ in s.value_columns), s.error_column) for s in SCORES
}

# videos columns left out of the view (lineage of the ingest, not of interest per video).
_VIEW_SKIP = {"run_id", "code_version", "ingested_at"}

VIEW_COLUMNS: list[str] = [
    *("video_error" if c == "error" else c for c, _ in TABLES["videos"] if c not in _VIEW_SKIP),
    *(name for _, values, err in SCORE_TABLES.values() for name in (*values, err)),
]

_IDENTIFIERS: frozenset[str] = frozenset(
    {"video_scores", *TABLES, *VIEW_COLUMNS}
    | {c for cols in TABLES.values() for c, _ in cols}
)


def quote_ident(name: str) -> str:
    """Quote a table/column name for SQL; only names defined in this module are accepted.

    Why: identifiers cannot be bound as parameters, so they must never come from user input.
    """
    if name not in _IDENTIFIERS:
        raise ValueError(f"unknown identifier {name!r}: not a vidscore table or column")
    return '"' + name + '"'


def columns(table: str) -> list[tuple[str, str]]:
    """(name, DuckDB type) pairs of a vidscore table; ValueError for unknown tables."""
    if table not in TABLES:
        raise ValueError(f"unknown table {table!r}; known tables: {', '.join(sorted(TABLES))}")
    return TABLES[table]


def partition_key(table: str) -> str:
    """The column holding a table's partition key (`batch`, or `preset` for filtered_videos)."""
    columns(table)
    return PARTITION_KEYS[table]


def select_sql(table: str, source: str) -> str:
    """SELECT of `table` from a relation with its raw Parquet columns, in the table's column order.

    Parquet has no JSON type: JSON columns are stored as text and cast back here, so views and
    internal queries see the same types as the definition above.
    """
    cols = []
    for name, dtype in columns(table):
        q = quote_ident(name)
        cols.append(f"CAST({q} AS JSON) AS {q}" if dtype == "JSON" else q)
    return f"SELECT {', '.join(cols)} FROM {source}"


def video_scores_sql() -> str:
    """`video_scores`: one row per meta row of a clip in `videos` (a clip listed with N captions: N
    rows, each with its caption's `text`, `meta_row` and `match`; the clip's other scores repeat),
    with each score LEFT JOINed (NULL when not scored)."""
    q = quote_ident
    # The first per-row score table names the listing; other per-row tables join on its meta row.
    listing = next((s.alias for s in SCORES if s.per_row), None)
    per_listing = {name for name, _ in LISTING_COLUMNS} if listing else set()
    select = []
    for c, _ in TABLES["videos"]:
        if c in _VIEW_SKIP:
            continue
        if c == "error":
            select.append(f"v.{q(c)} AS {q('video_error')}")
        elif c in per_listing:  # the listing's own caption (not scored yet, or an older row: the clip's first)
            select.append(f"CASE WHEN {listing}.{q('meta_row')} IS NULL THEN v.{q(c)} ELSE {listing}.{q(c)} END AS {q(c)}")
        else:
            select.append(f"v.{q(c)}")
    joins = []
    for score in SCORES:  # aliases: declared, unique (scores.py)
        alias, values, err = SCORE_TABLES[score.table]
        select += [*(f"{alias}.{q(value)}" for value in values), f"{alias}.{q('error')} AS {q(err)}"]
        same_row = f" AND {alias}.{q('meta_row')} = {listing}.{q('meta_row')}" if score.per_row and alias != listing else ""
        joins.append(
            f"LEFT JOIN {q(score.table)} AS {alias} "
            f"ON {alias}.{q('video_id')} = v.{q('video_id')} AND {alias}.{q('batch')} = v.{q('batch')}{same_row}"
        )
    return (
        f"CREATE OR REPLACE VIEW {q('video_scores')} AS SELECT "
        + ", ".join(select)
        + f" FROM {q('videos')} AS v "
        + " ".join(joins)
    )


def fingerprint() -> str:
    """A hash of the whole definition: when it changes, the views are re-created."""
    blob = json.dumps([SCHEMA_VERSION, TABLES, PARTITION_KEYS, video_scores_sql()], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
