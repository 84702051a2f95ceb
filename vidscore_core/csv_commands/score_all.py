"""`vidscore score all`: every score the present weights allow, in one Open-Sora style output file.

The output is the input meta file, every row and column as written, plus `aes`, `flow` and `match` (each
with its `<score>_error`) for the scores that ran: `META_scores.csv` by default, which
`vidscore filter META_scores.csv --aesmin … --flowmin … --flowmax … --matchmin …` reads as it is.
A score that cannot run (its model files are missing, or matching without a `text` column) is skipped
and named with the reason; its column is left out, so a filter on it fails loudly instead of dropping
every row.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from vidscore_core import weights
from vidscore_core.csv_commands.score_csv import SCORE_COLUMN, default_output, input_rows, score_many
from vidscore_core.ingest.meta import read_meta, write_table
from vidscore_core.scores import SCORES as REGISTERED
from vidscore_core.scores import get as get_score
from vidscore_core.scoring.options import JobOptions
from vidscore_core.settings import Settings

# Output column order; also the order the scores run in.
SCORES: tuple[str, ...] = tuple(score.name for score in REGISTERED)
FLOW_BACKENDS = ("unimatch", "dis")

# (label) → a context manager yielding the (done, total) progress callback of the scoring pass, or None.
ProgressFactory = Callable[[str], contextlib.AbstractContextManager]


@dataclass(frozen=True)
class Skipped:
    """A score that was not computed, and why."""

    score: str
    reason: str
    missing: tuple[weights.MissingWeights, ...] = ()


@dataclass
class Plan:
    """Which scores can run on a meta file with the present weights, and which cannot (with why)."""

    run: list[str] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)


@dataclass
class Result:
    output: Path
    rows: int
    scored: dict[str, str]  # score → "N scored, M with errors"
    skipped: list[Skipped]


def output_path(meta: Path) -> Path:
    """META.csv → META_scores.csv (a Parquet meta file keeps its format)."""
    return default_output(meta, "scores")


def plan(columns, settings: Settings, flow_backend: str = "unimatch") -> Plan:
    """Decide what runs: a score runs when all its model files are present (and matching has captions)."""
    if flow_backend not in FLOW_BACKENDS:
        raise ValueError(f"unknown flow backend {flow_backend!r}: choose one of {', '.join(FLOW_BACKENDS)}")
    result = Plan()
    for score in SCORES:
        absent = tuple(weights.missing(list(weights.needed_for(score, flow_backend)), settings))
        if absent:
            reason = "; ".join(m.describe() for m in absent)
            if score == "flow":
                reason += " (or pass --backend dis for the weight-free OpenCV DIS estimate)"
            result.skipped.append(Skipped(score, reason, absent))
        elif score == "matching" and "text" not in set(columns):
            result.skipped.append(Skipped(score, "the meta file has no 'text' column (captions) to match"))
        else:
            result.run.append(score)
    return result


def nothing_to_run_error(skipped: list[Skipped]) -> Exception:
    """The error when no score can run: every missing model file at once when that is the cause."""
    absent = [m for s in skipped for m in s.missing]
    if absent and all(s.missing for s in skipped):
        unique = list({m.name: m for m in absent}.values())
        error = weights.missing_error(unique, "`vidscore score all` (no score can run)")
        if any(m.name == "unimatch" for m in unique):
            message = f"{error}; or score flow without weights: `vidscore score all META --backend dis`"
            error = weights.WeightsMissingError(error.name, error.path, message, error.missing)
        return error
    reasons = "; ".join(f"{s.score}: {s.reason}" for s in skipped)
    return ValueError(f"no score can run: {reasons}")


def score_all_file(
    meta_path: str | Path,
    settings: Settings,
    options: JobOptions,
    *,
    output: str | Path | None = None,
    flow_backend: str = "unimatch",
    progress: ProgressFactory | None = None,
) -> Result:
    """Compute every score the present weights allow and write them into one file.

    Raises WeightsMissingError (listing every missing file) or ValueError when no score can run.
    """
    meta_path = Path(meta_path)
    meta = read_meta(meta_path)
    decided = plan(meta.columns, settings, flow_backend)
    if not decided.run:
        raise nothing_to_run_error(decided.skipped)
    out, ids = input_rows(meta_path)
    scored: dict[str, str] = {}
    # One decode per clip for all of them; the progress follows the decoding pass.
    with _progress(progress, "+".join(decided.run)) as callback:
        job_options = replace(options, progress=callback) if callback is not None else options
        by_score = score_many(decided.run, meta, settings, job_options, flow_backend)
    for score in decided.run:
        column = SCORE_COLUMN[score]
        rows = by_score[score].set_index("video_id")
        for name in get_score(score).filter_columns:
            out[name] = [rows[name].get(i) for i in ids]
        out[f"{column}_error"] = [rows["error"].get(i) for i in ids]
        errors = int(out[f"{column}_error"].notna().sum())
        scored[score] = f"{len(out) - errors} scored, {errors} with errors"
    target = Path(output) if output else output_path(meta_path)
    write_table(out, target)
    return Result(output=target, rows=len(out), scored=scored, skipped=decided.skipped)


@contextlib.contextmanager
def _progress(factory: ProgressFactory | None, label: str) -> Iterator[Callable[[int, int], None] | None]:
    if factory is None:
        yield None
        return
    with factory(label) as callback:
        yield callback
