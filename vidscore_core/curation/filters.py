"""Filters over scores and technical limits: one spec for CSV files (Open-Sora's datautil) and for the tables."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, make_dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from vidscore_core.ingest.meta import numeric_column
from vidscore_core.scores import FILTER_BOUNDS, SCORES

# (spec field, score column, comparison), from the score registry, in Open-Sora datautil's order.
BOUNDS: tuple[tuple[str, str, str], ...] = FILTER_BOUNDS
# Technical limits: (spec field, derived column, comparison). The columns are computed from a clip's
# metadata (`technical_columns`): frames, fps, height × width, aspect ratio = height / width (as in
# Open-Sora's meta files: 0.5625 for 16:9 landscape), duration in seconds.
LIMITS: tuple[tuple[str, str, str], ...] = (
    ("fmin", "num_frames", ">="),
    ("fmax", "num_frames", "<="),
    ("fpsmax", "fps", "<="),
    ("hwmax", "hw", "<="),
    ("aspect_min", "aspect_ratio", ">="),
    ("aspect_max", "aspect_ratio", "<="),
    ("duration_min", "duration", ">="),
    ("duration_max", "duration", "<="),
)
# The SQL expression of each derived column over the `videos` table (alias `v`).
LIMIT_SQL: dict[str, str] = {
    "num_frames": "v.num_frames",
    "fps": "v.fps",
    "hw": "(v.height * v.width)",
    "aspect_ratio": "(v.height::DOUBLE / nullif(v.width, 0))",
    "duration": "v.duration_s",
}
# (minimum, maximum) pairs: a score declaring both bounds, and the technical ranges.
_RANGES = (
    *((s.lower, s.upper) for s in SCORES if s.lower and s.upper),
    ("fmin", "fmax"), ("aspect_min", "aspect_max"), ("duration_min", "duration_max"),
)  # fmt: skip


def technical_columns(df: pd.DataFrame) -> pd.DataFrame:
    """`num_frames`, `fps`, `hw`, `aspect_ratio`, `duration` from whatever metadata columns `df` has
    (num_frames, fps, height, width, duration_s or duration); NaN where they cannot be derived."""

    def col(*names: str) -> pd.Series:
        return numeric_column(df, *names)

    frames, fps, height, width = col("num_frames"), col("fps"), col("height"), col("width")
    duration = col("duration_s", "duration")
    duration = duration.where(duration.notna(), frames / fps.where(fps > 0))
    return pd.DataFrame(
        {"num_frames": frames, "fps": fps, "hw": height * width,
         "aspect_ratio": height / width.where(width > 0), "duration": duration},
        index=df.index,
    )  # fmt: skip


class _FilterRules:
    """What a FilterSpec does with its fields (the fields themselves are listed below, from the
    score registry and the technical limits)."""

    def __post_init__(self) -> None:
        """Reject bounds no row could meaningfully pass: NaN, ±inf, non-numbers, a min above its max."""
        for name, _, _ in (*BOUNDS, *LIMITS):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value}")
        for flag in ("keep_unscored", "dedup"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{flag} must be true or false, got {getattr(self, flag)!r}")
        for low, high in _RANGES:
            lo, hi = getattr(self, low), getattr(self, high)
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"{low} {lo} is above {high} {hi}: nothing could pass")

    def missing_columns(self, columns) -> list[tuple[str, str]]:
        """(bound, score column) for each active bound whose column is not among `columns`."""
        present = set(columns)
        return [(name, column) for name, column, _, _ in self.active() if column not in present]

    def active(self) -> list[tuple[str, str, str, float]]:
        return self._given(BOUNDS)

    def active_limits(self) -> list[tuple[str, str, str, float]]:
        return self._given(LIMITS)

    def _given(self, bounds) -> list[tuple[str, str, str, float]]:
        """(flag, column, op, value) of each of `bounds` this spec sets."""
        return [(name, col, op, getattr(self, name)) for name, col, op in bounds if getattr(self, name) is not None]

    def any_active(self) -> bool:
        return bool(self.active() or self.active_limits() or self.dedup)

    def suffix(self) -> str:
        """Open-Sora datautil's file-name suffix, e.g. `_aesmin5.0_flowmin0.5_fmax300.0_dedup`."""
        parts = [f"_{name}{value}" for name, _, _, value in (*self.active(), *self.active_limits())]
        return "".join(parts) + ("_dedup" if self.dedup else "")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def bound_masks(self, df: pd.DataFrame) -> list[tuple[str, pd.Series]]:
        """(label, rows passing it) per active bound, limit and dedup; label e.g. "aesmin 5.0"."""
        out: list[tuple[str, pd.Series]] = []
        for name, column, op, value in self.active():
            if column not in df.columns:
                raise ValueError(f"cannot apply {name}: the table has no {column!r} column (score it first)")
            scores = numeric_column(df, column)
            passed = scores >= value if op == ">=" else scores <= value
            out.append((f"{name} {value}", passed | (scores.isna() if self.keep_unscored else False)))
        if self.active_limits():
            technical = technical_columns(df)
            for name, column, op, value in self.active_limits():
                values = technical[column]  # unknown metadata fails
                out.append((f"{name} {value}", (values >= value) if op == ">=" else (values <= value)))
        if self.dedup:
            if "dup_keep" not in df.columns:
                raise ValueError("cannot apply --dedup: the table has no 'dup_keep' column (run `vidscore dedup` first)")
            out.append(("dedup", df["dup_keep"].map(lambda v: str(v).strip().lower() in ("true", "1", "1.0"))))
        return out

    def mask(self, df: pd.DataFrame) -> pd.Series:
        """Rows that pass every bound (missing score: pass only with keep_unscored)."""
        keep = pd.Series(True, index=df.index)
        for _, passed in self.bound_masks(df):
            keep &= passed
        return keep

    def sql_clauses(self, alias: str = "") -> list[tuple[str, str, list[float]]]:
        """(label, SQL predicate, its parameters) per active bound and limit, labelled as `bound_masks`."""
        out = []
        for name, column, op, value in self.active():
            col = f'{alias}"{column}"'
            clause = f"{col} {op} ?"
            out.append((f"{name} {value}", f"({clause} OR {col} IS NULL)" if self.keep_unscored else clause, [value]))
        for name, column, op, value in self.active_limits():
            out.append((f"{name} {value}", f"coalesce({LIMIT_SQL[column]} {op} ?, FALSE)", [value]))
        return out

    def sql(self, alias: str = "") -> tuple[str, list[float]]:
        """The same predicate in SQL (parameterized), for the DuckDB tables."""
        clauses = self.sql_clauses(alias)
        return (" AND ".join(c for _, c, _ in clauses) or "TRUE"), [p for _, _, ps in clauses for p in ps]


def removed_line(removed: dict[str, int]) -> str:
    """"removed by aesmin 5.0: 3, dedup: 1" (each bound alone: a row failing two counts in both)."""
    return "removed by " + ", ".join(f"{label}: {n}" for label, n in removed.items()) if removed else ""


# Thresholds; None means "no bound": one per registered score bound (aesmin, flowmin, flowmax,
# matchmin, …), then the technical limits. `keep_unscored` keeps rows whose bounded score is NULL;
# `dedup` keeps only the `keep` clip of each near-duplicate group.
FilterSpec = make_dataclass(
    "FilterSpec",
    [
        *((flag, float | None, None) for flag, _, _ in BOUNDS),
        ("keep_unscored", bool, False),
        *((name, float | None, None) for name, _, _ in LIMITS),
        ("dedup", bool, False),
    ],
    bases=(_FilterRules,),
    frozen=True,
    namespace={"__module__": __name__, "__doc__": "Score thresholds, technical limits and dedup (see above)."},
)


def filter_meta_file(
    meta: str | Path,
    spec: FilterSpec,
    output: str | Path | None = None,
    *,
    probe_workers: int = 4,
    notify: Callable[[str], None] | None = None,
    overwrite: bool = False,
) -> tuple[Path, int, int]:
    """Filter a meta file on scores, technical limits and `dup_keep`; returns (output path, rows kept,
    rows read).

    Every row and column as written (duplicates too, paths as in the file). Technical limits read the
    meta's own columns (`technical_columns`) and probe a file only for the rows where a limit's value
    cannot be derived from them; a file that cannot be read fails every limit it was probed for.
    `notify` receives one line about the probing, when any was needed, then one with the rows each bound
    removed (`removed_line`). The output path is checked
    first (`check_output`; `overwrite` allows it to be the meta file). Only the meta reader is
    imported, not the scoring stack, so filtering a file with its metadata takes a fraction of a second.
    """
    from vidscore_core.ingest.meta import check_output, file_columns, local_name, read_meta, write_table
    from vidscore_core.media.sources import safe_url

    if not spec.any_active():
        flags = ", ".join(f"--{flag}" for flag, _, _ in BOUNDS)
        raise ValueError(f"give at least one of {flags}, a technical limit or --dedup")
    named, shown = local_name(meta), safe_url(str(meta))
    target = Path(output) if output else named.with_name(f"{named.stem}{spec.suffix()}{named.suffix or '.csv'}")
    check_output(target, meta, overwrite=overwrite)
    read = read_meta(meta, drop_duplicates=False)
    df = file_columns(read)
    absent = spec.missing_columns(df.columns)
    if absent:
        columns = list(dict.fromkeys(column for _, column in absent))
        bounds = ", ".join(f"--{name}" for name, _ in absent)
        raise ValueError(
            f"{shown} has no {' or '.join(repr(c) for c in columns)} column (needed by {bounds}): run "
            f"`vidscore score all {shown}` first and filter its output, {named.stem}_scores.csv"
        )
    if spec.dedup and "dup_keep" not in df.columns:
        raise ValueError(
            f"{shown} has no 'dup_keep' column (needed by --dedup): run `vidscore dedup {shown}` first "
            f"and filter its output, {named.stem}_dedup{named.suffix or '.csv'}"
        )
    view = df
    if spec.active_limits():
        view, probed, unreadable = with_probed_metadata(df, list(read["path"]), spec, workers=probe_workers)
        if probed and notify is not None:
            bad = f"; {unreadable} could not be read and fail the technical limits" if unreadable else ""
            notify(f"probed {probed} file(s) for metadata the meta file does not give{bad}")
    masks = spec.bound_masks(view)
    keep = pd.Series(True, index=df.index)
    for _, passed in masks:
        keep &= passed
    kept = df[keep]
    if notify is not None:
        notify(removed_line({label: int((~passed).sum()) for label, passed in masks}))
    write_table(kept, target)
    return target, len(kept), len(df)


# The metadata columns a probe gives, as `technical_columns` reads them.
PROBE_COLUMNS = ("num_frames", "fps", "height", "width", "duration_s")


def probe_paths(paths: Sequence[str], *, workers: int = 4) -> dict[str, dict[str, Any]]:
    """`media.probe.probe` of each distinct path in supervised worker processes, as ingestion probes
    (`probe_many`): a decoder that aborts or hangs on one file costs that file its facts, not the
    command. path -> the probe's dict (`error` set for a file that cannot be read)."""
    from vidscore_core.media.probe import probe_many

    unique = list(dict.fromkeys(paths))
    if not unique:
        return {}
    return dict(zip(unique, probe_many(unique, workers=workers), strict=True))


def probed_metadata(info: dict[str, Any] | None) -> dict[str, float]:
    """PROBE_COLUMNS of one probe as numbers; all NaN when the file could not be read (its facts are
    not known, so it fails every technical limit)."""
    if not info or info.get("error"):
        return dict.fromkeys(PROBE_COLUMNS, float("nan"))
    out = dict.fromkeys(PROBE_COLUMNS, float("nan"))
    for name in PROBE_COLUMNS:
        value = info.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def with_probed_metadata(
    df: pd.DataFrame, paths: Sequence[str], spec: FilterSpec, *, workers: int = 4
) -> tuple[pd.DataFrame, int, int]:
    """`df` with metadata columns from which `technical_columns` derives every active limit's value:
    the meta's own values where they give it, a probe of the file (`paths`, one per row, resolved)
    where they do not. Each derived value comes whole from one source: `hw` and `aspect_ratio` from
    the meta's height and width when both are usable, else from the probe's.

    Returns (frame for `spec.mask`, files probed, files that could not be read). Only rows whose
    active limits cannot be derived from the meta are probed; `df` itself is not modified.
    """
    own = technical_columns(df)
    needed = pd.Series(False, index=df.index)
    for _, column, _, _ in spec.active_limits():
        needed |= own[column].isna()
    if not needed.any():
        return df, 0, 0
    positions = [i for i, need in enumerate(needed.tolist()) if need]
    infos = probe_paths([paths[i] for i in positions], workers=workers)
    facts = [probed_metadata(infos[paths[i]]) for i in positions]
    probed = pd.DataFrame(facts, index=df.index[positions], columns=list(PROBE_COLUMNS)).reindex(df.index)
    probed_t = technical_columns(probed)

    own_pair = own["hw"].notna() & own["aspect_ratio"].notna()
    view = df.copy()
    view["num_frames"] = own["num_frames"].where(own["num_frames"].notna(), probed_t["num_frames"])
    view["fps"] = own["fps"].where(own["fps"].notna(), probed_t["fps"])
    view["height"] = numeric_column(df, "height").where(own_pair, probed["height"])
    view["width"] = numeric_column(df, "width").where(own_pair, probed["width"])
    view["duration_s"] = own["duration"].where(own["duration"].notna(), probed_t["duration"])
    unreadable = sum(1 for info in infos.values() if info.get("error"))
    return view, len(infos), unreadable


