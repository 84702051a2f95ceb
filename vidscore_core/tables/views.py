"""`$VIDSCORE_HOME/vidscore.duckdb`: views over the tables' Parquet files, for any DuckDB client.

Two ways to read the same rows:

* Live views, stored in the file: they read `<table>/<key>=*/*.parquet` through a glob (hive style:
  a filter on the key opens one folder), so publishing a partition never touches this file and a
  session held for hours follows every publish. The file is written only when it is missing or the
  table definitions changed (`vidscore ingest`, `vidscore ui`, `vidscore views`, and best-effort by
  the `meta_files` step, which gives up at once when a user session holds the file). Scoring runs
  never open it.

  A partition's folder may hold older versions for a grace period (store.py); each live view keeps
  the rows of one file per folder, picked by a subquery over the same glob. DuckDB lists the files
  to scan before it runs that subquery, so the pick must be a file the scan listed: the newest file
  at least `SETTLE_S` old (publishing makes a file visible within that of its stamp, so it was
  listed), or, when the folder has none that old, its oldest file (if the scan missed it, it missed
  the whole folder: the partition did not exist yet). A republished partition thus shows its new
  rows after `SETTLE_S`; a first publish shows at once. The pick is a join on every row's file name:
  it costs DuckDB its footer-only `count(*)` and its pruning of `batch` filters to one folder.

* Pinned views (`pin_current_files`, what `vidscore sql` and `connect_read_only(snapshot=True)`
  use): temporary views, in front of the stored ones, that read the current version of every
  partition by name, listed once when they are made. No per-row pick: DuckDB counts rows from the
  footers and opens only the files a `batch` filter names. They show the tables as of that listing
  (every file in it stays readable for `GRACE_S`); making them again shows later publishes.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from vidscore_core.settings import Settings
from vidscore_core.tables import schema
from vidscore_core.tables.store import SETTLE_S, TableStore, set_utc

FINGERPRINT_TABLE = "vidscore_views"


class ViewsNotWritten(RuntimeError):
    """The views could not be written now; the tables themselves are fine."""


class ViewsBusyError(ViewsNotWritten):
    """Another process holds vidscore.duckdb open (DuckDB allows one process per file)."""


def _sql_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def table_source(store: TableStore, table: str) -> str:
    """A relation of `table`'s current rows (raw Parquet columns) as a SQL expression."""
    glob = _sql_literal(f"{store.table_dir(table)}/{schema.partition_key(table)}=*/*.parquet")
    # Every file has the table's current columns (publish conforms them; write_views upgrades older
    # ones), so no union_by_name: with it, DuckDB reads a footer at bind time and the data later.
    # Version names start with their UTC stamp: the newest settled one is the greatest such name.
    settled = f"strftime(timezone('UTC', now()) - INTERVAL {SETTLE_S * 1e6:.0f} MICROSECOND, '%Y%m%dT%H%M%S%fZ')"
    current = (
        f"SELECT coalesce(max(file) FILTER (WHERE parse_filename(file) <= {settled}), min(file)) "
        f"FROM glob({glob}) GROUP BY parse_dirpath(file)"
    )
    return (
        f"(SELECT * FROM read_parquet({glob}, hive_partitioning = true, hive_types_autocast = false) "
        f"WHERE filename IN ({current}))"
    )


def _read_files(files: str) -> str:
    """A relation of raw Parquet columns over a SQL list of file names (hive columns from the paths)."""
    return f"read_parquet({files}, hive_partitioning = true, hive_types_autocast = false)"


def pinned_source(store: TableStore, table: str) -> str:
    """A relation of `table`'s current rows as listed now: its current files, by name."""
    return _read_files("[" + ", ".join(_sql_literal(f) for f in store.current_files(table)) + "]")


def pin_current_files(con: duckdb.DuckDBPyConnection, store: TableStore) -> None:
    """Put temporary views in front of `con`'s stored ones (DuckDB resolves the temp schema first,
    `video_scores` included) that read the partitions current now; call again to see later publishes.

    Each list sits in a session variable: a view that spelled out 2,000 names would be parsed and
    bound again by every query (0.1-0.2 s), a variable is one value."""
    for table in schema.PUBLIC_TABLES:
        variable = f"vidscore_files_{table}"
        con.execute(f"SET VARIABLE {variable} = ?", [store.current_files(table)])
        con.execute(
            f"CREATE OR REPLACE TEMP VIEW {schema.quote_ident(table)} AS "
            f"{schema.select_sql(table, _read_files(f'getvariable({_sql_literal(variable)})'))}"
        )


def view_statements(store: TableStore) -> list[str]:
    """CREATE VIEW statements for every public table and `video_scores`."""
    statements = []
    for table in schema.PUBLIC_TABLES:
        statements.append(
            f"CREATE OR REPLACE VIEW {schema.quote_ident(table)} AS "
            f"{schema.select_sql(table, table_source(store, table))}"
        )
    statements.append(schema.video_scores_sql())
    return statements


def _wanted_fingerprint(store: TableStore) -> str:
    """The table definitions and the views' SQL (which names the tables' location)."""
    views = hashlib.sha256("\n".join(view_statements(store)).encode()).hexdigest()[:16]
    return f"{schema.fingerprint()}:{views}:{store.root}"


def _held_by_another(exc: duckdb.Error) -> bool:
    """DuckDB's error when another connection holds the file (its lock, or another configuration)."""
    text = str(exc).lower()
    return "lock" in text or "different configuration" in text


def _set_aside(db_path: Path) -> None:
    """Move an unreadable database (and its WAL) out of the way: it holds only views, rebuilt from
    the tables, but it is kept beside under a new name for whoever wants to look at it."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    for path in (db_path, db_path.with_name(db_path.name + ".wal")):
        if path.exists():
            path.replace(path.with_name(f"{path.name}.corrupt-{stamp}"))


def current(db_path: Path, store: TableStore) -> bool:
    """Whether the file's views are those of this code and table location (read-only look). An
    unreadable file is set aside (False); a file another process holds raises ViewsBusyError."""
    if not db_path.exists():
        return False
    try:
        con = duckdb.connect(str(db_path), read_only=True)
    except duckdb.Error as exc:
        if _held_by_another(exc):
            raise ViewsBusyError(str(exc)) from exc
        _set_aside(db_path)
        return False
    try:
        row = con.execute(f"SELECT value FROM {FINGERPRINT_TABLE} WHERE name = 'fingerprint'").fetchone()
        con.execute("SELECT sql FROM duckdb_views() WHERE NOT internal").fetchall()  # reads every view's block
    except duckdb.CatalogException:
        return False
    except duckdb.Error:
        con.close()
        _set_aside(db_path)
        return False
    finally:
        con.close()
    return bool(row) and row[0] == _wanted_fingerprint(store)


def write_views(settings: Settings) -> Path:
    """Create or refresh the views in `settings.db_path` when needed; returns the file's path.

    Raises ViewsBusyError at once (never waits) when another process holds the file.
    """
    store = TableStore.from_settings(settings)
    store.ensure_layout()
    db_path = settings.db_path
    if current(db_path, store):
        return db_path
    for table in schema.PUBLIC_TABLES:  # the definitions changed: bring older files to the new columns
        store.upgrade_partitions(table)
    db_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(db_path))
    except duckdb.IOException as exc:
        raise ViewsBusyError(str(exc)) from exc
    try:
        if store.is_s3:
            _load_httpfs(con)
        migrated = migrate_native_tables(con, store)
        con.execute("BEGIN TRANSACTION")
        for table in migrated:  # their rows are Parquet partitions now: the view takes the name
            con.execute(f"DROP TABLE {schema.quote_ident(table)}")
        con.execute("DROP TABLE IF EXISTS vidscore_meta")
        for statement in view_statements(store):
            con.execute(statement)
        con.execute(f"CREATE OR REPLACE TABLE {FINGERPRINT_TABLE} (name VARCHAR, value VARCHAR)")
        con.execute(
            f"INSERT INTO {FINGERPRINT_TABLE} VALUES ('fingerprint', ?), ('tables', ?)",
            [_wanted_fingerprint(store), store.root],
        )
        con.execute("COMMIT")
    finally:
        con.close()
    return db_path


def _load_httpfs(con: duckdb.DuckDBPyConnection) -> None:
    """Views over s3:// need DuckDB's httpfs extension (and credentials) in every client that reads them."""
    try:
        con.execute("LOAD httpfs")
        con.execute("CREATE OR REPLACE PERSISTENT SECRET vidscore_s3 (TYPE s3, PROVIDER credential_chain)")
    except duckdb.Error as exc:
        raise ViewsNotWritten(
            f"views over {'s3://'} tables need DuckDB's httpfs extension, which is not available here "
            f"({str(exc).splitlines()[0]}); `vidscore sql` reads the tables without it"
        ) from exc


def migrate_native_tables(con: duckdb.DuckDBPyConnection, store: TableStore) -> list[str]:
    """Publish the rows of a schema-1 database (native DuckDB tables) as Parquet partitions.

    Returns the tables copied; the caller drops them once every partition is published, so an
    interrupted migration simply runs again.
    """
    native = {
        name
        for (name,) in con.execute(
            "SELECT table_name FROM duckdb_tables() WHERE database_name = current_database() "
            "AND schema_name = 'main'"
        ).fetchall()
    }
    copied = []
    for table in schema.PUBLIC_TABLES:
        if table not in native:
            continue
        key = schema.partition_key(table)
        names = {c for c, _ in schema.columns(table)}
        have = [c for (c,) in con.execute(
            "SELECT column_name FROM duckdb_columns() WHERE table_name = ? AND schema_name = 'main'", [table]
        ).fetchall() if c in names]  # fmt: skip
        select = ", ".join(schema.quote_ident(c) for c in have)
        keys = [
            k
            for (k,) in con.execute(
                f"SELECT DISTINCT {schema.quote_ident(key)} FROM {schema.quote_ident(table)}"
            ).fetchall()
        ]
        for value in keys:
            if value is None:
                continue
            rows = con.execute(
                f"SELECT {select} FROM {schema.quote_ident(table)} WHERE {schema.quote_ident(key)} = ?",
                [value],
            ).df()
            store.publish(rows, table, str(value))
        copied.append(table)
    return copied


def connect_read_only(db_path: Path, store: TableStore, snapshot: bool = False) -> duckdb.DuckDBPyConnection:
    """Open the views read-only with external access off: only the tables' folder can be read.
    With `snapshot`, the session reads the partitions current now (`pin_current_files`).

    DuckDB's allowed directories allow writes too: callers that run a user's SQL must also refuse
    statements other than queries (`vidscore_core.tables.sql_output.check_query`).
    """
    con = duckdb.connect(str(db_path), read_only=True)
    try:
        set_utc(con)
        # A file's name never changes its content (store.py), so caching footers by name is safe.
        con.execute("SET parquet_metadata_cache = true")
        if snapshot:
            pin_current_files(con, store)
        if not store.is_s3:
            con.execute(f"SET allowed_directories = [{_sql_literal(store.root + '/')}]")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")  # no statement can loosen the settings above
    except BaseException:
        con.close()
        raise
    return con


def open_views(settings: Settings) -> duckdb.DuckDBPyConnection:
    """`connect_read_only` on `settings.db_path` with the partitions current now pinned (one query's
    session: `vidscore sql`), rebuilding the file first when it is unreadable (it holds only views).
    FileNotFoundError when there is none; ViewsBusyError when another process holds it."""
    db_path = settings.db_path
    if not db_path.exists():
        raise FileNotFoundError(db_path)
    store = TableStore.from_settings(settings)
    try:
        if current(db_path, store):
            return connect_read_only(db_path, store, snapshot=True)
    except ViewsBusyError:
        return connect_read_only(db_path, store, snapshot=True)  # another reader: share the file as it is
    write_views(settings)  # outdated or set aside as unreadable: written anew
    return connect_read_only(db_path, store, snapshot=True)
