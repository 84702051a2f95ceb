"""Score assets: `clip_embeddings` (one decode and one image-tower pass per clip) and one asset per
registered score (vidscore_core/scores.py), built by `score_asset` from its declaration.

The scoring code (torch, open_clip) is imported inside the producers: sensors, the daemon and the
webserver load these definitions too and never need it.
"""

import dagster as dg
import pandas as pd

from vidscore_core import lineage
from vidscore_core.scores import SCORES, Score
from vidscore_core.scoring import options
from vidscore_dagster.defs.automation.policies import batch_backfill_policy, score_automation_condition
from vidscore_dagster.defs.metadata import score_metadata
from vidscore_dagster.defs.partitions import batches
from vidscore_dagster.defs.publishing import BatchContext, publish_batches, score_per_clip

# Runs on the GPU (or the CPU's cores) go through the `gpu` pool; see README "Operate".
GPU_POOL = "gpu"


def _score_asset_args() -> dict:
    return dict(
        partitions_def=batches,
        backfill_policy=batch_backfill_policy(),
        pool=GPU_POOL,
        group_name="scores",
        kinds={"parquet", "pytorch"},
        required_resource_keys={"vidscore", "scoring"},
        automation_condition=score_automation_condition(),
        retry_policy=dg.RetryPolicy(max_retries=1, delay=30),
    )


def _describe_embeddings(frame: pd.DataFrame) -> dict:
    if frame.empty:
        return {"frames": 0, "clips": 0, "errors": 0}
    return {
        "frames": int(frame["embedding"].notna().sum()),
        "clips": int(frame["video_id"].nunique()),
        "errors": int(frame.groupby("video_id")["error"].first().notna().sum()),
    }


@dg.asset(
    deps=["videos"],
    description="L2-normalised CLIP image embeddings of each clip's frames at 10/50/90% (images: one "
    "frame); one decode and one image-tower pass serve aesthetic and matching.",
    code_version=lineage.code_version(*options.CLIP_CODE),
    **_score_asset_args(),
)
def clip_embeddings(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return publish_batches(
        context, "clip_embeddings", lambda ctx: score_per_clip(ctx, "clip_embeddings", "clip_embeddings"),
        _describe_embeddings,
    )  # fmt: skip


def produce_score(ctx: BatchContext, score: Score) -> pd.DataFrame:
    """One batch's rows of `score`: its producer on the batch's inputs (torchrun ranks for per-clip
    scores when `num_processes` > 1)."""
    from vidscore_core.scoring.producers import ScoreInputs

    if not score.reads_embeddings and int(ctx.scoring.resolved()["num_processes"]) > 1:
        return score_per_clip(ctx, score.table, score.name)
    embeddings = None
    if score.reads_embeddings:
        if not ctx.store.has("clip_embeddings", ctx.batch):
            raise dg.Failure(f"batch {ctx.batch!r} has no clip_embeddings yet: materialize them first")
        embeddings = ctx.store.read("clip_embeddings", [ctx.batch])
    inputs = ScoreInputs(
        batch=ctx.batch,
        videos=ctx.videos(),
        settings=ctx.settings,
        options=ctx.scoring.job_options(ctx.context.run.run_id, ctx.log_progress(score.name)),
        flow_backend=ctx.scoring.effective_flow_backend,
        embedding_rows=embeddings,
        log=ctx.context.log.info,
    )
    return score.produce()(inputs)


def score_asset(score: Score) -> dg.AssetsDefinition:
    """The Dagster asset of a registered score: its table, one step, its batch's rows published."""

    @dg.asset(
        name=score.table,
        deps=["clip_embeddings", "videos"] if score.reads_embeddings else ["videos"],
        description=f"{score.description} Unit: {score.unit}.",
        code_version=lineage.code_version(*score.code),
        **_score_asset_args(),
    )
    def _asset(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        return publish_batches(
            context, score.table, lambda ctx: produce_score(ctx, score),
            lambda frame: score_metadata(frame, score.column, f"{score.name} score ({score.unit})"),
        )  # fmt: skip

    return _asset


score_assets = [clip_embeddings, *(score_asset(score) for score in SCORES)]
