"""Score assets: one CLIP image pass (`clip_embeddings`) feeds aesthetic and matching; flow decodes on its own.

The scoring code (torch, open_clip) is imported inside the producers: sensors, the daemon and the
webserver load these definitions too and never need it.
"""


import dagster as dg
import pandas as pd

from vidscore_core import lineage
from vidscore_core.scoring import options
from vidscore_dagster.defs.automation.policies import batch_backfill_policy, score_automation_condition
from vidscore_dagster.defs.metadata import score_metadata
from vidscore_dagster.defs.partitions import batches
from vidscore_dagster.defs.publishing import BatchContext, publish_batches, score_per_clip

# Runs on the GPU (or the CPU's cores) go through the `gpu` pool; see README "Operate".
GPU_POOL = "gpu"


def _embeddings_of_batch(ctx: BatchContext) -> tuple[pd.DataFrame, list]:
    from vidscore_core.scoring.jobs import frame_embeddings_from_rows

    videos = ctx.videos()
    if not ctx.store.has("clip_embeddings", ctx.batch):
        raise dg.Failure(f"batch {ctx.batch!r} has no clip_embeddings yet: materialize them first")
    rows = ctx.store.read("clip_embeddings", [ctx.batch])
    return videos, frame_embeddings_from_rows(rows, list(videos["video_id"]))


def _clip_job(ctx: BatchContext):
    from vidscore_core.scoring.jobs import ClipJob

    return ClipJob(ctx.settings, ctx.scoring.job_options(ctx.context.run.run_id, ctx.log_progress("clip")))


def _aesthetic(ctx: BatchContext) -> pd.DataFrame:
    _, items = _embeddings_of_batch(ctx)
    return _clip_job(ctx).aesthetic_rows(items, ctx.batch)


def _matching(ctx: BatchContext) -> pd.DataFrame:
    videos, items = _embeddings_of_batch(ctx)
    return _clip_job(ctx).matching_rows(items, list(videos["text"]), ctx.batch)


def _describe_embeddings(frame: pd.DataFrame) -> dict:
    if frame.empty:
        return {"frames": 0, "clips": 0, "errors": 0}
    return {
        "frames": int(frame["embedding"].notna().sum()),
        "clips": int(frame["video_id"].nunique()),
        "errors": int(frame.groupby("video_id")["error"].first().notna().sum()),
    }


_SCORE_ASSET = dict(
    partitions_def=batches,
    backfill_policy=batch_backfill_policy(),
    pool=GPU_POOL,
    group_name="scores",
    kinds={"parquet", "pytorch"},
    required_resource_keys={"vidscore", "scoring"},
    automation_condition=score_automation_condition(),
    retry_policy=dg.RetryPolicy(max_retries=1, delay=30),
)


@dg.asset(
    deps=["videos"],
    description="L2-normalised CLIP image embeddings of each clip's frames at 10/50/90% (images: one "
    "frame); one decode and one image-tower pass serve aesthetic and matching.",
    code_version=lineage.code_version(*options.CLIP_CODE),
    **_SCORE_ASSET,
)
def clip_embeddings(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return publish_batches(
        context, "clip_embeddings", lambda ctx: score_per_clip(ctx, "clip_embeddings", "clip_embeddings"),
        _describe_embeddings,
    )  # fmt: skip


@dg.asset(
    deps=["clip_embeddings"],
    description="LAION aesthetic score (CLIP ViT-L/14 + MLP), mean over the frames at 10/50/90%.",
    code_version=lineage.code_version(*options.AESTHETIC_CODE),
    **_SCORE_ASSET,
)
def aesthetic_scores(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return publish_batches(
        context, "aesthetic_scores", _aesthetic, lambda f: score_metadata(f, "aes", "aesthetic score")
    )


@dg.asset(
    deps=["clip_embeddings", "videos"],
    description="CLIP text–frame matching: exp(logit_scale)·cosine of the 50% frame and the caption.",
    code_version=lineage.code_version(*options.MATCHING_CODE),
    **_SCORE_ASSET,
)
def matching_scores(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return publish_batches(
        context, "matching_scores", _matching, lambda f: score_metadata(f, "match", "text–frame matching score")
    )


@dg.asset(
    deps=["videos"],
    description="Mean |optical flow| over frames 0/10/20/30 at 320×576 (UniMatch, or OpenCV DIS "
    "without weights; the backend is recorded per row).",
    code_version=lineage.code_version(*options.FLOW_CODE),
    **_SCORE_ASSET,
)
def flow_scores(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
    return publish_batches(
        context, "flow_scores", lambda ctx: score_per_clip(ctx, "flow_scores", "flow"),
        lambda f: score_metadata(f, "flow", "optical flow score"),
    )  # fmt: skip


score_assets = [clip_embeddings, aesthetic_scores, matching_scores, flow_scores]
