"""Partitioned assets that stage a Parquet file, then commit it (see DESIGN.md "Storage").

Each asset is a two-step graph: `<name>_stage` (the heavy work, pool `gpu` for models) writes
`$VIDSCORE_HOME/staging/<table>/<batch>.parquet` without touching DuckDB's write lock;
`<name>_commit` (pool `duckdb`, limit 1) replaces the partition's rows in one transaction.
The staged file is removed after the commit, so one left behind is work a crashed run did not
commit: the next run commits it instead of recomputing, if it still covers the batch's clips.
"""

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd

from vidscore_core.settings import Settings
from vidscore_core.store import Store, staged_path
from vidscore_dagster.defs.metadata import table_schema
from vidscore_dagster.defs.partitions import batches

RESOURCE_KEYS = {"vidscore", "duckdb", "scoring"}


@dataclass
class StageContext:
    """What a producer gets: the Dagster context, paths, the store and the partition key."""

    context: dg.OpExecutionContext
    settings: Settings
    store: Store
    batch: str

    @property
    def scoring(self):
        return self.context.resources.scoring

    def log_progress(self, label: str) -> Callable[[int, int], None]:
        """A progress callback that logs about ten times per batch."""
        last = {"step": -1}

        def report(done: int, total: int) -> None:
            step = (10 * done) // max(total, 1)
            if step != last["step"] or done == total:
                last["step"] = step
                self.context.log.info(f"{label}: {done}/{total} clips")

        return report


Producer = Callable[[StageContext], pd.DataFrame]
ExpectedIds = Callable[[StageContext], set[str]]
Describer = Callable[[pd.DataFrame], dict]


def videos_of_batch(ctx: StageContext) -> pd.DataFrame:
    return ctx.store.query_df(
        "SELECT video_id, path, text, error, media_type FROM videos WHERE batch = ? ORDER BY meta_row",
        [ctx.batch],
    )


def _leftover(ctx: StageContext, table: str, expected_ids: ExpectedIds | None) -> Path | None:
    """A staged file from a run that crashed before committing, if it still covers this batch."""
    path = staged_path(ctx.settings.staging_dir, table, ctx.batch)
    if expected_ids is None or not path.exists():
        return None
    try:
        staged_ids = set(pd.read_parquet(path, columns=["video_id"])["video_id"])
    except Exception:  # an unreadable leftover is simply recomputed
        return None
    return path if staged_ids == expected_ids(ctx) else None


def staged_asset(
    *,
    name: str,
    produce: Producer,
    describe: Describer,
    deps: Sequence[str] = (),
    pool: str | None = "gpu",
    expected_ids: ExpectedIds | None = None,
    description: str = "",
    group_name: str = "scores",
    kinds: set[str] | None = None,
) -> dg.AssetsDefinition:
    """Build the stage → commit graph asset `name`, writing the DuckDB table of the same name."""

    @dg.op(
        name=f"{name}_stage",
        ins={dep: dg.In(dg.Nothing) for dep in deps},
        out=dg.Out(str),
        pool=pool,
        required_resource_keys=RESOURCE_KEYS,
    )
    def stage_op(context: dg.OpExecutionContext) -> str:
        ctx = StageContext(context, context.resources.vidscore.settings(), context.resources.duckdb.store(),
                           context.partition_key)  # fmt: skip
        leftover = _leftover(ctx, name, expected_ids)
        if leftover is not None:
            context.log.info(f"committing {leftover}, staged by an earlier run that did not commit it")
            return str(leftover)
        started = time.perf_counter()
        frame = produce(ctx)
        path = ctx.store.stage(frame, name, ctx.batch, ctx.settings.staging_dir)
        context.log.info(f"staged {len(frame)} rows to {path} in {time.perf_counter() - started:.1f}s")
        return str(path)

    @dg.op(name=f"{name}_commit", pool="duckdb", required_resource_keys=RESOURCE_KEYS)
    def commit_op(context: dg.OpExecutionContext, staged: str) -> None:
        store: Store = context.resources.duckdb.store()
        batch = context.partition_key
        started = time.perf_counter()
        rows = store.commit_partition(name, batch, Path(staged))
        commit_s = time.perf_counter() - started
        Path(staged).unlink(missing_ok=True)
        frame = store.query_df(f'SELECT * FROM "{name}" WHERE batch = ?', [batch])
        context.log.info(f"committed {rows} rows of {name}[{batch}] in {commit_s:.2f}s")
        context.add_output_metadata({
            **describe(frame),
            "dagster/row_count": rows,
            "dagster/column_schema": table_schema(name),
            "commit_seconds": round(commit_s, 3),
            "table": f"main.{name}",
        })  # fmt: skip

    if len(deps) == 0:

        def body():
            return commit_op(stage_op())
    elif len(deps) == 1:

        def body(a):
            return commit_op(stage_op(**{deps[0]: a}))
    elif len(deps) == 2:

        def body(a, b):
            return commit_op(stage_op(**{deps[0]: a, deps[1]: b}))
    else:  # pragma: no cover - no asset has more
        raise ValueError("staged_asset supports at most two upstream assets")

    graph = dg.graph(name=name)(body)
    input_names = ["a", "b"][: len(deps)]
    return dg.AssetsDefinition.from_graph(
        graph,
        keys_by_input_name={i: dg.AssetKey(dep) for i, dep in zip(input_names, deps, strict=True)},
        partitions_def=batches,
        group_name=group_name,
        descriptions_by_output_name={"result": description} if description else None,
        metadata_by_output_name={"result": {"dagster/table_name": f"main.{name}"}},
        tags_by_output_name={"result": {f"dagster/kind/{k}": "" for k in (kinds or {"duckdb"})}},
    )
