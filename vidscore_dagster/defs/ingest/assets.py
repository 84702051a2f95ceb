"""The `videos` asset: probe every file of a batch and record what it is (or why it is unreadable)."""

from __future__ import annotations

import dagster as dg
import pandas as pd

from vidscore_core.ingest import probe_rows, read_manifest
from vidscore_dagster.defs.staging import StageContext, staged_asset


def _probe(ctx: StageContext) -> pd.DataFrame:
    manifest = read_manifest(ctx.settings, ctx.batch)
    ctx.context.log.info(f"probing {len(manifest)} files of batch {ctx.batch}")
    workers = max(2, ctx.scoring.num_workers * 2)
    return probe_rows(manifest, ctx.batch, workers=workers, run_id=ctx.context.run_id)


def _manifest_ids(ctx: StageContext) -> set[str]:
    return set(read_manifest(ctx.settings, ctx.batch)["video_id"])


def _describe(frame: pd.DataFrame) -> dict:
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


videos = staged_asset(
    name="videos",
    produce=_probe,
    describe=_describe,
    pool=None,
    expected_ids=_manifest_ids,
    group_name="ingest",
    description="One row per distinct clip of an ingested batch: probed size, frame count, fps, "
    "resolution, codec, or the reason the file cannot be read.",
)
