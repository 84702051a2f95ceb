"""Open-Sora compatible scoring of a meta file: every input row and column, plus the score and its error."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from vidscore_core.meta import read_meta
from vidscore_core.scoring.clip_frames import AESTHETIC_POINTS, MATCHING_POINTS
from vidscore_core.scoring.jobs import ClipJob, FlowJob, clips_from_frame
from vidscore_core.scoring.options import JobOptions
from vidscore_core.settings import Settings

SCORE_COLUMN = {"aesthetic": "aes", "flow": "flow", "matching": "match"}


def default_output(meta: Path, column: str) -> Path:
    """META.csv → META_aes.csv (Open-Sora's naming); Parquet input keeps its format."""
    suffix = meta.suffix if meta.suffix.lower() in (".parquet", ".pq") else ".csv"
    return meta.with_name(f"{meta.stem}_{column}{suffix}")


def input_rows(meta_path: Path) -> tuple[pd.DataFrame, list[str]]:
    """Every row and column of the meta file as written (duplicates too), and each row's video_id."""
    df = read_meta(meta_path, drop_duplicates=False)
    ids = list(df["video_id"])
    raw = df.drop(columns=["path_original", "video_id", "meta_row"]).assign(path=df["path_original"])
    return raw, ids


def write_table(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix.lower() in (".parquet", ".pq"):
        df.to_parquet(tmp, index=False)
    else:
        df.to_csv(tmp, index=False)
    os.replace(tmp, path)


def score_rows(task: str, meta: pd.DataFrame, settings: Settings, options: JobOptions,
               flow_backend: str = "unimatch") -> pd.DataFrame:  # fmt: skip
    """Score the distinct clips of a read meta table; returns `video_id`, the score and `error`."""
    clips = clips_from_frame(meta)
    if task == "flow":
        job = FlowJob(settings, options, flow_backend)
        rows = job.rows(job.score(clips), batch="cli")
        return rows[["video_id", "flow", "error"]]
    job = ClipJob(settings, options)
    if task == "aesthetic":
        _ = job.clip_path, job.mlp  # fail on missing/mismatched weights before decoding anything
        items = job.embed(clips, AESTHETIC_POINTS)
        return job.aesthetic_rows(items, batch="cli")[["video_id", "aes", "error"]]
    items = job.embed(clips, MATCHING_POINTS)
    return job.matching_rows(items, [c.text for c in clips], batch="cli")[["video_id", "match", "error"]]


def score_meta_file(
    task: str,
    meta_path: str | Path,
    settings: Settings,
    options: JobOptions,
    *,
    output: str | Path | None = None,
    flow_backend: str = "unimatch",
) -> tuple[Path, str]:
    """Score a meta file and write the Open-Sora style output; returns (path, one-line summary)."""
    meta_path = Path(meta_path)
    column = SCORE_COLUMN[task]
    meta = read_meta(meta_path)
    scores = score_rows(task, meta, settings, options, flow_backend).set_index("video_id")
    out, ids = input_rows(meta_path)
    out[column] = [scores[column].get(i) for i in ids]
    out[f"{column}_error"] = [scores["error"].get(i) for i in ids]
    target = Path(output) if output else default_output(meta_path, column)
    write_table(out, target)
    errors = int(out[f"{column}_error"].notna().sum())
    return target, f"{len(out) - errors} scored, {errors} with errors"
