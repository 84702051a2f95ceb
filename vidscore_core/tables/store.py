"""The table store: one Parquet file per (table, partition), published atomically; DuckDB reads them.

Layout under the root (`Settings.tables_root`, a folder or `s3://bucket/prefix`):
`<table>/_schema.parquet` (zero rows, the table's current columns: it keeps an empty table
queryable and gives old files the columns added since) and `<table>/<key column>=<key>.parquet`.

A step writes a partition's whole file and publishes it in one step: on a POSIX file system
(local or shared) it writes a temporary name in the same folder, fsyncs and renames; on S3 the
object appears only when its upload completes. Whoever publishes last wins whole; a reader sees the
old file or the new one, never a mix, and no lock is ever taken. Queries run in a private
in-memory DuckDB over these files, so no process ever waits for another's database file.
"""

from __future__ import annotations

import json
import math
import os
import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from vidscore_core.tables import schema

_SCALAR_ARROW: dict[str, pa.DataType] = {
    "VARCHAR": pa.string(),
    "JSON": pa.string(),  # Parquet has no JSON type: text, cast back to JSON by the views
    "INTEGER": pa.int32(),
    "BIGINT": pa.int64(),
    "DOUBLE": pa.float64(),
    "FLOAT": pa.float32(),
    "BOOLEAN": pa.bool_(),
    "TIMESTAMPTZ": pa.timestamp("us", tz="UTC"),
}
SCHEMA_FILE = "_schema.parquet"
VIDEO_SCORES_TABLES = frozenset({"videos", *schema.SCORE_TABLES})


def arrow_type(duckdb_type: str) -> pa.DataType:
    """The Arrow type a column of the given DuckDB type is written as."""
    if duckdb_type.endswith("[]"):
        return pa.list_(arrow_type(duckdb_type[:-2]))
    return _SCALAR_ARROW[duckdb_type]


def arrow_schema(table: str) -> pa.Schema:
    return pa.schema([pa.field(c, arrow_type(t)) for c, t in schema.columns(table)])


def partition_file_name(table: str, key: str) -> str:
    """`batch=<key>.parquet`: keys are percent-encoded where needed, so none escapes its folder."""
    if not key:
        raise ValueError("partition key must be a non-empty string")
    name = quote(key, safe="-_.")
    if name.startswith("."):
        name = "%2E" + name[1:]
    return f"{schema.partition_key(table)}={name}.parquet"


def _key_of(table: str, file_name: str) -> str | None:
    prefix = schema.partition_key(table) + "="
    if not (file_name.startswith(prefix) and file_name.endswith(".parquet")):
        return None
    return unquote(file_name[len(prefix) : -len(".parquet")])


@dataclass(frozen=True)
class Published:
    """What `TableStore.publish` wrote."""

    table: str
    key: str
    path: str
    rows: int
    bytes: int


class TableStore:
    """The tables under `root` (a local folder, or `s3://bucket/prefix` with the usual AWS variables)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        root = str(root)
        self.is_s3 = root.startswith("s3://")
        if self.is_s3:
            self.root = root.rstrip("/")
            self.fs: pafs.FileSystem = _s3_filesystem()
            self._base = self.root[len("s3://") :]
        else:
            self.root = str(Path(root).expanduser().resolve())
            self.fs = pafs.LocalFileSystem()
            self._base = self.root
        self._laid_out: set[str] = set()  # tables whose _schema.parquet this store checked or wrote

    @classmethod
    def from_settings(cls, settings: Any) -> TableStore:
        return cls(settings.tables_root)

    def __repr__(self) -> str:
        return f"TableStore({self.root!r})"

    # -- layout --------------------------------------------------------------------------------

    def table_dir(self, table: str) -> str:
        """The table's folder as DuckDB and users name it (a path, or an s3:// URL)."""
        schema.columns(table)
        return f"{self.root}/{table}"

    def partition_path(self, table: str, key: str) -> str:
        return f"{self.table_dir(table)}/{partition_file_name(table, key)}"

    def _fs_path(self, table: str, name: str = "") -> str:
        return f"{self._base}/{table}" + (f"/{name}" if name else "")

    def ensure_layout(self, tables: Iterable[str] | None = None) -> None:
        """Write each table's `_schema.parquet` when missing or outdated. Idempotent and atomic;
        checked once per table and store, since every publish calls it."""
        for table in tables or schema.TABLES:
            if table in self._laid_out:
                continue
            if not self._schema_file_current(table):
                self._write(arrow_schema(table).empty_table(), table, SCHEMA_FILE)
            self._laid_out.add(table)

    def _schema_file_current(self, table: str) -> bool:
        try:
            return pq.read_schema(self._fs_path(table, SCHEMA_FILE), filesystem=self.fs).equals(arrow_schema(table))
        except (FileNotFoundError, OSError, pa.ArrowInvalid):
            return False

    # -- writing -------------------------------------------------------------------------------

    def publish(self, df: pd.DataFrame | pa.Table, table: str, key: str) -> Published:
        """Replace partition `key` of `table` with these rows, atomically (see the module docstring).

        The rows are typed after schema.py; a missing key column is filled in; rows of another
        partition or unknown columns are refused with ValueError before anything is written.
        """
        key_col = schema.partition_key(table)
        arrow = df if isinstance(df, pa.Table) else to_arrow(df, table, fill={key_col: key})
        if key_col not in arrow.column_names:
            arrow = arrow.append_column(key_col, pa.array([key] * arrow.num_rows, pa.string()))
        check_keys(arrow, table, key_col, key)
        arrow = _conform(arrow, table)
        self.ensure_layout([table])
        name = partition_file_name(table, key)
        size = self._write(arrow, table, name)
        return Published(table, key, self.partition_path(table, key), arrow.num_rows, size)

    def _write(self, arrow: pa.Table, table: str, name: str) -> int:
        final = self._fs_path(table, name)
        if self.is_s3:
            # An S3 object becomes visible only when its (multipart) upload completes: atomic.
            pq.write_table(arrow, final, filesystem=self.fs)
            return int(self.fs.get_file_info(final).size)
        return write_parquet(arrow, final).stat().st_size

    def delete(self, table: str, key: str) -> bool:
        """Remove partition `key` of `table`; False when it did not exist."""
        path = self._fs_path(table, partition_file_name(table, key))
        try:
            self.fs.delete_file(path)
        except FileNotFoundError:
            return False
        return True

    # -- reading -------------------------------------------------------------------------------

    def partition_files(self, table: str) -> dict[str, str]:
        """Published partitions of `table`: key -> file system path."""
        schema.columns(table)
        selector = pafs.FileSelector(self._fs_path(table), allow_not_found=True)
        found: dict[str, str] = {}
        for info in self.fs.get_file_info(selector):
            key = _key_of(table, info.base_name)
            if key is not None and info.type == pafs.FileType.File:
                found[key] = info.path
        return found

    def partitions(self, table: str) -> set[str]:
        return set(self.partition_files(table))

    def has(self, table: str, key: str) -> bool:
        info = self.fs.get_file_info(self._fs_path(table, partition_file_name(table, key)))
        return info.type == pafs.FileType.File

    def dataset(self, table: str, keys: Iterable[str] | None = None) -> pds.Dataset:
        """An Arrow dataset over the table's partitions (all, or `keys`), with the current columns."""
        files = self.partition_files(table)
        if keys is not None:
            files = {k: files[k] for k in dict.fromkeys(keys) if k in files}
        return pds.dataset(list(files.values()), schema=arrow_schema(table), format="parquet",
                           filesystem=self.fs)  # fmt: skip

    def read(self, table: str, keys: Iterable[str] | None = None, columns: Sequence[str] | None = None) -> pd.DataFrame:
        """Rows of `table` (partitions `keys`, or all) as a DataFrame."""
        return self.dataset(table, keys).to_table(columns=list(columns) if columns else None).to_pandas()

    def connect(self, keys: Iterable[str] | None = None, sql: str | None = None) -> duckdb.DuckDBPyConnection:
        """A private in-memory DuckDB with the tables as views (restricted to partitions `keys`): the
        tables `sql` names, or all. Nothing is locked or written: it reads the files as they are now.
        """
        keys = list(keys) if keys is not None else None
        con = duckdb.connect()
        set_utc(con)
        tables = _tables_in(sql) if sql is not None else set(schema.TABLES)
        for table in schema.TABLES:
            if table not in tables:
                continue  # listing a table's partitions costs a directory listing (an S3 request)
            part_keys = keys if schema.partition_key(table) == "batch" else None
            name = f"_arrow_{table}"
            con.register(name, self.dataset(table, part_keys))
            con.execute(f"CREATE VIEW {schema.quote_ident(table)} AS {schema.select_sql(table, name)}")
        if VIDEO_SCORES_TABLES <= tables:
            con.execute(schema.video_scores_sql())
        return con

    def query_df(
        self, sql: str, params: list[Any] | dict[str, Any] | None = None, *, keys: Iterable[str] | None = None
    ) -> pd.DataFrame:
        """Run a query over the tables (`?` or `$name` parameters); `keys` limits it to those batches."""
        con = self.connect(keys, sql)
        try:
            return con.execute(sql, params).df()
        finally:
            con.close()

    def upgrade_partitions(self, table: str) -> list[str]:
        """Re-publish the partitions written with an older column set, in the current one (new
        columns NULL); returns their keys. The views read every file with one schema: a file whose
        footer differs would fail them."""
        want = arrow_schema(table)
        upgraded = []
        for key, path in self.partition_files(table).items():
            if pq.read_schema(path, filesystem=self.fs).equals(want):
                continue
            rows = pds.dataset(path, schema=want, format="parquet", filesystem=self.fs).to_table()
            self.publish(rows, table, key)
            upgraded.append(key)
        return upgraded

    def partition_counts(self, table: str) -> dict[str, int]:
        """Rows per partition of `table`, from the Parquet footers (no data read)."""
        counts = {}
        for key, path in self.partition_files(table).items():
            counts[key] = pq.ParquetFile(self.fs.open_input_file(path)).metadata.num_rows
        return counts


# -- helpers -------------------------------------------------------------------------------------


def _tables_in(sql: str) -> set[str]:
    """The tables a query names (`video_scores` stands for the tables it joins)."""
    words = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", sql))
    found = {t for t in schema.TABLES if t in words}
    return found | VIDEO_SCORES_TABLES if "video_scores" in words else found


def _s3_filesystem() -> pafs.S3FileSystem:
    """S3 from the usual AWS variables; `AWS_ENDPOINT_URL` (or `_S3`) selects a compatible server."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    kwargs: dict[str, Any] = {}
    if endpoint:
        scheme, _, rest = endpoint.partition("://")
        kwargs.update(endpoint_override=rest or scheme, scheme=scheme if rest else "https")
        kwargs["force_virtual_addressing"] = False
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    return pafs.S3FileSystem(**kwargs)


def set_utc(con: duckdb.DuckDBPyConnection) -> None:
    # TIMESTAMPTZ values come back in the session zone: UTC makes results the same on every machine.
    try:
        con.execute("SET TimeZone = 'UTC'")
    except duckdb.Error:
        pass  # DuckDB built without ICU has no time zones beyond UTC anyway


def _conform(arrow: pa.Table, table: str) -> pa.Table:
    """The table's columns in schema order; missing ones as NULL (their file reads like the schema)."""
    want = arrow_schema(table)
    cols = [
        arrow.column(f.name).cast(f.type) if f.name in arrow.column_names else pa.nulls(arrow.num_rows, f.type)
        for f in want
    ]
    return pa.Table.from_arrays(cols, schema=want)


def check_keys(table: pa.Table, name: str, key: str, expected: str) -> None:
    if table.num_rows == 0:
        return
    if key not in table.column_names:
        raise ValueError(f"staged rows for {name} have no {key!r} column; expected {key} = {expected!r}")
    values = pc.unique(table.column(key)).to_pylist()
    wrong = [v for v in values if v != expected]
    if wrong:
        raise ValueError(
            f"refusing to publish {name} partition {expected!r}: rows have {key} = {wrong[:5]!r}; "
            "nothing was published"
        )


def to_arrow(df: pd.DataFrame, asset: str, fill: dict[str, Any] | None = None) -> pa.Table:
    """Convert a DataFrame to the Arrow types of `asset`'s table (ValueError on unknown columns)."""
    types = dict(schema.columns(asset))
    for column, value in (fill or {}).items():
        if column not in df.columns:
            df = df.assign(**{column: value})
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


def write_parquet(data: pd.DataFrame | pa.Table, path: str | os.PathLike[str]) -> Path:
    """Write a local Parquet file under a temporary name, fsync, then rename: it appears complete or
    not at all (the rename must never expose a file whose data is not on disk)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    table = data if isinstance(data, pa.Table) else pa.Table.from_pandas(data, preserve_index=False)
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # Arrow's messages name no file: say which one, and the system's reason
        raise _with_path(exc, path) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _with_path(exc: OSError, path: Path) -> OSError:
    """`exc` as "[Errno 28] No space left on device: '<path>'" (Arrow puts the errno in its text only)."""
    code = exc.errno
    if code is None:
        found = re.search(r"\[errno (\d+)\]", str(exc), re.IGNORECASE)
        code = int(found.group(1)) if found else None
    if code is None:
        return OSError(f"cannot write {path}: {exc}")
    return OSError(code, os.strerror(code), str(path))
