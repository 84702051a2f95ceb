"""Asset checks of the batch-partitioned tables: exactly the batch's clips, unique, few errors, in range.

Checks are partitioned like their asset: a run checks exactly the batches it materialized
(`context.partition_keys`: one, or a backfill's range), reading only those partitions' files.
"""


import warnings
from collections.abc import Callable, Sequence

import dagster as dg
import pandas as pd

from vidscore_core.ingest.batches import read_manifest
from vidscore_core.tables.schema import quote_ident
from vidscore_core.tables.store import TableStore
from vidscore_dagster.defs.partitions import batches

WARN = dg.AssetCheckSeverity.WARN
ERROR = dg.AssetCheckSeverity.ERROR

# Partitioned asset checks are a preview feature of Dagster 1.13; the behaviour we rely on is tested.
warnings.filterwarnings("ignore", message=".*partitions_def.*asset check.*", category=Warning)
warnings.filterwarnings("ignore", message=".*partitions_def.*AssetCheckSpec.*", category=Warning)


def _store(context: dg.AssetCheckExecutionContext) -> TableStore:
    return context.resources.vidscore.store()


def checked_batches(context: dg.AssetCheckExecutionContext) -> list[str]:
    return list(context.partition_keys)


def _query(context: dg.AssetCheckExecutionContext, sql: str, params: list | None = None) -> pd.DataFrame:
    return _store(context).query_df(sql, params, keys=checked_batches(context))


def _expected_ids(context: dg.AssetCheckExecutionContext, table: str) -> set[str]:
    """The clips a table must cover: the manifests for `videos`, else the `videos` rows."""
    store = _store(context)
    keys = checked_batches(context)
    if table == "videos":
        return {vid for key in keys for vid in read_manifest(store, key)["video_id"]}
    return set(store.query_df("SELECT video_id FROM videos", keys=keys)["video_id"])


def _check(table: str, name: str, description: str, *, blocking: bool):
    return dg.asset_check(
        asset=table,
        name=name,
        blocking=blocking,
        partitions_def=batches,
        required_resource_keys={"vidscore"},
        description=description,
    )


def completeness_check(table: str, upstream: str) -> dg.AssetChecksDefinition:
    @_check(table, f"{table}_complete", f"Every clip of the batch ({upstream}) has a row in {table}, and no "
            "row belongs to a clip the batch no longer has.", blocking=True)  # fmt: skip
    def _complete(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        expected = _expected_ids(context, table)
        present = set(_query(context, f"SELECT DISTINCT video_id FROM {quote_ident(table)}")["video_id"])
        missing = sorted(expected - present)
        orphans = sorted(present - expected)
        return dg.AssetCheckResult(
            passed=not missing and not orphans,
            metadata={"batches": len(checked_batches(context)), "expected": len(expected),
                      "present": len(present & expected), "missing": len(missing), "orphans": len(orphans),
                      "missing_sample": dg.MetadataValue.json(missing[:20]),
                      "orphan_sample": dg.MetadataValue.json(orphans[:20])},
        )  # fmt: skip

    return _complete


def uniqueness_check(table: str, unique_by: tuple[str, ...] = ("video_id",)) -> dg.AssetChecksDefinition:
    keys = ", ".join(quote_ident(k) for k in (*unique_by, "batch"))

    @_check(table, f"{table}_unique", f"No ({', '.join(unique_by)}) appears twice in a batch of {table}.",
            blocking=True)  # fmt: skip
    def _unique(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        dupes = _query(
            context,
            f"SELECT {keys}, count(*) AS n FROM {quote_ident(table)} "
            f"GROUP BY {keys} HAVING count(*) > 1 ORDER BY n DESC LIMIT 20",
        )
        return dg.AssetCheckResult(
            passed=dupes.empty,
            metadata={"duplicated_ids": len(dupes), "sample": dg.MetadataValue.json(list(dupes["video_id"]))},
        )

    return _unique


def error_ratio_check(table: str, max_ratio: float = 0.1) -> dg.AssetChecksDefinition:
    @_check(table, f"{table}_error_ratio",
            f"At most {max_ratio:.0%} of the rows of a batch of {table} carry an error (warning).", blocking=False)  # fmt: skip
    def _error_ratio(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        row = _query(context, f"SELECT count(*) AS n, count(error) AS errors FROM {quote_ident(table)}").iloc[0]
        ratio = float(row["errors"]) / float(row["n"]) if row["n"] else 0.0
        return dg.AssetCheckResult(
            passed=ratio <= max_ratio,
            severity=WARN,
            metadata={"rows": int(row["n"]), "errors": int(row["errors"]), "error_ratio": ratio},
        )

    return _error_ratio


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

    @_check(table, name, description, blocking=blocking)
    def _values(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        params = params_fn(context) if params_fn else []
        bad = _query(context, f"SELECT video_id FROM {quote_ident(table)} WHERE NOT ({condition_sql})", params)
        return dg.AssetCheckResult(
            passed=bad.empty,
            severity=ERROR if blocking else WARN,
            metadata={"violations": len(bad), "sample": dg.MetadataValue.json(list(bad["video_id"][:20]))},
        )

    return _values


def standard_checks(
    table: str, upstream: str, max_error_ratio: float = 0.1, unique_by: Sequence[str] = ("video_id",)
) -> list[dg.AssetChecksDefinition]:
    return [
        completeness_check(table, upstream),
        uniqueness_check(table, tuple(unique_by)),
        error_ratio_check(table, max_error_ratio),
    ]
