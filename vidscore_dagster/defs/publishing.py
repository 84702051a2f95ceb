"""What every batch-partitioned asset does around its own computation: one step per asset.

For each batch the run materializes (one, or a range when a backfill groups partitions), the asset
computes the partition's rows and publishes them as one Parquet file (`TableStore.publish`:
atomic, last writer wins whole). There is nothing to commit afterwards, no lock and no staged
file another run could adopt: a killed run leaves the previous version of its partitions.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass

import dagster as dg
import pandas as pd

from vidscore_core.ingest.batches import read_manifest, with_read_paths
from vidscore_core.scoring.options import progress_lines
from vidscore_core.settings import Settings
from vidscore_core.tables.store import TableStore
from vidscore_dagster.defs.metadata import table_schema
from vidscore_dagster.defs.resources import ScoringOptions, VidscoreSettings


@dataclass
class BatchContext:
    """What a producer gets: the Dagster context, settings, the table store, the batch key and how
    scoring runs."""

    context: dg.AssetExecutionContext
    settings: Settings
    store: TableStore
    batch: str
    scoring: ScoringOptions

    def log_progress(self, label: str) -> Callable[[int, int], None]:
        return progress_lines(f"{label}[{self.batch}]", self.context.log.info)

    def videos(self) -> pd.DataFrame:
        """The batch's `videos` rows in meta file order (what every score covers)."""
        return videos_of_batch(self.store, self.batch)

    def listings(self) -> pd.DataFrame:
        """The batch's meta rows, in file order: one per listing of a clip (a clip listed with N
        captions has N), each with its own `text` and `meta_row` and its clip's `videos` facts."""
        manifest = read_manifest(self.store, self.batch)[["video_id", "text", "meta_row"]]
        clips = self.videos().drop(columns=["text", "meta_row"])
        return manifest.merge(clips, on="video_id", how="inner", validate="many_to_one")


def videos_of_batch(store: TableStore, batch: str) -> pd.DataFrame:
    if not store.has("videos", batch):
        raise dg.Failure(f"batch {batch!r} has no `videos` partition yet: materialize `videos` first")
    columns = ["video_id", "path", "text", "error", "media_type", "meta_row"]
    videos = store.read("videos", [batch], columns).sort_values("meta_row", kind="stable").reset_index(drop=True)
    return with_read_paths(store, batch, videos)  # the clips are read by their URL as written


Producer = Callable[[BatchContext], pd.DataFrame]
TablesProducer = Callable[[BatchContext], dict[str, pd.DataFrame]]
Describer = Callable[[pd.DataFrame], dict]


def publish_batches(
    context: dg.AssetExecutionContext,
    vidscore: VidscoreSettings,
    scoring: ScoringOptions,
    table: str,
    produce: Producer,
    describe: Describer,
) -> dg.MaterializeResult:
    """Compute and publish partition after partition of `table`; one materialization for the run."""
    (result,) = publish_tables(context, vidscore, scoring, {table: describe}, lambda ctx: {table: produce(ctx)})
    return result


def publish_tables(
    context: dg.AssetExecutionContext,
    vidscore: VidscoreSettings,
    scoring: ScoringOptions,
    describers: dict[str, Describer],
    produce: TablesProducer,
) -> list[dg.MaterializeResult]:
    """The same for a step that computes several tables at once (a multi-asset): per batch, all its
    tables are computed, then each is published; one materialization per table for the run."""
    settings = vidscore.settings()
    store = TableStore.from_settings(settings)
    frames: dict[str, list[pd.DataFrame]] = {table: [] for table in describers}
    rows_by_batch: dict[str, dict[str, int]] = {table: {} for table in describers}
    for batch in context.partition_keys:
        started = time.perf_counter()
        produced = produce(BatchContext(context, settings, store, batch, scoring))
        if set(produced) != set(describers):
            raise RuntimeError(f"produced {sorted(produced)} for {batch!r}, expected {sorted(describers)}")
        computed = time.perf_counter() - started
        for table, frame in produced.items():
            started = time.perf_counter()
            published = store.publish(frame, table, batch)
            rows_by_batch[table][batch] = published.rows
            frames[table].append(frame)
            context.log.info(
                f"published {published.rows} rows of {table}[{batch}] to {published.path} "
                f"(computed in {computed:.1f}s, written in {time.perf_counter() - started:.1f}s)"
            )
    results = []
    for table, describe in describers.items():
        combined = pd.concat(frames[table], ignore_index=True) if frames[table] else pd.DataFrame()
        metadata = {
            **describe(combined),
            "dagster/row_count": sum(rows_by_batch[table].values()),
            "dagster/column_schema": table_schema(table),
            "dagster/uri": store.table_dir(table),
        }
        if len(rows_by_batch[table]) > 1:
            metadata["rows_by_batch"] = dg.MetadataValue.json(rows_by_batch[table])
        results.append(dg.MaterializeResult(asset_key=table, metadata=metadata))
    return results


def score_per_clip(ctx: BatchContext, tables: list[str]) -> dict[str, pd.DataFrame]:
    """Rows of the per-clip `tables` for the batch, one decode per clip: in this process, or over
    torchrun ranks. Progress and logs name the tables joined by "+" (as ScoreSummary does)."""
    from vidscore_core.scoring.per_clip import score_videos

    nproc = int(ctx.scoring.resolved()["num_processes"])
    if nproc > 1:
        return _score_with_torchrun(ctx, tables, nproc)
    frames, _ = score_videos(
        tables,
        ctx.videos(),
        ctx.batch,
        ctx.settings,
        ctx.scoring.job_options(ctx.context.run.run_id, ctx.log_progress("+".join(tables))),
        log=ctx.context.log.info,
    )
    return frames


class _RankMessageReader(dg.PipesTempFileMessageReader):
    """One pipes message file shared by all torchrun ranks: each rank opens and closes it once."""

    def __init__(self, writers: int) -> None:
        super().__init__()
        self._writers = writers

    @property
    def expected_writer_count(self) -> int:
        return self._writers


def _score_with_torchrun(ctx: BatchContext, tables: list[str], nproc: int) -> dict[str, pd.DataFrame]:
    """Score the batch with `nproc` torchrun ranks launched through dagster-pipes; returns all rows.

    The ranks' inputs and parts live in a folder of this run only, removed afterwards.
    """
    from vidscore_core.scoring import distributed

    options = ctx.scoring.resolved()
    label = "+".join(tables)
    work = ctx.settings.work_dir / ctx.context.run.run_id / f"{label}-{ctx.batch}"
    shutil.rmtree(work, ignore_errors=True)  # a retry of this same run starts clean
    work.mkdir(parents=True)
    try:
        videos_path = work / "videos.parquet"
        ctx.videos().to_parquet(videos_path, index=False)
        spec = distributed.WorkerSpec.build(
            tables=tables, batch=ctx.batch, videos_path=videos_path, parts_dir=work / "parts",
            settings=ctx.settings, options=ctx.scoring.job_options(ctx.context.run.run_id),
            dist_backend=options["dist_backend"],
        )  # fmt: skip
        command = distributed.torchrun_command(nproc, spec.write(work / "spec.json"))
        ctx.context.log.info(f"launching {nproc} ranks for {label}[{ctx.batch}]: {' '.join(command)}")
        device = "cpu" if str(options["device"]).lower() == "cpu" else "cuda"
        client = dg.PipesSubprocessClient(message_reader=_RankMessageReader(nproc))
        invocation = client.run(command=command, context=ctx.context, env=distributed.worker_env(nproc, device))
        parts = {table: distributed.part_paths(work / "parts", table, nproc) for table in tables}
        missing = [str(p) for paths in parts.values() for p in paths if not p.exists()]
        if missing:
            raise dg.Failure(f"torchrun finished but rank parts are missing: {missing}")
        for report in sorted(
            (m for m in invocation.get_custom_messages() if isinstance(m, dict) and "rank" in m),
            key=lambda m: m["rank"],
        ):
            rows = ", ".join(f"{n} rows of {table}" for table, n in report["rows"].items())
            ctx.context.log.info(f"rank {report['rank']}: {rows}; {report['clips']} clips ({report['errors']} "
                                 f"errors) in {report['seconds']:.1f}s on {report['device']}")  # fmt: skip
        return {table: pd.concat([pd.read_parquet(p) for p in paths], ignore_index=True) for table, paths in parts.items()}
    finally:
        shutil.rmtree(work, ignore_errors=True)
