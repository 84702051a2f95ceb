"""Score one batch's videos for a per-clip asset: shared by the single-process step and torchrun ranks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from vidscore_core import schema
from vidscore_core.engine import Clip, ClipResult
from vidscore_core.scoring.jobs import ClipJob, FlowJob, clips_from_frame
from vidscore_core.scoring.options import JobOptions
from vidscore_core.settings import Settings

# The scores whose cost is decoding and a model pass per clip: worth spreading over several GPUs.
# aesthetic/matching derive from stored embeddings in seconds, and `videos` only probes files.
SHARDABLE = ("clip_embeddings", "flow_scores")
UNREADABLE_PREFIX = "unreadable at ingest: "

LogFn = Callable[[str], None]


@dataclass
class ScoreSummary:
    """What one call of `score_videos` did (logged by the step, gathered over ranks)."""

    asset: str
    clips: int = 0
    scored: int = 0
    errors: int = 0
    seconds: float = 0.0
    model_seconds: float = 0.0
    device: str = "cpu"
    rank: int = 0

    def line(self) -> str:
        rate = self.scored / self.seconds if self.seconds > 0 else 0.0
        return (
            f"{self.asset}: {self.clips} clips ({self.errors} errors) in {self.seconds:.1f}s "
            f"({rate:.2f} clips/s, model {self.model_seconds:.1f}s) on {self.device}"
        )


def split_unreadable(videos: pd.DataFrame) -> tuple[list[Clip], dict[str, str]]:
    """Clips to score, and the ones ingestion already found unreadable (their reason is reused)."""
    bad = videos[videos["error"].notna()]
    good = videos[videos["error"].isna()].reset_index(drop=True)
    return clips_from_frame(good), dict(zip(bad["video_id"], bad["error"], strict=True))


def empty_rows(asset: str) -> pd.DataFrame:
    """A zero-row frame with the table's columns (a rank whose shard is empty stages this)."""
    return pd.DataFrame({name: pd.Series([], dtype=object) for name, _ in schema.columns(asset)})


def score_videos(
    asset: str,
    videos: pd.DataFrame,
    batch: str,
    settings: Settings,
    options: JobOptions,
    *,
    flow_backend: str = "unimatch",
    log: LogFn | None = None,
) -> tuple[pd.DataFrame, ScoreSummary]:
    """Table rows of `asset` for `videos` (columns video_id, path, text, error), one per clip or frame.

    Clips that ingestion found unreadable are not decoded again: they get a row with the ingest
    reason, stamped with the same lineage as the scored rows.
    """
    if asset not in SHARDABLE:
        raise ValueError(f"{asset!r} is not scored per clip here; expected one of {SHARDABLE}")
    if len(videos) == 0:
        return empty_rows(asset), ScoreSummary(asset)
    clips, unreadable = split_unreadable(videos)
    if asset == "clip_embeddings":
        from vidscore_core.scoring.clip_frames import AESTHETIC_POINTS
        from vidscore_core.scoring.derived import FrameEmbeddings

        job = ClipJob(settings, options)
        items = job.embed(clips, AESTHETIC_POINTS)
        items += [FrameEmbeddings(v, None, error=UNREADABLE_PREFIX + e) for v, e in unreadable.items()]
        frame = job.embedding_rows(items, batch)
        stats, device = job.stats, job.device
    else:
        flow = FlowJob(settings, options, flow_backend)
        results = flow.score(clips)
        start = len(clips)
        results += [
            ClipResult(Clip(index=start + i, video_id=v, path=""), error=UNREADABLE_PREFIX + e)
            for i, (v, e) in enumerate(unreadable.items())
        ]
        frame = flow.rows(results, batch)
        stats, device = flow.stats, flow.device
    summary = ScoreSummary(
        asset=asset,
        clips=len(videos),
        scored=stats.clips,
        errors=stats.errors + len(unreadable),
        seconds=stats.seconds,
        model_seconds=stats.model_seconds,
        device=device,
    )
    if log is not None:
        log(summary.line())
    return frame, summary
