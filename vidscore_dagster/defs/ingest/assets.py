"""Ingest: `meta_files` (a meta file → its batch manifests and partitions) and `videos` (probed files)."""



import dagster as dg
import pandas as pd
from pydantic import Field

from vidscore_core.ingest.batches import (
    DEFAULT_BATCH_SIZE,
    INGEST_CODE,
    probe_rows,
    read_manifest,
    write_manifests,
)
from vidscore_core.ingest.meta import batch_key_prefix, meta_location
from vidscore_core.media.sources import safe_url
from vidscore_core.scoring import lineage
from vidscore_core.tables.schema import PARTITIONED_TABLES
from vidscore_core.tables.store import TableStore
from vidscore_dagster.defs.automation.policies import batch_backfill_policy
from vidscore_dagster.defs.ingest.signed_meta import readable_path
from vidscore_dagster.defs.partitions import BATCHES, batches
from vidscore_dagster.defs.publishing import BatchContext, publish_batches
from vidscore_dagster.defs.resources import ScoringOptions, VidscoreSettings


class MetaFileConfig(dg.Config):
    """The meta file to ingest (CSV, TSV or Parquet with a `path` column)."""

    path: str = Field(description="Meta file to ingest (a path, or an s3:// URL); relative paths resolve "
                      "against the run's folder.")
    batch_size: int = Field(default=DEFAULT_BATCH_SIZE, ge=1, description="At most this many clips per batch.")


@dg.asset(
    group_name="ingest",
    code_version=lineage.code_version(*INGEST_CODE),
    kinds={"parquet", "csv"},
    description="An ingested meta file: its rows split into batch manifests (table `manifests`), each "
    "batch registered as a partition of `batches`. Lineage of every clip starts here.",
)
def meta_files(context: dg.AssetExecutionContext, config: MetaFileConfig, vidscore: VidscoreSettings) -> dg.MaterializeResult:
    settings = vidscore.settings()
    store = TableStore.from_settings(settings)
    path = meta_location(readable_path(config.path))
    summary = write_manifests(path, store, batch_size=config.batch_size)
    rows = summary.clips
    new = [k for k in rows if not context.instance.has_dynamic_partition(BATCHES, k)]
    if new:
        context.instance.add_dynamic_partitions(BATCHES, new)
    dropped = drop_stale_batches(context, store, path, set(rows))
    _refresh_views(context, settings)
    shown = safe_url(path)  # a presigned meta file's signature is never logged
    context.log.info(f"{shown}: {sum(rows.values())} clips in {len(rows)} batches ({len(new)} new)")
    for line in summary.lines():
        context.log.warning(f"{shown}: {line}")
    return dg.MaterializeResult(
        metadata={
            "meta_file": dg.MetadataValue.path(shown),
            "clips": sum(rows.values()),
            "rows": summary.rows,
            "repeated_rows": summary.repeated_rows,
            "repeated_paths": summary.repeated_paths,
            "rows_without_caption": summary.no_caption,
            "row_notes": dg.MetadataValue.json(summary.lines()),
            "batches": dg.MetadataValue.json(list(rows)),
            "new_batches": len(new),
            "dropped_batches": dg.MetadataValue.json(dropped),
            "dagster/uri": store.table_dir("manifests"),
        }
    )


def drop_stale_batches(context: dg.AssetExecutionContext, store, path: str, kept: set[str]) -> list[str]:
    """Batches of an earlier, longer version of this meta file: their partitions and rows go."""
    prefix = batch_key_prefix(path) + "-"
    stale = sorted(k for k in store.partitions("manifests") if k.startswith(prefix) and k not in kept)
    for key in stale:
        for table in PARTITIONED_TABLES:
            store.delete(table, key)
        context.instance.delete_dynamic_partition(BATCHES, key)
    if stale:
        context.log.info(f"removed {len(stale)} batches the meta file no longer has: {stale[:10]}")
    return stale


def _refresh_views(context: dg.AssetExecutionContext, settings) -> None:
    """Create vidscore.duckdb's views if needed; never wait for a user session holding the file."""
    from vidscore_core.tables.views import ViewsNotWritten, write_views

    try:
        write_views(settings)
    except ViewsNotWritten as exc:
        context.log.warning(f"views in {settings.db_path} not refreshed: {exc}")


def _probe(ctx: BatchContext) -> pd.DataFrame:
    manifest = read_manifest(ctx.store, ctx.batch)
    ctx.context.log.info(f"probing {len(manifest)} files of batch {ctx.batch}")
    workers = max(2, int(ctx.scoring.resolved()["num_workers"]) * 2)
    return probe_rows(manifest, ctx.batch, workers=workers, run_id=ctx.context.run.run_id)


def describe_videos(frame: pd.DataFrame) -> dict:
    if frame.empty:
        return {"errors": 0}
    errors = frame["error"].notna()
    sizes = frame.loc[~errors & frame["width"].notna()]
    resolutions = (
        sizes["width"].astype(int).astype(str) + "x" + sizes["height"].astype(int).astype(str)
    ).value_counts()
    return {
        "errors": int(errors.sum()),
        "unreadable_ratio": float(errors.mean()) if len(frame) else 0.0,
        "videos": int((frame["media_type"] == "video").sum()),
        "images": int((frame["media_type"] == "image").sum()),
        "total_duration_s": float(pd.to_numeric(frame["duration_s"], errors="coerce").sum()),
        "total_frames": int(pd.to_numeric(frame["num_frames"], errors="coerce").fillna(0).sum()),
        "resolution_histogram": dg.MetadataValue.json({k: int(v) for k, v in resolutions.head(20).items()}),
        "top_errors": dg.MetadataValue.json(
            {str(k): int(v) for k, v in frame["error"].dropna().value_counts().head(5).items()}
        ),
    }


@dg.asset(
    deps=["meta_files"],
    partitions_def=batches,
    backfill_policy=batch_backfill_policy(),
    code_version=lineage.code_version(*INGEST_CODE),
    group_name="ingest",
    kinds={"parquet"},
    retry_policy=dg.RetryPolicy(max_retries=2, delay=10),
    description="One row per distinct clip of a batch: probed size, frame count, fps, resolution, "
    "codec, or the reason the file cannot be read.",
)
def videos(context: dg.AssetExecutionContext, vidscore: VidscoreSettings, scoring: ScoringOptions) -> dg.MaterializeResult:
    return publish_batches(context, vidscore, scoring, "videos", _probe, describe_videos)
