"""Threshold filters over scores: one spec for CSV files (Open-Sora's datautil) and for DuckDB tables."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

# (spec field, score column, comparison) in Open-Sora datautil's naming order.
BOUNDS: tuple[tuple[str, str, str], ...] = (
    ("aesmin", "aes", ">="),
    ("matchmin", "match", ">="),
    ("flowmin", "flow", ">="),
    ("flowmax", "flow", "<="),
)


@dataclass(frozen=True)
class FilterSpec:
    """Thresholds; None means "no bound". `keep_unscored` keeps rows whose bounded score is NULL."""

    aesmin: float | None = None
    flowmin: float | None = None
    flowmax: float | None = None
    matchmin: float | None = None
    keep_unscored: bool = False

    def __post_init__(self) -> None:
        """Reject bounds no row could meaningfully pass: NaN, ±inf, non-numbers, flowmin > flowmax."""
        for name, _, _ in BOUNDS:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value}")
        if not isinstance(self.keep_unscored, bool):
            raise ValueError(f"keep_unscored must be true or false, got {self.keep_unscored!r}")
        if self.flowmin is not None and self.flowmax is not None and self.flowmin > self.flowmax:
            raise ValueError(f"flowmin {self.flowmin} is above flowmax {self.flowmax}: nothing could pass")

    def missing_columns(self, columns) -> list[tuple[str, str]]:
        """(bound, score column) for each active bound whose column is not among `columns`."""
        present = set(columns)
        return [(name, column) for name, column, _, _ in self.active() if column not in present]

    def active(self) -> list[tuple[str, str, str, float]]:
        return [
            (name, col, op, getattr(self, name))
            for name, col, op in BOUNDS
            if getattr(self, name) is not None
        ]

    def suffix(self) -> str:
        """Open-Sora datautil's file-name suffix, e.g. `_aesmin5.0_flowmin0.5`."""
        return "".join(f"_{name}{value}" for name, _, _, value in self.active())

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def mask(self, df: pd.DataFrame) -> pd.Series:
        """Rows that pass every bound (missing score: pass only with keep_unscored)."""
        keep = pd.Series(True, index=df.index)
        for name, column, op, value in self.active():
            if column not in df.columns:
                raise ValueError(f"cannot apply {name}: the table has no {column!r} column (score it first)")
            scores = pd.to_numeric(df[column], errors="coerce")
            passed = scores >= value if op == ">=" else scores <= value
            keep &= passed | (scores.isna() if self.keep_unscored else False)
        return keep

    def sql(self, alias: str = "") -> tuple[str, list[float]]:
        """The same predicate in SQL (parameterized), for the DuckDB tables."""
        clauses, params = [], []
        for _, column, op, value in self.active():
            col = f'{alias}"{column}"'
            clause = f"{col} {op} ?"
            clauses.append(f"({clause} OR {col} IS NULL)" if self.keep_unscored else clause)
            params.append(value)
        return (" AND ".join(clauses) or "TRUE"), params


def filter_meta_file(
    meta: str | Path, spec: FilterSpec, output: str | Path | None = None
) -> tuple[Path, int, int]:
    """Filter a scored CSV/Parquet meta file; returns (output path, rows kept, rows read).

    Every row and column as written (duplicates too, paths as in the file); only the meta reader is
    imported, not the scoring stack, so filtering a file takes a fraction of a second.
    """
    from vidscore_core.meta import read_meta

    meta = Path(meta)
    if not spec.active():
        raise ValueError("give at least one of --aesmin, --flowmin, --flowmax, --matchmin")
    read = read_meta(meta, drop_duplicates=False)
    df = read.drop(columns=["path_original", "video_id", "meta_row"]).assign(path=read["path_original"])
    absent = spec.missing_columns(df.columns)
    if absent:
        columns = sorted({column for _, column in absent}, key=["aes", "flow", "match"].index)
        bounds = ", ".join(f"--{name}" for name, _ in absent)
        raise ValueError(
            f"{meta} has no {' or '.join(repr(c) for c in columns)} column (needed by {bounds}): run "
            f"`vidscore score all {meta}` first and filter its output, {meta.stem}_scores.csv"
        )
    kept = df[spec.mask(df)]
    target = Path(output) if output else meta.with_name(f"{meta.stem}{spec.suffix()}{meta.suffix or '.csv'}")
    _write_table(kept, target)
    return target, len(kept), len(df)


def _write_table(df: pd.DataFrame, path: Path) -> None:
    """CSV, or Parquet for a .parquet/.pq name, published with one rename (no half-written file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if path.suffix.lower() in (".parquet", ".pq"):
        df.to_parquet(tmp, index=False)
    else:
        df.to_csv(tmp, index=False)
    os.replace(tmp, path)
