"""Asset checks of the batch-partitioned tables: exactly the batch's clips, unique, few errors, in range.

Checks are partitioned like their asset: a run checks exactly the batches it materialized
(`context.partition_keys`: one, or a backfill's range), reading only those partitions' files.
"""


import warnings
from collections.abc import Callable, Sequence

import dagster as dg
import pandas as pd

from vidscore_core.ingest.batches import read_manifest
from vidscore_core.settings import Settings
from vidscore_core.tables.schema import quote_ident
from vidscore_dagster.defs.partitions import batches
from vidscore_dagster.defs.resources import VidscoreSettings

WARN = dg.AssetCheckSeverity.WARN
ERROR = dg.AssetCheckSeverity.ERROR

# Partitioned asset checks are a preview feature of Dagster 1.13; the behaviour we rely on is tested.
warnings.filterwarnings("ignore", message=".*partitions_def.*asset check.*", category=Warning)
warnings.filterwarnings("ignore", message=".*partitions_def.*AssetCheckSpec.*", category=Warning)


class Checked:
    """The batches a check run covers (`context.partition_keys`) and the tables it reads them from."""

    def __init__(self, context: dg.AssetCheckExecutionContext, vidscore: VidscoreSettings) -> None:
        self.settings = vidscore.settings()
        self.store = vidscore.store()
        self.keys = list(context.partition_keys)

    def query(self, sql: str, params: list | None = None) -> pd.DataFrame:
        return self.store.query_df(sql, params, keys=self.keys)

    def expected_ids(self, table: str) -> set[str]:
        """The clips a table must cover: the manifests for `videos`, else the `videos` rows."""
        if table == "videos":
            return {vid for key in self.keys for vid in read_manifest(self.store, key)["video_id"]}
        return set(self.query("SELECT video_id FROM videos")["video_id"])


def _check(table: str, name: str, description: str, *, blocking: bool):
    return dg.asset_check(asset=table, name=name, blocking=blocking, partitions_def=batches, description=description)


def completeness_check(table: str, upstream: str) -> dg.AssetChecksDefinition:
    @_check(table, f"{table}_complete", f"Every clip of the batch ({upstream}) has a row in {table}, and no "
            "row belongs to a clip the batch no longer has.", blocking=True)  # fmt: skip
    def _complete(context: dg.AssetCheckExecutionContext, vidscore: VidscoreSettings) -> dg.AssetCheckResult:
        on = Checked(context, vidscore)
        expected = on.expected_ids(table)
        present = set(on.query(f"SELECT DISTINCT video_id FROM {quote_ident(table)}")["video_id"])
        missing = sorted(expected - present)
        orphans = sorted(present - expected)
        return dg.AssetCheckResult(
            passed=not missing and not orphans,
            metadata={"batches": len(on.keys), "expected": len(expected),
                      "present": len(present & expected), "missing": len(missing), "orphans": len(orphans),
                      "missing_sample": dg.MetadataValue.json(missing[:20]),
                      "orphan_sample": dg.MetadataValue.json(orphans[:20])},
        )  # fmt: skip

    return _complete


def uniqueness_check(table: str, unique_by: tuple[str, ...] = ("video_id",)) -> dg.AssetChecksDefinition:
    keys = ", ".join(quote_ident(k) for k in (*unique_by, "batch"))

    @_check(table, f"{table}_unique", f"No ({', '.join(unique_by)}) appears twice in a batch of {table}.",
            blocking=True)  # fmt: skip
    def _unique(context: dg.AssetCheckExecutionContext, vidscore: VidscoreSettings) -> dg.AssetCheckResult:
        dupes = Checked(context, vidscore).query(
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
    def _error_ratio(context: dg.AssetCheckExecutionContext, vidscore: VidscoreSettings) -> dg.AssetCheckResult:
        row = Checked(context, vidscore).query(f"SELECT count(*) AS n, count(error) AS errors FROM {quote_ident(table)}").iloc[0]
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
    params_fn: Callable[[Settings], list] | None = None,
) -> dg.AssetChecksDefinition:
    """Rows whose score violates `condition_sql` (a SQL predicate over the table) fail the check."""

    @_check(table, name, description, blocking=blocking)
    def _values(context: dg.AssetCheckExecutionContext, vidscore: VidscoreSettings) -> dg.AssetCheckResult:
        on = Checked(context, vidscore)
        params = params_fn(on.settings) if params_fn else []
        bad = on.query(f"SELECT video_id FROM {quote_ident(table)} WHERE NOT ({condition_sql})", params)
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
