"""Open-Sora compatible scoring of a meta file: every input row and column, plus the score and its error."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from vidscore_core import scores
from vidscore_core.meta import file_columns, read_meta, write_table
from vidscore_core.scores import SCORES
from vidscore_core.scoring.jobs import ClipJob, clips_from_frame
from vidscore_core.scoring.options import JobOptions
from vidscore_core.scoring.producers import ScoreInputs
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
    """Score the clips of a read meta table with the score's registered producer; returns
    `video_id`, the score and `error`: one row per distinct clip, or per row of `meta` for a score
    declared `per_row` (matching: a clip listed with several captions). Each clip is decoded once."""
    score = scores.get(task)
    distinct = meta.drop_duplicates(subset="video_id", keep="first").reset_index(drop=True)
    videos = (meta if score.per_row else distinct).assign(error=None).reset_index(drop=True)
    embedding_rows = None
    if score.reads_embeddings:
        job = ClipJob(settings, options)
        _ = job.clip  # fail on missing or mismatched CLIP weights before decoding anything
        items = job.embed(clips_from_frame(distinct), score.frame_points)
        embedding_rows = job.embedding_rows(items, batch="cli", points=score.frame_points)
    inputs = ScoreInputs(batch="cli", videos=videos, settings=settings, options=options,
                         flow_backend=flow_backend, embedding_rows=embedding_rows)  # fmt: skip
    rows = score.produce()(inputs)
    return rows[["video_id", score.column, "error"]].reset_index(drop=True)


def row_scores(task: str, meta: pd.DataFrame, settings: Settings, options: JobOptions,
               flow_backend: str = "unimatch") -> pd.DataFrame:  # fmt: skip
    """`video_id`, the score and `error` for every row of `meta` (read with drop_duplicates=False),
    in row order: a clip listed twice gets its score twice, and matching scores each caption."""
    column = SCORE_COLUMN[task]
    rows = score_rows(task, meta, settings, options, flow_backend)
    if scores.get(task).per_row:
        return rows
    by_clip = rows.set_index("video_id")
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
    result = row_scores(task, meta, settings, options, flow_backend)
    out = file_columns(meta)
    out[column] = result[column].tolist()
    out[f"{column}_error"] = result["error"].tolist()
    target = Path(output) if output else default_output(meta_path, column)
    write_table(out, target)
    errors = int(out[f"{column}_error"].notna().sum())
    return target, f"{len(out) - errors} scored, {errors} with errors"
