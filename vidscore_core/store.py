"""The DuckDB store: stage results as Parquet, then commit them in one short transaction.

DuckDB allows one writer process at a time, and a read-only connection cannot open while a writer
holds the file. So every connection here is opened for one operation and closed right after, and
opening retries on lock errors with backoff (see DESIGN.md, "Storage: stage, then commit").
"""

from __future__ import annotations

import json
import math
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vidscore_core import schema
from vidscore_core.schema import quote_ident

_SCALAR_ARROW: dict[str, pa.DataType] = {
    "VARCHAR": pa.string(),
    "JSON": pa.string(),  # DuckDB parses the text on insert into a JSON column
    "INTEGER": pa.int32(),
    "BIGINT": pa.int64(),
    "DOUBLE": pa.float64(),
    "FLOAT": pa.float32(),
    "BOOLEAN": pa.bool_(),
    "TIMESTAMPTZ": pa.timestamp("us", tz="UTC"),
}

# Substrings of DuckDB errors that mean "someone else has the file right now": worth waiting for.
_LOCK_MESSAGES = (
    "could not set lock on file",
    "conflicting lock",
    "different configuration than existing connections",  # same process, read-only vs read-write
    "resource temporarily unavailable",
)


def arrow_type(duckdb_type: str) -> pa.DataType:
    """The Arrow type that inserts cleanly into a column of the given DuckDB type."""
    if duckdb_type.endswith("[]"):
        return pa.list_(arrow_type(duckdb_type[:-2]))
    return _SCALAR_ARROW[duckdb_type]


def staged_path(staging_dir: Path, asset: str, key: str, part: str | None = None) -> Path:
    """Where `stage` writes an asset's partition: `<staging_dir>/<asset>/<key>[@<part>].parquet`.

    Keys are percent-encoded where needed (`/`, quotes, `@`, a leading dot...), so no key can
    escape the directory and distinct (key, part) pairs never share a file.
    """
    schema.columns(asset)
    if not key:
        raise ValueError("partition key must be a non-empty string")
    name = _safe_name(key) + (f"@{_safe_name(part)}" if part else "")
    return Path(staging_dir) / asset / f"{name}.parquet"


def _safe_name(text: str) -> str:
    name = quote(text, safe="-_=.")
    return "%2E" + name[1:] if name.startswith(".") else name


def _is_lock_error(exc: BaseException) -> bool:
    return isinstance(exc, duckdb.Error) and any(m in str(exc).lower() for m in _LOCK_MESSAGES)


class Store:
    """The vidscore DuckDB database at `db_path` (usually `Settings.from_env().db_path`)."""

    def __init__(self, db_path: Path, *, lock_timeout_s: float = 120.0) -> None:
        self.db_path = Path(db_path)
        self.lock_timeout_s = lock_timeout_s
        self._schema_ok = False  # once ensure_schema succeeded, skip re-checking in this process

    # -- connections ---------------------------------------------------------------------------

    @contextmanager
    def _connect(self, *, read_only: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        con = self._retry_on_lock(lambda: duckdb.connect(str(self.db_path), read_only=read_only))
        try:
            yield con
        finally:
            con.close()

    def _retry_on_lock(self, open_fn: Callable[[], duckdb.DuckDBPyConnection]) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.lock_timeout_s
        delay = 0.02
        while True:
            try:
                return open_fn()
            except duckdb.Error as exc:
                if not _is_lock_error(exc):
                    raise
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"DuckDB file {self.db_path} stayed locked by another connection or process for "
                        f"{self.lock_timeout_s:g}s (close open SQL sessions on it); last error: {exc}"
                    ) from exc
                # Exponential backoff with jitter, so waiting processes do not retry in lockstep.
                time.sleep(min(left, delay * random.uniform(0.5, 1.0)))
                delay = min(delay * 2, 1.0)

    # -- schema --------------------------------------------------------------------------------

    def ensure_schema(self) -> None:
        """Create missing tables and the view, add columns missing from older tables. Idempotent."""
        if self._schema_ok:
            return
        if self.db_path.exists():
            # Cheap read-only check first: when nothing is missing, never take the write lock.
            with self._connect(read_only=True) as con:
                if not _schema_plan(con):
                    self._schema_ok = True
                    return
        self.db_path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect(read_only=False) as con:
            con.execute("BEGIN TRANSACTION")
            try:
                # Re-plan under the write lock: another process may have migrated meanwhile.
                for sql, params in _schema_plan(con):
                    con.execute(sql, params)
                con.execute("COMMIT")
            except BaseException:
                _rollback(con)
                raise
        self._schema_ok = True

    def schema_version(self) -> int | None:
        """The schema version recorded in the database (None before ensure_schema ran)."""
        if not self.db_path.exists():
            return None
        with self._connect(read_only=True) as con:
            meta = _read_meta(con)
        return int(meta["schema_version"]) if "schema_version" in meta else None

    # -- writing -------------------------------------------------------------------------------

    def stage(
        self, df: pd.DataFrame, asset: str, batch: str, staging_dir: Path, *, part: str | None = None
    ) -> Path:
        """Write `df` as the staged Parquet file of partition `batch` of `asset`; returns its path.

        The file is typed after schema.py (so it commits cleanly) and appears atomically: a reader
        sees either the previous file or the complete new one. A missing key column is filled in.
        `part` names one of several files of the partition (e.g. one per torchrun rank).
        """
        key = schema.partition_key(asset)
        if key not in df.columns:
            df = df.assign(**{key: batch})
        table = _to_arrow(df, asset)
        _check_keys(table, asset, key, batch)
        path = staged_path(staging_dir, asset, batch, part)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        try:
            pq.write_table(table, tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())  # the rename must never expose a file whose data is not on disk
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    def commit_partition(
        self,
        table: str,
        batch: str,
        parquet_path: Path | Sequence[Path],
        *,
        key_column: str | None = None,
    ) -> int:
        """Replace partition `batch` of `table` with the staged file(s); returns rows inserted.

        One transaction: DELETE the partition's rows, INSERT the file's rows BY NAME (columns the
        file lacks become NULL). Refused with ValueError, nothing changed, when the file has
        columns the table lacks or a row whose key is not `batch`. `key_column` defaults to the
        table's partition key from schema.py.
        """
        key = key_column or schema.partition_key(table)
        known = {c for c, _ in schema.columns(table)}
        if key not in known:
            raise ValueError(f"{key!r} is not a column of {table}")
        paths = [parquet_path] if isinstance(parquet_path, (str, os.PathLike)) else list(parquet_path)
        # Read before locking: the lock is held only for the delete+insert, and what is inserted
        # is exactly what was validated even if the staged file is replaced meanwhile.
        staged = _read_staged(paths)
        unknown = [c for c in staged.column_names if c not in known]
        if unknown:
            raise ValueError(f"staged file {paths[0]} has columns not in table {table}: {unknown}")
        _check_keys(staged, table, key, batch)
        self.ensure_schema()
        cols = ", ".join(quote_ident(c) for c in staged.column_names)
        with self._connect(read_only=False) as con:
            con.register("_vidscore_staged", staged)
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(f"DELETE FROM {quote_ident(table)} WHERE {quote_ident(key)} = ?", [batch])
                row = con.execute(
                    f"INSERT INTO {quote_ident(table)} BY NAME SELECT {cols} FROM _vidscore_staged"
                ).fetchone()
                con.execute("COMMIT")
            except BaseException:
                _rollback(con)
                raise
        return int(row[0]) if row else 0

    def delete_partition(self, table: str, batch: str) -> int:
        """Delete partition `batch` of `table`; returns rows deleted."""
        key = schema.partition_key(table)
        if not self.db_path.exists():
            return 0
        self.ensure_schema()
        with self._connect(read_only=False) as con:
            row = con.execute(
                f"DELETE FROM {quote_ident(table)} WHERE {quote_ident(key)} = ?", [batch]
            ).fetchone()
        return int(row[0]) if row else 0

    # -- reading -------------------------------------------------------------------------------

    def query_df(self, sql: str, params: list[Any] | dict[str, Any] | None = None) -> pd.DataFrame:
        """Run a read-only query (`?` or `$name` parameters); waits while a writer holds the file."""
        if not self.db_path.exists():
            self.ensure_schema()
        with self._connect(read_only=True) as con:
            _set_utc(con)
            return con.execute(sql, params).df()

    def partition_counts(self, table: str) -> dict[str, int]:
        """Rows per partition key of `table`."""
        key = quote_ident(schema.partition_key(table))
        df = self.query_df(f"SELECT {key} AS k, count(*) AS n FROM {quote_ident(table)} GROUP BY {key}")
        return {str(k): int(n) for k, n in zip(df["k"], df["n"], strict=True) if k is not None}

    def partitions(self, table: str) -> set[str]:
        """The partition keys present in `table`."""
        return set(self.partition_counts(table))


# -- helpers -------------------------------------------------------------------------------------


def _read_meta(con: duckdb.DuckDBPyConnection) -> dict[str, str]:
    exists = con.execute(
        "SELECT count(*) FROM duckdb_tables() WHERE database_name = current_database() "
        "AND schema_name = 'main' AND table_name = ?",
        [schema.META_TABLE],
    ).fetchone()
    if not exists or not exists[0]:
        return {}
    rows = con.execute(
        f"SELECT {quote_ident('key')}, {quote_ident('value')} FROM {quote_ident(schema.META_TABLE)}"
    )
    return {k: v for k, v in rows.fetchall()}


def _schema_plan(con: duckdb.DuckDBPyConnection) -> list[tuple[str, list[Any]]]:
    """Statements that bring the database to schema.py's definition (empty when it is current)."""
    found: dict[str, set[str]] = {}
    for table, column in con.execute(
        "SELECT table_name, column_name FROM duckdb_columns() "
        "WHERE database_name = current_database() AND schema_name = 'main'"
    ).fetchall():
        found.setdefault(table, set()).add(column)
    meta = _read_meta(con)
    plan: list[tuple[str, list[Any]]] = []
    if schema.META_TABLE not in found:
        plan.append((schema.create_meta_sql(), []))
    for table, cols in schema.TABLES.items():
        if table not in found:
            plan.append((schema.create_table_sql(table), []))
            continue
        for column, dtype in cols:
            if column not in found[table]:  # migration: older databases gain new columns as NULL
                plan.append(
                    (f"ALTER TABLE {quote_ident(table)} ADD COLUMN {quote_ident(column)} {dtype}", [])
                )
    want = {
        "schema_version": str(max(schema.SCHEMA_VERSION, int(meta.get("schema_version", 0)))),
        "schema_fingerprint": schema.fingerprint(),
    }
    if plan or "video_scores" not in found or meta.get("schema_fingerprint") != want["schema_fingerprint"]:
        plan.append((schema.video_scores_sql(), []))
    meta_t, k, v, at = (quote_ident(n) for n in (schema.META_TABLE, "key", "value", "updated_at"))
    for name, value in want.items():
        if meta.get(name) != value:
            plan.append((f"DELETE FROM {meta_t} WHERE {k} = ?", [name]))
            plan.append((f"INSERT INTO {meta_t} ({k}, {v}, {at}) VALUES (?, ?, now())", [name, value]))
    return plan


def _set_utc(con: duckdb.DuckDBPyConnection) -> None:
    # TIMESTAMPTZ values come back in the session zone: UTC makes results the same on every machine.
    try:
        con.execute("SET TimeZone = 'UTC'")
    except duckdb.Error:
        pass  # DuckDB built without ICU has no time zones beyond UTC anyway


def _rollback(con: duckdb.DuckDBPyConnection) -> None:
    # Best effort: when COMMIT itself failed there is no transaction left, and the original error matters.
    try:
        con.execute("ROLLBACK")
    except duckdb.Error:
        pass


def _check_keys(table: pa.Table, name: str, key: str, expected: str) -> None:
    if table.num_rows == 0:
        return
    if key not in table.column_names:
        raise ValueError(f"staged rows for {name} have no {key!r} column; expected {key} = {expected!r}")
    values = pc.unique(table.column(key)).to_pylist()
    wrong = [v for v in values if v != expected]
    if wrong:
        raise ValueError(
            f"refusing to commit {name} partition {expected!r}: rows have {key} = {wrong[:5]!r}; "
            "nothing was changed"
        )


def _read_staged(paths: list[Path]) -> pa.Table:
    if not paths:
        raise ValueError("no staged files given")
    tables = [pq.read_table(p) for p in paths]
    return pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]


def _to_arrow(df: pd.DataFrame, asset: str) -> pa.Table:
    """Convert a DataFrame to the Arrow types of `asset`'s table (ValueError on unknown columns)."""
    types = dict(schema.columns(asset))
    unknown = [c for c in df.columns if c not in types]
    if unknown:
        raise ValueError(f"columns not in table {asset}: {unknown}")
    arrays, fields = [], []
    for column in df.columns:
        dtype = types[column]
        try:
            arrays.append(_column_to_arrow(df[column], dtype))
        except (pa.ArrowException, ValueError, TypeError) as exc:
            raise ValueError(f"column {column!r} of {asset} cannot be stored as {dtype}: {exc}") from exc
        fields.append(pa.field(column, arrow_type(dtype)))
    return pa.Table.from_arrays(arrays, schema=pa.schema(fields))


def _column_to_arrow(values: pd.Series, dtype: str) -> pa.Array:
    if dtype == "JSON":
        values = values.map(_to_json).astype(object)
    elif dtype.endswith("[]"):
        values = values.map(_to_list).astype(object)
    elif dtype == "TIMESTAMPTZ":
        # Naive timestamps are taken as UTC; DuckDB keeps microseconds.
        values = pd.to_datetime(values, utc=True).astype("datetime64[us, UTC]")
    return pa.array(values, type=arrow_type(dtype), from_pandas=True)


def _is_missing(value: Any) -> bool:
    return (
        value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA or value is pd.NaT
    )


def _to_json(value: Any) -> str | None:
    if _is_missing(value):
        return None
    if isinstance(value, str):
        json.loads(value)  # already serialized: must be valid JSON, or DuckDB would refuse it at commit
        return value
    return json.dumps(value, ensure_ascii=False, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.generic, np.ndarray)):
        return value.tolist()
    if isinstance(value, (datetime, pd.Timestamp)):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in a JSON column")


def _to_list(value: Any) -> list[Any] | None:
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return list(value)
    if _is_missing(value):
        return None
    raise ValueError(f"expected a list or array, got {type(value).__name__}")


def utc_now() -> datetime:
    """A tz-aware UTC timestamp for `scored_at`/`ingested_at` columns."""
    return datetime.now(timezone.utc)
