"""Score assets: one CLIP image pass (`clip_embeddings`) feeds aesthetic and matching; flow decodes on its own."""

from __future__ import annotations

import pandas as pd

from vidscore_core.engine import Clip
from vidscore_core.scoring.clip_frames import AESTHETIC_POINTS
from vidscore_core.scoring.jobs import ClipJob, FlowJob, clips_from_frame, frame_embeddings_from_rows
from vidscore_dagster.defs.metadata import score_metadata
from vidscore_dagster.defs.staging import StageContext, staged_asset, videos_of_batch


def _split_unreadable(videos: pd.DataFrame) -> tuple[list[Clip], dict[str, str]]:
    """Clips to score, and the ones ingestion already found unreadable (their reason is reused)."""
    bad = videos[videos["error"].notna()]
    good = videos[videos["error"].isna()].reset_index(drop=True)
    return clips_from_frame(good), dict(zip(bad["video_id"], bad["error"], strict=True))


def _clip_job(ctx: StageContext) -> ClipJob:
    return ClipJob(
        ctx.settings, ctx.scoring.job_options(ctx.context.run_id, ctx.log_progress("clip_embeddings"))
    )


def _embed(ctx: StageContext) -> pd.DataFrame:
    videos = videos_of_batch(ctx)
    clips, unreadable = _split_unreadable(videos)
    job = _clip_job(ctx)
    items = job.embed(clips, AESTHETIC_POINTS)
    from vidscore_core.scoring.derived import FrameEmbeddings

    items += [
        FrameEmbeddings(vid, None, error=f"unreadable at ingest: {err}") for vid, err in unreadable.items()
    ]
    stats = job.stats
    ctx.context.log.info(
        f"embedded {stats.clips} clips ({stats.errors} errors) in {stats.seconds:.1f}s "
        f"({stats.clips_per_s:.2f} clips/s, model {stats.model_seconds:.1f}s) on {job.device}"
    )
    return job.embedding_rows(items, ctx.batch)


def _embeddings_of_batch(ctx: StageContext) -> tuple[pd.DataFrame, list]:
    videos = videos_of_batch(ctx)
    rows = ctx.store.query_df("SELECT * FROM clip_embeddings WHERE batch = ?", [ctx.batch])
    return videos, frame_embeddings_from_rows(rows, list(videos["video_id"]))


def _aesthetic(ctx: StageContext) -> pd.DataFrame:
    _, items = _embeddings_of_batch(ctx)
    return _clip_job(ctx).aesthetic_rows(items, ctx.batch)


def _matching(ctx: StageContext) -> pd.DataFrame:
    videos, items = _embeddings_of_batch(ctx)
    return _clip_job(ctx).matching_rows(items, list(videos["text"]), ctx.batch)


def _flow(ctx: StageContext) -> pd.DataFrame:
    videos = videos_of_batch(ctx)
    clips, unreadable = _split_unreadable(videos)
    backend = ctx.scoring.flow_backend
    job = FlowJob(
        ctx.settings, ctx.scoring.job_options(ctx.context.run_id, ctx.log_progress("flow")), backend
    )
    results = job.score(clips)
    frame = job.rows(results, ctx.batch)
    if unreadable:
        extra = pd.DataFrame({"video_id": list(unreadable), "error": [f"unreadable at ingest: {e}" for e in unreadable.values()],
                              "backend": backend, "batch": ctx.batch})  # fmt: skip
        frame = pd.concat([frame, extra], ignore_index=True) if len(frame) else extra
    ctx.context.log.info(
        f"flow ({backend}) for {len(clips)} clips in {job.stats.seconds:.1f}s on {job.device}"
    )
    return frame


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
    description="L2-normalised CLIP image embeddings of each clip's frames at 10/50/90% (images: one "
    "frame); one decode and one image-tower pass serve aesthetic and matching.",
    kinds={"duckdb", "pytorch"},
)

aesthetic_scores = staged_asset(
    name="aesthetic_scores",
    produce=_aesthetic,
    describe=lambda f: score_metadata(f, "aes", "aesthetic score"),
    deps=["clip_embeddings"],
    expected_ids=_batch_video_ids,
    description="LAION aesthetic score (CLIP ViT-L/14 + MLP), mean over the frames at 10/50/90%.",
    kinds={"duckdb", "pytorch"},
)

matching_scores = staged_asset(
    name="matching_scores",
    produce=_matching,
    describe=lambda f: score_metadata(f, "match", "text–frame matching score"),
    deps=["clip_embeddings", "videos"],
    expected_ids=_batch_video_ids,
    description="CLIP text–frame matching: exp(logit_scale)·cosine of the 50% frame and the caption.",
    kinds={"duckdb", "pytorch"},
)

flow_scores = staged_asset(
    name="flow_scores",
    produce=_flow,
    describe=lambda f: score_metadata(f, "flow", "optical flow score"),
    deps=["videos"],
    expected_ids=_batch_video_ids,
    description="Mean |optical flow| over frames 0/10/20/30 at 320×576 (UniMatch, or OpenCV DIS "
    "without weights; the backend is recorded per row).",
    kinds={"duckdb", "pytorch"},
)

score_assets = [clip_embeddings, aesthetic_scores, matching_scores, flow_scores]
