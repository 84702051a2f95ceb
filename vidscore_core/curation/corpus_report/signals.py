"""The signals a corpus report covers, read from the score registry (vidscore_core/scores.py).

This is the report's only contact with the registry: a signal is a column of a score table that is
either the score itself or the target of a filter bound (e.g. `ocr_area` behind `--ocrareamax`), so a
newly declared score shows up in the report without any change here or elsewhere in the report.
"""

from __future__ import annotations

from dataclasses import dataclass

from vidscore_core import scores

NUMERIC_TYPES = ("DOUBLE", "FLOAT", "INTEGER", "BIGINT", "SMALLINT", "TINYINT", "REAL", "DECIMAL")


@dataclass(frozen=True)
class Bound:
    """A filter flag on a signal: keep clips with `column op value` (op is ">=" or "<=")."""

    flag: str
    column: str
    op: str


@dataclass(frozen=True)
class Signal:
    score: str  # the score's CLI name
    table: str  # its table
    column: str  # the column reported
    dtype: str  # its DuckDB type
    unit: str
    bounds: tuple[Bound, ...]  # the filter flags on this column, in registry order

    @property
    def numeric(self) -> bool:
        """Quantiles, histograms and thresholds; other columns (labels, flags) get value counts."""
        return self.dtype.upper().startswith(NUMERIC_TYPES)

    @property
    def label(self) -> str:
        return self.column if self.column == self.score else f"{self.column} ({self.score})"


def registry_bounds() -> tuple[Bound, ...]:
    """Every filter bound the registry declares, in its order (the `vidscore filter` flags)."""
    return tuple(Bound(flag, column, op) for flag, column, op in scores.FILTER_BOUNDS)


def signals() -> tuple[Signal, ...]:
    """The score column of every registered score, then its other bounded columns."""
    bounds = registry_bounds()
    out = []
    for score in scores.SCORES:
        types = dict(score.columns)
        bounded = [b.column for b in bounds if b.column in types]
        for column in dict.fromkeys([score.column, *bounded]):
            unit = score.unit if column == score.column else f"{column}, a detail of the {score.name} score"
            out.append(Signal(score=score.name, table=score.table, column=column, dtype=types[column], unit=unit,
                              bounds=tuple(b for b in bounds if b.column == column)))  # fmt: skip
    return tuple(out)


def tables() -> tuple[str, ...]:
    """The score tables the signals come from, once each, in registry order."""
    return tuple(dict.fromkeys(s.table for s in signals()))
