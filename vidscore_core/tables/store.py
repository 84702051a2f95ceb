"""The table store: Parquet files per (table, partition), published atomically; DuckDB reads them.

Layout under the root (`Settings.tables_root`, a folder or `s3://bucket/prefix`), hive style so
DuckDB prunes a filter on the partition key to one folder without opening the others:

    <table>/<key column>=!schema/schema.parquet          zero rows, the table's current columns
    <table>/<key column>=<key>/<stamp>-<id>.parquet      one file per publish, never rewritten

A publish writes a new file under a new name (`<stamp>` is the UTC time it became visible, `<id>`
random): on a POSIX file system it writes a temporary name, fsyncs and renames; on S3 it uploads
to a staging key and copies it into place. A file's name never changes its content, so no reader
(or DuckDB's file and metadata caches) can see a footer of one version and data of another. The
current version of a partition is its newest file; older ones stay readable for `GRACE_S` after
being superseded, so a query that listed them still finds them, then `cleanup` removes them.
Deleting a partition publishes an empty tombstone version. No lock is ever taken, and queries run
in a private DuckDB over these files, so no process ever waits for another's database file.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import uuid
from collections.abc import Callable, Iterable, Sequence
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
SCHEMA_FOLDER_VALUE = "!schema"  # "!" is percent-encoded in every real key: no partition is named so
SCHEMA_FILE = "schema.parquet"
VIDEO_SCORES_TABLES = frozenset({"videos", *schema.SCORE_TABLES})
# A superseded version stays readable this long after its successor appeared: a query that listed it
# before then still finds it. Longer than any query; the disk cost is one old file per republish.
GRACE_S = 3600.0
# The views show a republished version once it is this old (views.py explains why); publishing makes
# a file visible within this of its stamp.
SETTLE_S = 1.0
_STAMP = "%Y%m%dT%H%M%S%fZ"
_VERSION_NAME = re.compile(r"(\d{8}T\d{12}Z)-([0-9a-f]{8})(-deleted)?\.parquet")


def arrow_type(duckdb_type: str) -> pa.DataType:
    """The Arrow type a column of the given DuckDB type is written as."""
    if duckdb_type.endswith("[]"):
        return pa.list_(arrow_type(duckdb_type[:-2]))
    return _SCALAR_ARROW[duckdb_type]


def arrow_schema(table: str) -> pa.Schema:
    return pa.schema([pa.field(c, arrow_type(t)) for c, t in schema.columns(table)])


def partition_folder_name(table: str, key: str) -> str:
    """`batch=<key>`: keys are percent-encoded where needed (DuckDB decodes hive values the same
    way), so none escapes its folder."""
    if not key:
        raise ValueError("partition key must be a non-empty string")
    name = quote(key, safe="-_.")
    if name.startswith("."):
        name = "%2E" + name[1:]
    return f"{schema.partition_key(table)}={name}"


def _key_of(table: str, folder_name: str) -> str | None:
    prefix = schema.partition_key(table) + "="
    if not folder_name.startswith(prefix) or folder_name == prefix + SCHEMA_FOLDER_VALUE:
        return None
    return unquote(folder_name[len(prefix) :])


def version_name(deleted: bool = False) -> str:
    """A new version's file name: the UTC time now, sortable, and a random id."""
    stamp = datetime.now(timezone.utc).strftime(_STAMP)
    return f"{stamp}-{uuid.uuid4().hex[:8]}{'-deleted' if deleted else ''}.parquet"


def _stamp_of(name: str) -> datetime:
    return datetime.strptime(name[: name.index("-")], _STAMP).replace(tzinfo=timezone.utc)


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
        """The current file of partition `key` (KeyError when it has none)."""
        return self._as_url(self.partition_files(table)[key])

    def _fs_path(self, table: str, name: str = "") -> str:
        return f"{self._base}/{table}" + (f"/{name}" if name else "")

    def _as_url(self, fs_path: str) -> str:
        return f"s3://{fs_path}" if self.is_s3 else fs_path

    def _schema_path(self, table: str) -> str:
        return self._fs_path(table, f"{schema.partition_key(table)}={SCHEMA_FOLDER_VALUE}/{SCHEMA_FILE}")

    def ensure_layout(self, tables: Iterable[str] | None = None) -> None:
        """Write each table's schema file when missing or outdated. Idempotent and atomic;
        checked once per table and store, since every publish calls it."""
        for table in tables or schema.TABLES:
            if table in self._laid_out:
                continue
            if not self.is_s3:
                _adopt_flat_files(Path(self._fs_path(table)), table)
            if not self._schema_file_current(table):
                self._write_file(arrow_schema(table).empty_table(), self._schema_path(table))
            self._laid_out.add(table)

    def _schema_file_current(self, table: str) -> bool:
        try:
            return pq.read_schema(self._schema_path(table), filesystem=self.fs).equals(arrow_schema(table))
        except (FileNotFoundError, OSError, pa.ArrowInvalid):
            return False

    # -- writing -------------------------------------------------------------------------------

    def publish(self, df: pd.DataFrame | pa.Table, table: str, key: str) -> Published:
        """Make these rows partition `key` of `table`, as a new version (see the module docstring).

        The rows are typed after schema.py; a missing key column is filled in; rows of another
        partition or unknown columns are refused with ValueError before anything is written.
        """
        key_col = schema.partition_key(table)
        arrow = df if isinstance(df, pa.Table) else to_arrow(df, table, fill={key_col: key})
        if key_col not in arrow.column_names:
            arrow = arrow.append_column(key_col, pa.array([key] * arrow.num_rows, pa.string()))
        check_keys(arrow, table, key_col, key)
        return self._publish_version(_conform(arrow, table), table, key)

    def _publish_version(self, arrow: pa.Table, table: str, key: str, deleted: bool = False) -> Published:
        self.ensure_layout([table])
        folder = self._fs_path(table, partition_folder_name(table, key))
        if self.is_s3:
            # Upload under a staging key, then copy into place with a fresh stamp: the object appears
            # whole when the copy completes, within SETTLE_S of its stamp.
            staging = f"{self._base}/_staging/{uuid.uuid4().hex}.parquet"
            pq.write_table(arrow, staging, filesystem=self.fs)
            try:
                final = f"{folder}/{version_name(deleted)}"
                self.fs.copy_file(staging, final)
            finally:
                self.fs.delete_file(staging)
            size = int(self.fs.get_file_info(final).size)
        else:
            path = write_parquet(arrow, Path(folder), name=lambda: version_name(deleted))
            final, size = str(path), path.stat().st_size
        self.cleanup(table, [key])
        return Published(table, key, self._as_url(final), arrow.num_rows, size)

    def _write_file(self, arrow: pa.Table, fs_path: str) -> None:
        if self.is_s3:
            pq.write_table(arrow, fs_path, filesystem=self.fs)  # an S3 object appears whole
        else:
            write_parquet(arrow, fs_path)

    def delete(self, table: str, key: str) -> bool:
        """Remove partition `key` of `table` (an empty tombstone version); False when it had none."""
        if key not in self.partition_files(table):
            return False
        self._publish_version(arrow_schema(table).empty_table(), table, key, deleted=True)
        return True

    def cleanup(self, table: str, keys: Iterable[str] | None = None, grace_s: float = GRACE_S) -> int:
        """Remove versions superseded more than `grace_s` ago (of partitions `keys`, or all), and
        partitions deleted that long ago; returns the number of files removed."""
        cutoff = datetime.now(timezone.utc).timestamp() - grace_s
        if keys is None:
            versions = self._versions(table)
        else:
            versions = {k: v for key in keys for k, v in self._versions(table, key).items()}
        removed = 0
        for key, names in versions.items():
            doomed = [old for old, new in itertools.pairwise(names) if _stamp_of(new).timestamp() < cutoff]
            if names[-1].endswith("-deleted.parquet") and _stamp_of(names[-1]).timestamp() < cutoff:
                doomed.append(names[-1])
            folder = self._fs_path(table, partition_folder_name(table, key))
            for name in doomed:
                try:
                    self.fs.delete_file(f"{folder}/{name}")
                    removed += 1
                except FileNotFoundError:
                    pass  # another publisher's cleanup got there first
            if len(doomed) == len(names) and not self.is_s3:
                try:
                    os.rmdir(folder)
                except OSError:
                    pass  # a new version arrived meanwhile
        return removed

    # -- reading -------------------------------------------------------------------------------

    def _versions(self, table: str, key: str | None = None) -> dict[str, list[str]]:
        """Every partition's (or partition `key`'s) version file names, oldest first, from one
        listing of the table's (or the partition's) folder."""
        schema.columns(table)
        base = self._fs_path(table)
        where = base if key is None else f"{base}/{partition_folder_name(table, key)}"
        selector = pafs.FileSelector(where, recursive=True, allow_not_found=True)
        found: dict[str, list[str]] = {}
        for info in self.fs.get_file_info(selector):
            parent, _, name = info.path[len(base) + 1 :].rpartition("/")
            if info.type != pafs.FileType.File or "/" in parent or not _VERSION_NAME.fullmatch(name):
                continue
            key = _key_of(table, parent)
            if key is not None:
                found.setdefault(key, []).append(name)
        return {key: sorted(names) for key, names in found.items()}

    def partition_files(self, table: str) -> dict[str, str]:
        """Published partitions of `table`: key -> file system path of its current version."""
        out = {}
        for key, names in self._versions(table).items():
            if not names[-1].endswith("-deleted.parquet"):
                out[key] = self._fs_path(table, f"{partition_folder_name(table, key)}/{names[-1]}")
        return out

    def current_files(self, table: str) -> list[str]:
        """What a reader of `table` opens now, as DuckDB names them (paths or s3:// URLs): each
        partition's current version, then the schema file (zero rows: an empty table still binds).
        DuckDB estimates a file list's rows from its first file: a zero-row file first makes every
        table look empty to its join planner, which then builds its hash tables on the big side.
        Every name stays readable for at least `GRACE_S`, so a query may list now and open later."""
        self.ensure_layout([table])
        current = [self._as_url(path) for _, path in sorted(self.partition_files(table).items())]
        return [*current, self._as_url(self._schema_path(table))]

    def partitions(self, table: str) -> set[str]:
        return set(self.partition_files(table))

    def has(self, table: str, key: str) -> bool:
        return key in self.partition_files(table)

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
        tables `sql` names, or all. Nothing is locked or written: it reads the current versions as
        they are now (one listing per table, files that stay readable while it runs).
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


def write_parquet(
    data: pd.DataFrame | pa.Table, path: str | os.PathLike[str], name: Callable[[], str] | None = None
) -> Path:
    """Write a local Parquet file under a temporary name, fsync, then rename: it appears complete or
    not at all (the rename must never expose a file whose data is not on disk). With `name`, `path`
    is the folder and `name()` gives the file's name just before the rename (a version's stamp)."""
    path = Path(path)
    folder = path if name else path.parent
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{uuid.uuid4().hex}.{os.getpid()}.tmp"
    table = data if isinstance(data, pa.Table) else pa.Table.from_pandas(data, preserve_index=False)
    try:
        pq.write_table(table, tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        final = folder / name() if name else path
        os.replace(tmp, final)
    except OSError as exc:  # Arrow's messages name no file: say which one, and the system's reason
        raise _with_path(exc, path) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return final


def _adopt_flat_files(table_dir: Path, table: str) -> None:
    """Move files of the earlier flat layout (`<table>/batch=<key>.parquet`, `_schema.parquet`) into
    partition folders as their first version; readers of that layout only ever listed them."""
    if not table_dir.is_dir():
        return
    prefix = schema.partition_key(table) + "="
    for entry in table_dir.iterdir():
        if entry.name == "_schema.parquet":
            entry.unlink(missing_ok=True)  # ensure_layout writes the new one
        elif entry.is_file() and entry.name.startswith(prefix) and entry.name.endswith(".parquet"):
            folder = table_dir / entry.name[: -len(".parquet")]
            folder.mkdir(exist_ok=True)
            os.replace(entry, folder / version_name())


def _with_path(exc: OSError, path: Path) -> OSError:
    """`exc` as "[Errno 28] No space left on device: '<path>'" (Arrow puts the errno in its text only)."""
    code = exc.errno
    if code is None:
        found = re.search(r"\[errno (\d+)\]", str(exc), re.IGNORECASE)
        code = int(found.group(1)) if found else None
    if code is None:
        return OSError(f"cannot write {path}: {exc}")
    return OSError(code, os.strerror(code), str(path))
