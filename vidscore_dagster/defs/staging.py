"""Partitioned assets that stage a Parquet file, then commit it (see DESIGN.md "Storage").

Each asset is a two-step graph: `<name>_stage` (the heavy work, pool `gpu` for models) writes
`$VIDSCORE_HOME/staging/<table>/<batch>.parquet` without touching DuckDB's write lock;
`<name>_commit` (pool `duckdb`, limit 1) replaces the partition's rows in one transaction.
The staged file is removed after the commit, so one left behind is work a crashed run did not
commit: the next run commits it instead of recomputing, if it still covers the batch's clips.

A run may cover several partitions (a backfill with `BackfillPolicy.multi_run`): the stage step
then stages every partition of the run in turn and the commit step commits each of them.
With `ScoringOptions.num_processes > 1`, a shardable score is staged by torchrun ranks launched
through dagster-pipes, one Parquet part per rank (`<batch>@rank<r>.parquet`), committed together.
"""

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pandas as pd

from vidscore_core import distributed
from vidscore_core.scoring.options import progress_lines
from vidscore_core.settings import Settings
from vidscore_core.store import Store, staged_path
from vidscore_dagster.defs.automation.policies import batch_backfill_policy
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
        return progress_lines(f"{label}[{self.batch}]", self.context.log.info)


Producer = Callable[[StageContext], pd.DataFrame]
ExpectedIds = Callable[[StageContext], set[str]]
# Whether a leftover staged frame was made the way this run would make it (e.g. the same flow backend).
Accepts = Callable[[StageContext, pd.DataFrame], bool]
Describer = Callable[[pd.DataFrame], dict]


def videos_of_batch(ctx: StageContext) -> pd.DataFrame:
    return ctx.store.query_df(
        "SELECT video_id, path, text, error, media_type FROM videos WHERE batch = ? ORDER BY meta_row",
        [ctx.batch],
    )


def run_partition_keys(context: dg.OpExecutionContext) -> list[str]:
    """The batches this run materializes: one, or a range when a backfill groups partitions."""
    return list(context.partition_keys)


def _covers(paths: Sequence[Path], expected: set[str]) -> bool:
    """Whether staged files hold rows for exactly the expected clips, no clip in two files."""
    seen: set[str] = set()
    for path in paths:
        ids = set(pd.read_parquet(path, columns=["video_id"])["video_id"])
        if ids & seen:
            return False
        seen |= ids
    return seen == expected


def _leftover(
    ctx: StageContext, table: str, expected_ids: ExpectedIds | None, accepts: Accepts | None = None
) -> list[Path] | None:
    """Staged file(s) from a run that crashed before committing, if they still cover this batch."""
    if expected_ids is None:
        return None
    whole = staged_path(ctx.settings.staging_dir, table, ctx.batch)
    parts = distributed.existing_parts(ctx.settings.staging_dir, table, ctx.batch)
    for candidate in ([whole] if whole.exists() else [], parts):
        if not candidate:
            continue
        try:
            if _covers(candidate, expected_ids(ctx)) and (
                accepts is None or accepts(ctx, pd.concat([pd.read_parquet(p) for p in candidate]))
            ):
                return list(candidate)
        except Exception:  # an unreadable leftover is simply recomputed
            continue
    return None


class _RankMessageReader(dg.PipesTempFileMessageReader):
    """One pipes message file shared by all torchrun ranks: each rank opens and closes it once."""

    def __init__(self, writers: int) -> None:
        super().__init__()
        self._writers = writers

    @property
    def expected_writer_count(self) -> int:
        return self._writers


def _stage_with_torchrun(ctx: StageContext, name: str, nproc: int) -> list[Path]:
    """Stage partition `ctx.batch` of `name` with `nproc` torchrun ranks; returns the rank parts."""
    scoring = ctx.scoring
    staging = ctx.settings.staging_dir
    videos = videos_of_batch(ctx)
    work = (
        staging
        / "_torchrun"
        / f"{name}-{ctx.context.run_id[:8]}-{staged_path(staging, name, ctx.batch).stem}"
    )
    work.mkdir(parents=True, exist_ok=True)
    try:
        videos_path = work / "videos.parquet"
        videos.to_parquet(videos_path, index=False)
        options = scoring.job_options(ctx.context.run_id)
        spec = distributed.WorkerSpec.build(
            asset=name, batch=ctx.batch, videos_path=videos_path, settings=ctx.settings, options=options,
            flow_backend=scoring.flow_backend, dist_backend=scoring.dist_backend,
        )  # fmt: skip
        spec_path = spec.write(work / "spec.json")
        distributed.clear_parts(staging, name, ctx.batch)
        command = distributed.torchrun_command(nproc, spec_path)
        ctx.context.log.info(f"launching {nproc} ranks for {name}[{ctx.batch}]: {' '.join(command)}")
        device = "cpu" if str(scoring.device).lower() == "cpu" else "cuda"
        client = dg.PipesSubprocessClient(message_reader=_RankMessageReader(nproc))
        env = distributed.worker_env(nproc, device)
        invocation = client.run(command=command, context=ctx.context, env=env)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # the inputs only; the ranks' parts live in staging/
    reports = [m for m in invocation.get_custom_messages() if isinstance(m, dict) and "rank" in m]
    parts = distributed.part_paths(staging, name, ctx.batch, nproc)
    missing = [str(p) for p in parts if not p.exists()]
    if missing:
        raise dg.Failure(f"torchrun finished but rank parts are missing: {missing}")
    for report in sorted(reports, key=lambda m: m["rank"]):
        ctx.context.log.info(f"rank {report['rank']}: {report['rows']} rows, {report['clips']} clips "
                             f"({report['errors']} errors) in {report['seconds']:.1f}s on {report['device']}")  # fmt: skip
    return parts


def staged_asset(
    *,
    name: str,
    produce: Producer,
    describe: Describer,
    deps: Sequence[str] = (),
    pool: str | None = "gpu",
    expected_ids: ExpectedIds | None = None,
    accepts: Accepts | None = None,
    description: str = "",
    group_name: str = "scores",
    kinds: set[str] | None = None,
    shardable: bool = False,
    automation_condition: dg.AutomationCondition | None = None,
    backfill_policy: dg.BackfillPolicy | None = None,
) -> dg.AssetsDefinition:
    """Build the stage → commit graph asset `name`, writing the DuckDB table of the same name.

    `shardable`: with `ScoringOptions.num_processes > 1` the batch is split over torchrun ranks
    (the producer must then be `scoring.batch.score_videos` for `name`, as the ranks run that).
    """

    def stage_one(ctx: StageContext) -> list[Path]:
        context = ctx.context
        leftover = _leftover(ctx, name, expected_ids, accepts)
        if leftover is not None:
            context.log.info(
                f"committing {[str(p) for p in leftover]}, staged by an earlier run that did not commit"
            )
            return leftover
        started = time.perf_counter()
        nproc = int(getattr(ctx.scoring, "num_processes", 1) or 1)
        if shardable and nproc > 1:
            paths = _stage_with_torchrun(ctx, name, nproc)
            context.log.info(
                f"staged {name}[{ctx.batch}] in {len(paths)} parts in {time.perf_counter() - started:.1f}s"
            )
            return paths
        frame = produce(ctx)
        distributed.clear_parts(ctx.settings.staging_dir, name, ctx.batch)  # parts of an older torchrun run
        path = ctx.store.stage(frame, name, ctx.batch, ctx.settings.staging_dir)
        context.log.info(f"staged {len(frame)} rows to {path} in {time.perf_counter() - started:.1f}s")
        return [path]

    @dg.op(
        name=f"{name}_stage",
        ins={dep: dg.In(dg.Nothing) for dep in deps},
        out=dg.Out(dict),
        pool=pool,
        required_resource_keys=RESOURCE_KEYS,
    )
    def stage_op(context: dg.OpExecutionContext) -> dg.Output[dict]:
        settings = context.resources.vidscore.settings()
        store = context.resources.duckdb.store()
        staged: dict[str, list[str]] = {}
        for batch in run_partition_keys(context):
            ctx = StageContext(context, settings, store, batch)
            staged[batch] = [str(p) for p in stage_one(ctx)]
        # An explicit Output: after a pipes session Dagster treats a bare return value as a yielded event.
        return dg.Output(staged)

    @dg.op(name=f"{name}_commit", pool="duckdb", required_resource_keys=RESOURCE_KEYS)
    def commit_op(context: dg.OpExecutionContext, staged: dict) -> None:
        store: Store = context.resources.duckdb.store()
        rows_by_batch: dict[str, int] = {}
        commit_s = 0.0
        for batch, paths in staged.items():
            gone = [p for p in paths if not Path(p).exists()]
            if gone:
                # Staged files are per partition, not per run: another run of this batch took them.
                raise dg.Failure(
                    f"staged file(s) {gone} of {name}[{batch}] disappeared before this run committed them: "
                    "another run of the same batch committed them meanwhile. Avoid concurrent runs of one "
                    'batch (the dagster/partition run tag limit in dagster.yaml, README "Operate"); re-run if needed.'
                )
            started = time.perf_counter()
            rows_by_batch[batch] = store.commit_partition(name, batch, [Path(p) for p in paths])
            seconds = time.perf_counter() - started
            commit_s += seconds
            for path in paths:
                Path(path).unlink(missing_ok=True)
            context.log.info(f"committed {rows_by_batch[batch]} rows of {name}[{batch}] in {seconds:.2f}s")
        keys = list(staged)
        if len(keys) == 1:
            frame = store.query_df(f'SELECT * FROM "{name}" WHERE batch = ?', keys)
        else:
            frame = store.query_df(f'SELECT * FROM "{name}" WHERE list_contains(?, batch)', [keys])
        metadata = {
            **describe(frame),
            "dagster/row_count": sum(rows_by_batch.values()),
            "dagster/column_schema": table_schema(name),
            "commit_seconds": round(commit_s, 3),
            "table": f"main.{name}",
        }
        if len(keys) > 1:
            metadata["rows_by_batch"] = dg.MetadataValue.json(rows_by_batch)
        context.add_output_metadata(metadata)

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
        automation_conditions_by_output_name={"result": automation_condition}
        if automation_condition
        else None,
        backfill_policy=backfill_policy or batch_backfill_policy(),
    )
