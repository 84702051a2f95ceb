"""Score assets: one CLIP image pass (`clip_embeddings`) feeds aesthetic and matching; flow decodes on its own."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pandas as pd

from vidscore_dagster.defs.automation.policies import score_automation_condition
from vidscore_dagster.defs.metadata import score_metadata
from vidscore_dagster.defs.staging import StageContext, staged_asset, videos_of_batch

if TYPE_CHECKING:
    from vidscore_core.scoring.jobs import ClipJob


# The scoring code (torch, open_clip) is imported inside the producers: commit steps, sensors and the
# webserver load these definitions too and never need it.


def _clip_job(ctx: StageContext) -> ClipJob:
    from vidscore_core.scoring.jobs import ClipJob

    return ClipJob(
        ctx.settings, ctx.scoring.job_options(ctx.context.run_id, ctx.log_progress("clip_embeddings"))
    )


def _per_clip(asset: str, label: str) -> Callable[[StageContext], pd.DataFrame]:
    """The producer of a per-clip score; each torchrun rank runs the same `score_videos` on its shard."""

    def produce(ctx: StageContext) -> pd.DataFrame:
        from vidscore_core.scoring.batch import score_videos

        frame, _ = score_videos(
            asset,
            videos_of_batch(ctx),
            ctx.batch,
            ctx.settings,
            ctx.scoring.job_options(ctx.context.run_id, ctx.log_progress(label)),
            flow_backend=ctx.scoring.flow_backend,
            log=ctx.context.log.info,
        )
        return frame

    return produce


_embed = _per_clip("clip_embeddings", "clip_embeddings")
_flow = _per_clip("flow_scores", "flow")


def _embeddings_of_batch(ctx: StageContext) -> tuple[pd.DataFrame, list]:
    from vidscore_core.scoring.jobs import frame_embeddings_from_rows

    videos = videos_of_batch(ctx)
    rows = ctx.store.query_df("SELECT * FROM clip_embeddings WHERE batch = ?", [ctx.batch])
    return videos, frame_embeddings_from_rows(rows, list(videos["video_id"]))


def _aesthetic(ctx: StageContext) -> pd.DataFrame:
    _, items = _embeddings_of_batch(ctx)
    return _clip_job(ctx).aesthetic_rows(items, ctx.batch)


def _matching(ctx: StageContext) -> pd.DataFrame:
    videos, items = _embeddings_of_batch(ctx)
    return _clip_job(ctx).matching_rows(items, list(videos["text"]), ctx.batch)


def _batch_video_ids(ctx: StageContext) -> set[str]:
    return set(videos_of_batch(ctx)["video_id"])


clip_embeddings = staged_asset(
    name="clip_embeddings",
    produce=_embed,
    describe=lambda f: {
        "frames": int(f["embedding"].notna().sum()),
        "clips": int(f["video_id"].nunique()),
        "errors": int(f.groupby("video_id")["error"].first().notna().sum()),
    },  # fmt: skip
    deps=["videos"],
    expected_ids=_batch_video_ids,
    shardable=True,
    description="L2-normalised CLIP image embeddings of each clip's frames at 10/50/90% (images: one "
    "frame); one decode and one image-tower pass serve aesthetic and matching.",
    kinds={"duckdb", "pytorch"},
    automation_condition=score_automation_condition(),
)

aesthetic_scores = staged_asset(
    name="aesthetic_scores",
    produce=_aesthetic,
    describe=lambda f: score_metadata(f, "aes", "aesthetic score"),
    deps=["clip_embeddings"],
    expected_ids=_batch_video_ids,
    description="LAION aesthetic score (CLIP ViT-L/14 + MLP), mean over the frames at 10/50/90%.",
    kinds={"duckdb", "pytorch"},
    automation_condition=score_automation_condition(),
)

matching_scores = staged_asset(
    name="matching_scores",
    produce=_matching,
    describe=lambda f: score_metadata(f, "match", "text–frame matching score"),
    deps=["clip_embeddings", "videos"],
    expected_ids=_batch_video_ids,
    description="CLIP text–frame matching: exp(logit_scale)·cosine of the 50% frame and the caption.",
    kinds={"duckdb", "pytorch"},
    automation_condition=score_automation_condition(),
)

flow_scores = staged_asset(
    name="flow_scores",
    produce=_flow,
    describe=lambda f: score_metadata(f, "flow", "optical flow score"),
    deps=["videos"],
    expected_ids=_batch_video_ids,
    # Leftover staged rows are reused only if scored by the backend configured now: never mix two.
    accepts=lambda ctx, staged: set(staged["backend"].dropna()) <= {ctx.scoring.flow_backend},
    shardable=True,
    description="Mean |optical flow| over frames 0/10/20/30 at 320×576 (UniMatch, or OpenCV DIS "
    "without weights; the backend is recorded per row).",
    kinds={"duckdb", "pytorch"},
    automation_condition=score_automation_condition(),
)

score_assets = [clip_embeddings, aesthetic_scores, matching_scores, flow_scores]
