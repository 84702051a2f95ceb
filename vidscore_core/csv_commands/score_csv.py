"""`vidscore score <name>|all`: Open-Sora compatible scoring of a meta file, one path for both.

The output is the input meta file, every row and column as written, plus each score's column and
`<column>_error`: `META_<column>.csv` for one score, `META_scores.csv` for `all` (which
`vidscore filter META_scores.csv --aesmin … --flowmin … --matchmin …` reads as it is). Every score is
computed the same way whichever command asks, so the values are the same bits: the clips are decoded
once for all scores (`score_videos`), a score declared `per_row` (matching) gets one value per meta row
(each row its own caption), the others one per clip, copied to each row listing the clip.
`all` skips the scores that cannot run (model files missing, a column they read absent) and says why;
their columns are left out, so a filter on them fails loudly instead of dropping every row.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from vidscore_core import scores, weights
from vidscore_core.ingest.meta import (
    MetaError,
    check_output,
    default_output,
    file_columns,
    read_meta,
    write_table,
)
from vidscore_core.scores import Score, Skipped
from vidscore_core.scoring.clip_frames import AESTHETIC_POINTS
from vidscore_core.scoring.options import JobOptions
from vidscore_core.scoring.per_clip import score_videos
from vidscore_core.scoring.producers import ScoreInputs
from vidscore_core.settings import Settings

ALL = "all"

# (label) → a context manager yielding the (done, total) progress callback of the scoring pass, or None.
ProgressFactory = Callable[[str], contextlib.AbstractContextManager]


@dataclass
class Result:
    output: Path
    rows: int
    scored: dict[str, str]  # score name → "N scored, M with errors"
    skipped: list[Skipped]


def input_rows(meta_path: Path) -> tuple[pd.DataFrame, list[str]]:
    """Every row and column of the meta file as written (duplicates too, and columns whatever their
    names, `video_id` included), and each row's video_id."""
    df = read_meta(meta_path, drop_duplicates=False)
    return file_columns(df), list(df["video_id"])


def score_rows(chosen: Sequence[Score], meta: pd.DataFrame, settings: Settings,
               options: JobOptions) -> dict[str, pd.DataFrame]:  # fmt: skip
    """`video_id`, the score's columns and `error` of every row of `meta` (read with drop_duplicates=False),
    in row order, for each of `chosen`; one decode per distinct clip serves them all."""
    derived = [s for s in chosen if s.reads_embeddings]
    distinct = meta.drop_duplicates(subset="video_id", keep="first").reset_index(drop=True)
    tables = [*([scores.EMBEDDINGS.table] if derived else []), *(s.table for s in chosen if s.job)]
    points = tuple(sorted({p for s in derived for p in s.frame_points}))
    frames, _ = score_videos(tables, distinct.assign(error=None), "cli", settings, options,
                             embedding_points=points or AESTHETIC_POINTS)  # fmt: skip
    out: dict[str, pd.DataFrame] = {}
    for score in chosen:
        scored = meta if score.per_row else distinct
        if score.reads_embeddings:
            inputs = ScoreInputs(batch="cli", videos=scored.assign(error=None).reset_index(drop=True),
                                 settings=settings, options=options, embedding_rows=frames[scores.EMBEDDINGS.table])  # fmt: skip
            rows = score.produce()(inputs)
        else:
            rows = frames[score.table]
        out[score.name] = _to_meta_rows(score, rows, meta)
    return out


def output_columns(score: Score) -> tuple[str, ...]:
    """The columns a score adds to a CSV output before its `<score>_error`: the score, then its other values."""
    return tuple(name for name, _ in score.value_columns)


def _to_meta_rows(score: Score, rows: pd.DataFrame, meta: pd.DataFrame) -> pd.DataFrame:
    """A score's rows, one per meta row in order: as they are for a per-row score, else by clip.
    Counts (ocr, shots) stay integers (pandas would make floats of them next to missing values)."""
    columns = [*output_columns(score), "error"]
    integers = {name: "Int64" for name, kind in score.value_columns if kind == "INTEGER"}
    rows = rows[["video_id", *columns]].astype(integers).reset_index(drop=True)
    if score.per_row:
        return rows
    by_clip = rows.set_index("video_id")
    ids = list(meta["video_id"])
    return pd.DataFrame({"video_id": ids, **{c: [by_clip[c].get(v) for v in ids] for c in columns}})


def choose(name: str, meta: pd.DataFrame, settings: Settings, options: JobOptions) -> tuple[list[Score], list[Skipped]]:
    """The scores `vidscore score <name>` computes, and those `all` skips: `all` runs what can run now
    (`scores.available`); a named score that cannot run is an error saying why."""
    found = scores.available(settings, options.score_options, meta.columns)
    if name == ALL:
        if not found.scores:
            raise nothing_to_run_error(found.skipped)
        return found.scores, found.skipped
    score = scores.get(name)
    for skipped in found.skipped:
        if skipped.score == score.name:
            if skipped.missing:
                raise weights.missing_error(list(skipped.missing), f"`vidscore score {name}`")
            raise MetaError(f"`vidscore score {name}`: {skipped.reason}")
    return [score], []


def nothing_to_run_error(skipped: list[Skipped]) -> Exception:
    """The error when no score can run: every missing model file at once when that is the cause."""
    absent = [m for s in skipped for m in s.missing]
    if absent and all(s.missing for s in skipped):
        unique = list({m.name: m for m in absent}.values())
        error = weights.missing_error(unique, "`vidscore score all` (no score can run)")
        hints = [s.reason.rpartition(" (or pass ")[2] for s in skipped if " (or pass " in s.reason]
        if hints:
            message = f"{error}; or pass {hints[0].removesuffix(')')}"
            error = weights.WeightsMissingError(error.name, error.path, message, error.missing)
        return error
    reasons = "; ".join(f"{s.score}: {s.reason}" for s in skipped)
    return ValueError(f"no score can run: {reasons}")


def score_file(
    name: str,
    meta_path: str | Path,
    settings: Settings,
    options: JobOptions,
    *,
    output: str | Path | None = None,
    progress: ProgressFactory | None = None,
    overwrite: bool = False,
) -> Result:
    """Score a meta file with score `name` (or `all` the scores that can run) and write the output.

    The output path is checked before any work (`check_output`; `overwrite` allows it to be the meta file).
    Raises WeightsMissingError (listing every missing file), MetaError or ValueError when nothing can run.
    """
    column = "scores" if name == ALL else scores.get(name).column
    target = check_output(Path(output) if output else default_output(meta_path, column), meta_path,
                          overwrite=overwrite)  # fmt: skip
    meta = read_meta(meta_path, drop_duplicates=False)
    chosen, skipped = choose(name, meta, settings, options)
    out = file_columns(meta)
    with _progress(progress, "+".join(s.name for s in chosen)) as callback:
        job_options = replace(options, progress=callback) if callback is not None else options
        by_score = score_rows(chosen, meta, settings, job_options)
    scored: dict[str, str] = {}
    for score in chosen:
        for column in output_columns(score):
            out[column] = by_score[score.name][column].tolist()
        out[score.error_column] = by_score[score.name]["error"].tolist()
        errors = int(out[score.error_column].notna().sum())
        scored[score.name] = f"{len(out) - errors} scored, {errors} with errors"
    write_table(out, target)
    return Result(output=target, rows=len(out), scored=scored, skipped=skipped)


@contextlib.contextmanager
def _progress(factory: ProgressFactory | None, label: str) -> Iterator[Callable[[int, int], None] | None]:
    if factory is None:
        yield None
        return
    with factory(label) as callback:
        yield callback
