"""Open-Sora compatible scoring of a meta file: every input row and column, plus the score and its error."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from vidscore_core.meta import file_columns, read_meta, write_table
from vidscore_core.scores import SCORES
from vidscore_core.scoring.clip_frames import AESTHETIC_POINTS, MATCHING_POINTS
from vidscore_core.scoring.jobs import ClipJob, FlowJob, clips_from_frame
from vidscore_core.scoring.options import JobOptions
from vidscore_core.settings import Settings

SCORE_COLUMN = {score.name: score.column for score in SCORES}


def default_output(meta: Path, column: str) -> Path:
    """META.csv → META_aes.csv (Open-Sora's naming); Parquet input keeps its format."""
    suffix = meta.suffix if meta.suffix.lower() in (".parquet", ".pq") else ".csv"
    return meta.with_name(f"{meta.stem}_{column}{suffix}")


def input_rows(meta_path: Path) -> tuple[pd.DataFrame, list[str]]:
    """Every row and column of the meta file as written (duplicates too, and columns whatever their
    names, `video_id` included), and each row's video_id."""
    df = read_meta(meta_path, drop_duplicates=False)
    return file_columns(df), list(df["video_id"])


def score_rows(task: str, meta: pd.DataFrame, settings: Settings, options: JobOptions,
               flow_backend: str = "unimatch") -> pd.DataFrame:  # fmt: skip
    """Score the clips of a read meta table; returns `video_id`, the score and `error`.

    Aesthetic and flow: one row per distinct clip. Matching: one row per row of `meta`, since the same
    clip may be listed with several captions; each clip is still decoded once.
    """
    distinct = meta.drop_duplicates(subset="video_id", keep="first").reset_index(drop=True)
    clips = clips_from_frame(distinct)
    if task == "flow":
        job = FlowJob(settings, options, flow_backend)
        rows = job.rows(job.score(clips), batch="cli")
        return rows[["video_id", "flow", "error"]]
    job = ClipJob(settings, options)
    if task == "aesthetic":
        _ = job.clip_path, job.mlp  # fail on missing/mismatched weights before decoding anything
        items = job.embed(clips, AESTHETIC_POINTS)
        return job.aesthetic_rows(items, batch="cli")[["video_id", "aes", "error"]]
    _ = job.clip  # fail on missing/mismatched weights before decoding anything
    by_clip = {item.video_id: item for item in job.embed(clips, MATCHING_POINTS)}
    texts = meta["text"] if "text" in meta.columns else [None] * len(meta)
    pairs = [by_clip[v] for v in meta["video_id"]]
    return job.matching_rows(pairs, list(texts), batch="cli")[["video_id", "match", "error"]]


def row_scores(task: str, meta: pd.DataFrame, settings: Settings, options: JobOptions,
               flow_backend: str = "unimatch") -> pd.DataFrame:  # fmt: skip
    """`video_id`, the score and `error` for every row of `meta` (read with drop_duplicates=False),
    in row order: a clip listed twice gets its score twice, and matching scores each caption."""
    column = SCORE_COLUMN[task]
    scores = score_rows(task, meta, settings, options, flow_backend)
    if task == "matching":
        return scores.reset_index(drop=True)
    by_clip = scores.set_index("video_id")
    ids = list(meta["video_id"])
    return pd.DataFrame(
        {
            "video_id": ids,
            column: [by_clip[column].get(v) for v in ids],
            "error": [by_clip["error"].get(v) for v in ids],
        }
    )


def score_meta_file(
    task: str,
    meta_path: str | Path,
    settings: Settings,
    options: JobOptions,
    *,
    output: str | Path | None = None,
    flow_backend: str = "unimatch",
) -> tuple[Path, str]:
    """Score a meta file and write the Open-Sora style output; returns (path, one-line summary).

    The output holds every input row and column as written, plus the score and `<score>_error`.
    """
    meta_path = Path(meta_path)
    column = SCORE_COLUMN[task]
    meta = read_meta(meta_path, drop_duplicates=False)
    scores = row_scores(task, meta, settings, options, flow_backend)
    out = file_columns(meta)
    out[column] = scores[column].tolist()
    out[f"{column}_error"] = scores["error"].tolist()
    target = Path(output) if output else default_output(meta_path, column)
    write_table(out, target)
    errors = int(out[f"{column}_error"].notna().sum())
    return target, f"{len(out) - errors} scored, {errors} with errors"
