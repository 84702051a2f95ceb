"""Asset checks shared by the partitioned tables: completeness, uniqueness, error ratio, ranges."""

from collections.abc import Callable

import dagster as dg

from vidscore_core.ingest import read_manifest
from vidscore_core.schema import quote_ident

WARN = dg.AssetCheckSeverity.WARN
ERROR = dg.AssetCheckSeverity.ERROR


def checked_partition(context: dg.AssetCheckExecutionContext) -> str | None:
    """The batch the run materialized; None when the check runs on its own (then: all batches)."""
    return context.run.tags.get("dagster/partition")


def _where(batch: str | None, alias: str = "") -> tuple[str, list]:
    col = f"{alias}batch"
    return (f"WHERE {col} = ?", [batch]) if batch is not None else ("", [])


def _expected_ids(context: dg.AssetCheckExecutionContext, table: str, batch: str | None) -> set[str]:
    """The clips a table must cover: the batch's manifest for `videos`, else the batch's `videos` rows."""
    store = context.resources.duckdb.store()
    if table == "videos":
        settings = context.resources.vidscore.settings()
        keys = [batch] if batch is not None else sorted(store.partitions("videos"))
        return {vid for key in keys for vid in read_manifest(settings, key)["video_id"]}
    where, params = _where(batch)
    return set(store.query_df(f"SELECT video_id FROM videos {where}", params)["video_id"])


def completeness_check(table: str, upstream: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=table,
        name=f"{table}_complete",
        blocking=True,
        required_resource_keys={"duckdb", "vidscore"},
        description=f"Every clip of the batch ({upstream}) has a row in {table}.",
    )
    def _check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        batch = checked_partition(context)
        expected = _expected_ids(context, table, batch)
        where, params = _where(batch)
        present = set(
            context.resources.duckdb.store().query_df(
                f"SELECT DISTINCT video_id FROM {quote_ident(table)} {where}", params
            )["video_id"]
        )
        if expected is None:
            return dg.AssetCheckResult(
                passed=True, metadata={"rows": len(present), "note": "no batch to compare"}
            )
        missing = sorted(expected - present)
        return dg.AssetCheckResult(
            passed=not missing,
            metadata={"expected": len(expected), "present": len(present & expected), "missing": len(missing),
                      "missing_sample": dg.MetadataValue.json(missing[:20])},
        )  # fmt: skip

    return _check


def uniqueness_check(table: str, unique_by: tuple[str, ...] = ("video_id",)) -> dg.AssetChecksDefinition:
    keys = ", ".join(quote_ident(k) for k in (*unique_by, "batch"))

    @dg.asset_check(
        asset=table,
        name=f"{table}_unique",
        blocking=True,
        required_resource_keys={"duckdb"},
        description=f"No ({', '.join(unique_by)}) appears twice in a batch of {table}.",
    )
    def _check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        batch = checked_partition(context)
        where, params = _where(batch)
        dupes = context.resources.duckdb.store().query_df(
            f"SELECT {keys}, count(*) AS n FROM {quote_ident(table)} {where} "
            f"GROUP BY {keys} HAVING count(*) > 1 ORDER BY n DESC LIMIT 20",
            params,
        )
        return dg.AssetCheckResult(
            passed=dupes.empty,
            metadata={"duplicated_ids": len(dupes), "sample": dg.MetadataValue.json(list(dupes["video_id"]))},
        )

    return _check


def error_ratio_check(table: str, max_ratio: float = 0.1) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=table,
        name=f"{table}_error_ratio",
        required_resource_keys={"duckdb"},
        description=f"At most {max_ratio:.0%} of the rows of a batch of {table} carry an error (warning).",
    )
    def _check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        batch = checked_partition(context)
        where, params = _where(batch)
        row = (
            context.resources.duckdb.store()
            .query_df(
                f"SELECT count(*) AS n, count(error) AS errors FROM {quote_ident(table)} {where}", params
            )
            .iloc[0]
        )
        ratio = float(row["errors"]) / float(row["n"]) if row["n"] else 0.0
        return dg.AssetCheckResult(
            passed=ratio <= max_ratio,
            severity=WARN,
            metadata={"rows": int(row["n"]), "errors": int(row["errors"]), "error_ratio": ratio},
        )

    return _check


def value_check(
    table: str,
    name: str,
    condition_sql: str,
    description: str,
    *,
    blocking: bool,
    params_fn: Callable[[dg.AssetCheckExecutionContext], list] | None = None,
) -> dg.AssetChecksDefinition:
    """Rows whose score violates `condition_sql` (a SQL predicate over the table) fail the check."""

    @dg.asset_check(
        asset=table,
        name=name,
        blocking=blocking,
        required_resource_keys={"duckdb", "vidscore"},
        description=description,
    )
    def _check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        batch = checked_partition(context)
        where, params = _where(batch)
        extra = params_fn(context) if params_fn else []
        clause = f"{where} AND" if where else "WHERE"
        bad = context.resources.duckdb.store().query_df(
            f"SELECT video_id FROM {quote_ident(table)} {clause} NOT ({condition_sql})", params + extra
        )
        return dg.AssetCheckResult(
            passed=bad.empty,
            severity=ERROR if blocking else WARN,
            metadata={"violations": len(bad), "sample": dg.MetadataValue.json(list(bad["video_id"][:20]))},
        )

    return _check


def standard_checks(
    table: str, upstream: str, max_error_ratio: float = 0.1, unique_by: tuple[str, ...] = ("video_id",)
) -> list[dg.AssetChecksDefinition]:
    return [
        completeness_check(table, upstream),
        uniqueness_check(table, unique_by),
        error_ratio_check(table, max_error_ratio),
    ]
