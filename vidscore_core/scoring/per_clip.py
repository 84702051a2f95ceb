"""Score one batch's videos for the per-clip tables: shared by the single-process step and torchrun ranks.

The per-clip tables are `clip_embeddings` and every registered score that decodes the clips itself
(`Score.job`, e.g. flow): the ones whose cost is decoding and a model pass per clip, worth spreading
over several GPUs. When several of them are scored together, one decode per clip serves them all
(`shared_decode`). Derived scores (aesthetic, matching) read stored embeddings in seconds, and
`videos` only probes files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd

from vidscore_core import scores
from vidscore_core.scores import PER_CLIP, PER_CLIP_TABLES
from vidscore_core.scoring.clip_frames import AESTHETIC_POINTS
from vidscore_core.scoring.engine import Item, ItemResult
from vidscore_core.scoring.options import JobOptions
from vidscore_core.scoring.score_jobs import clips_from_frame, run_job_parts
from vidscore_core.settings import Settings
from vidscore_core.tables import schema

UNREADABLE_PREFIX = "unreadable at ingest: "

LogFn = Callable[[str], None]


@dataclass
class ScoreSummary:
    """What one call of `score_videos` did (logged by the step, gathered over ranks)."""

    asset: str  # the tables scored, joined by "+"
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


def split_unreadable(videos: pd.DataFrame) -> tuple[list[Item], dict[str, str]]:
    """Clips to score, and the ones ingestion already found unreadable (their reason is reused)."""
    bad = videos[videos["error"].notna()]
    good = videos[videos["error"].isna()].reset_index(drop=True)
    return clips_from_frame(good), dict(zip(bad["video_id"], bad["error"], strict=True))


def empty_rows(table: str) -> pd.DataFrame:
    """A zero-row frame with the table's columns (a rank whose shard is empty stages this)."""
    return pd.DataFrame({name: pd.Series([], dtype=object) for name, _ in schema.columns(table)})


def check_tables(tables: Sequence[str]) -> tuple[str, ...]:
    """The per-clip tables asked for, in their declared order; ValueError for any other."""
    unknown = [t for t in tables if t not in PER_CLIP_TABLES]
    if unknown or not tables:
        raise ValueError(f"{unknown or 'nothing'} is not scored per clip here; expected some of {PER_CLIP_TABLES}")
    return tuple(t for t in PER_CLIP_TABLES if t in tables)


def _uses(table: str) -> tuple[str, ...]:
    score = scores.BY_TABLE.get(table)
    return score.uses if score else ()


def with_used(results: dict[str, list[ItemResult]], table: str) -> list[ItemResult]:
    """`table`'s results, each carrying the values of the same clip in the tables its score uses
    (under their table names); a clip one of them could not score gets that error."""
    used = _uses(table)
    if not used:
        return results[table]
    out = []
    for i, own in enumerate(results[table]):
        others = {u: results[u][i] for u in used}
        error = own.error or next((r.error for r in others.values() if r.error), None)
        values = {**own.values, **{u: r.values for u, r in others.items()}}
        out.append(ItemResult(own.clip, values=values, error=error))
    return out


def score_videos(
    tables: Sequence[str],
    videos: pd.DataFrame,
    batch: str,
    settings: Settings,
    options: JobOptions,
    *,
    embedding_points: tuple[float, ...] = AESTHETIC_POINTS,
    log: LogFn | None = None,
) -> tuple[dict[str, pd.DataFrame], ScoreSummary]:
    """Rows of each of `tables` for `videos` (columns video_id, path, text, error), one decode per clip.

    `clip_embeddings` embeds the frames at `embedding_points` (the platform's table: the aesthetic
    points; the CSV commands ask for the points of the derived scores they compute). Clips that
    ingestion found unreadable are not decoded again: they get a row with the ingest reason in every
    table, stamped with the same lineage as the scored rows.
    """
    tables = check_tables(tables)
    summary = ScoreSummary(asset="+".join(tables), clips=len(videos))
    if len(videos) == 0:
        return {t: empty_rows(t) for t in tables}, summary
    # The embeddings' job also takes the frame points; a score's job reads its options from `options`.
    # The parts of the tables a score uses (camera motion: flow) run too, once, published or not; their
    # jobs are told which tables use them (flow then computes object motion, which only camera motion reads).
    used_by: dict[str, list[str]] = {}
    for t in tables:
        for u in _uses(t):
            used_by.setdefault(u, []).append(t)
    extra = {scores.EMBEDDINGS.table: {"points": tuple(embedding_points)},
             **{u: {"used_by": tuple(users)} for u, users in used_by.items()}}  # fmt: skip
    computed = check_tables([*tables, *used_by])
    jobs = {t.table: scores.load(t.job)(settings, options, **extra.get(t.table, {})) for t in PER_CLIP if t.table in computed}
    first = next(iter(jobs.values()))
    clips, unreadable = split_unreadable(videos)
    results = run_job_parts([job.part() for job in jobs.values()], clips, options, first.device, first.stats)
    skipped = [
        ItemResult(Item(index=len(clips) + i, video_id=v, path=""), error=UNREADABLE_PREFIX + e)
        for i, (v, e) in enumerate(unreadable.items())
    ]
    frames = {t: jobs[t].rows(with_used(results, t) + skipped, batch) for t in tables}
    stats = first.stats
    summary.scored = stats.clips
    summary.errors = len({r.clip.index for rs in results.values() for r in rs if r.error}) + len(unreadable)
    summary.seconds, summary.model_seconds, summary.device = stats.seconds, stats.model_seconds, first.device
    if log is not None:
        log(summary.line())
    return frames, summary
