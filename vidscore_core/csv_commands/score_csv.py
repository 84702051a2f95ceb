"""Open-Sora compatible scoring of a meta file: every input row and column, plus the score and its error."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from vidscore_core import scores
from vidscore_core.ingest.meta import file_columns, read_meta, write_table
from vidscore_core.scores import SCORES
from vidscore_core.scoring.clip_frames import AESTHETIC_POINTS
from vidscore_core.scoring.options import JobOptions
from vidscore_core.scoring.per_clip import score_videos
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
    """Score the clips of a read meta table with the score's registered producer or job; returns
    `video_id`, the score and `error`: one row per distinct clip, or per row of `meta` for a score
    declared `per_row` (matching: a clip listed with several captions). Each clip is decoded once."""
    return score_many([task], meta, settings, options, flow_backend)[task]


def score_many(tasks: Sequence[str], meta: pd.DataFrame, settings: Settings, options: JobOptions,
               flow_backend: str = "unimatch") -> dict[str, pd.DataFrame]:  # fmt: skip
    """`score_rows` of several scores with one decode per clip: the frames of the CLIP-derived scores
    (their frame points) and of the scores with a job (flow) come from one pass over each file."""
    chosen = [scores.get(task) for task in tasks]
    derived = [s for s in chosen if s.reads_embeddings]
    decoding = [s for s in chosen if s.job]
    distinct = meta.drop_duplicates(subset="video_id", keep="first").reset_index(drop=True)
    tables = [*(["clip_embeddings"] if derived else []), *(s.table for s in decoding)]
    points = tuple(sorted({p for s in derived for p in s.frame_points}))
    frames, _ = score_videos(tables, distinct.assign(error=None), "cli", settings, options,
                             flow_backend=flow_backend, embedding_points=points or AESTHETIC_POINTS)  # fmt: skip
    out = {s.name: frames[s.table] for s in decoding}
    for s in derived:
        videos = (meta if s.per_row else distinct).assign(error=None).reset_index(drop=True)
        inputs = ScoreInputs(batch="cli", videos=videos, settings=settings, options=options,
                             flow_backend=flow_backend, embedding_rows=frames["clip_embeddings"])  # fmt: skip
        out[s.name] = s.produce()(inputs)
    return {s.name: _counts_as_integers(s, out[s.name][["video_id", *s.filter_columns, "error"]]) for s in chosen}


def _counts_as_integers(score: scores.Score, rows: pd.DataFrame) -> pd.DataFrame:
    """INTEGER columns (ocr, shots) stay integers in the CSV ("2", not "2.0"), empty where unscored."""
    types = dict(score.columns)
    return rows.astype({c: "Int64" for c in score.filter_columns if types.get(c) == "INTEGER"}).reset_index(drop=True)


def row_scores(task: str, meta: pd.DataFrame, settings: Settings, options: JobOptions,
               flow_backend: str = "unimatch") -> pd.DataFrame:  # fmt: skip
    """`video_id`, the score (and the detail columns its filters read) and `error` for every row of
    `meta` (read with drop_duplicates=False), in row order: a clip listed twice gets its score twice,
    and matching scores each caption."""
    rows = score_rows(task, meta, settings, options, flow_backend)
    if scores.get(task).per_row:
        return rows
    by_clip = rows.set_index("video_id")
    ids = list(meta["video_id"])
    columns = [*scores.get(task).filter_columns, "error"]
    return pd.DataFrame({"video_id": ids, **{c: [by_clip[c].get(v) for v in ids] for c in columns}})


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

    The output holds every input row and column as written, plus the score (and the detail columns
    its filters read, e.g. ocr_area) and `<score>_error`.
    """
    meta_path = Path(meta_path)
    column = SCORE_COLUMN[task]
    meta = read_meta(meta_path, drop_duplicates=False)
    result = row_scores(task, meta, settings, options, flow_backend)
    out = file_columns(meta)
    for name in scores.get(task).filter_columns:
        out[name] = result[name].tolist()
    out[f"{column}_error"] = result["error"].tolist()
    target = Path(output) if output else default_output(meta_path, column)
    write_table(out, target)
    errors = int(out[f"{column}_error"].notna().sum())
    return target, f"{len(out) - errors} scored, {errors} with errors"
