"""The report's numbers, computed by DuckDB over the tables' Parquet files.

Two views of the corpus, each stated in the report:

* distributions: every row of a signal's score table over all batches (count, scored, errors by
  reason, quantiles, histogram) - what `SELECT … FROM <score table>` sees;
* what thresholds keep: clips, each counted once (a clip ingested in several batches counts with its
  first readable batch), readable (`videos.error IS NULL`), with their hours of footage
  (`videos.duration_s`): per threshold of each filter bound, per preset step by step, per source.

Only the columns needed are read. The join of `videos` with the score tables is one aggregate of
counts and sums under a DuckDB memory limit (joins and the window spill to a temporary folder beyond
it); no holistic aggregate (median) runs per source, since those hold every value in memory.
Measured: bench/results/corpus-report-*.md.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import duckdb
import numpy as np

from vidscore_core.curation.corpus_report.signals import Bound, Signal
from vidscore_core.curation.filtered_dataset import PRESETS
from vidscore_core.curation.filters import FilterSpec
from vidscore_core.tables.schema import quote_ident
from vidscore_core.tables.store import TableStore, set_utc
from vidscore_core.tables.views import pinned_source

QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)
HISTOGRAM_BINS = 40
HISTOGRAM_RANGE = (0.005, 0.995)  # quantiles bounding the bins; values outside are counted apart
TOP_REASONS = 8
TOP_VALUES = 20
MEMORY_LIMIT = "1GB"


@dataclass
class Histogram:
    edges: list[float]  # bin i holds edges[i] <= x < edges[i + 1]; the last bin also x == edges[-1]
    counts: list[int]
    below: int  # values < edges[0]
    above: int  # values > edges[-1]


@dataclass
class Distribution:
    """One signal over every row of its score table."""

    signal: Signal
    rows: int
    scored: int  # rows with a value
    errors: int  # rows with an `error` reason
    reasons: list[tuple[str, int]]  # the most frequent error reasons, most frequent first
    other_reasons: int  # rows whose reason is not among `reasons`
    minimum: float | None = None
    maximum: float | None = None
    mean: float | None = None
    quantiles: dict[float, float] = field(default_factory=dict)
    histogram: Histogram | None = None
    values: list[tuple[str, int]] = field(default_factory=list)  # non-numeric signals: value counts

    def quantile(self, q: float) -> float | None:
        return self.quantiles.get(q)


@dataclass
class Kept:
    """Clips and footage passing a condition (one threshold, one preset step)."""

    label: str
    clips: int
    seconds: float

    @property
    def hours(self) -> float:
        return self.seconds / 3600.0


@dataclass
class ThresholdTable:
    bound: Bound
    thresholds: list[float]
    kept: list[Kept]  # one per threshold


@dataclass
class PresetSteps:
    """A preset's bounds alone, all together, then with dedup."""

    name: str
    spec: dict[str, Any]
    steps: list[Kept]
    dedup_available: bool  # False when the preset wants dedup but `near_duplicates` is not materialized


@dataclass
class SourceCounts:
    source: str | None  # the meta file; None for the whole corpus
    clips: int  # distinct clips listed
    unreadable: int
    seconds: float  # footage of the readable clips
    scored: dict[str, int]  # signal column -> readable clips with a value
    errors: dict[str, int]  # signal column -> readable clips with an error reason for it
    presets: dict[str, Kept]  # preset -> clips kept by all its bounds (and dedup)

    @property
    def hours(self) -> float:
        return self.seconds / 3600.0


@dataclass
class CorpusNumbers:
    distributions: list[Distribution]
    thresholds: list[ThresholdTable]
    presets: list[PresetSteps]
    corpus: SourceCounts
    sources: list[SourceCounts]
    dedup_available: bool


# -- reading the tables --------------------------------------------------------------------------


@contextmanager
def tables_connection(store: TableStore, tables: Sequence[str]) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory DuckDB with a view per table over its Parquet files, as `vidscore sql`'s pinned views
    read them (projection pushed down: a query reads only its columns), under MEMORY_LIMIT."""
    store.ensure_layout(tables)  # an empty table still has its _schema.parquet, so the views bind
    with tempfile.TemporaryDirectory(prefix="vidscore-report-") as spill:
        if store.is_s3:  # DuckDB reads s3:// only with httpfs: go through the store's Arrow datasets
            con = store.connect(sql=" ".join(tables))
        else:
            con = duckdb.connect()
            set_utc(con)
            for table in tables:  # each partition's current version, listed once: the report reads one state
                con.execute(f"CREATE VIEW {quote_ident(table)} AS SELECT * FROM {pinned_source(store, table)}")
        try:
            con.execute(f"SET memory_limit = '{MEMORY_LIMIT}'")
            con.execute(f"SET temp_directory = '{spill}'")
            con.execute("SET preserve_insertion_order = false")  # lets the big aggregate stream
            yield con
        finally:
            con.close()


# -- distributions -------------------------------------------------------------------------------


def distribution(con: duckdb.DuckDBPyConnection, signal: Signal) -> Distribution:
    table, col = quote_ident(signal.table), quote_ident(signal.column)
    rows, scored, errors = con.execute(f"SELECT count(*), count({col}), count(error) FROM {table}").fetchone()
    reasons = con.execute(
        f"SELECT error, count(*) AS n FROM {table} WHERE error IS NOT NULL GROUP BY error ORDER BY n DESC, error "
        f"LIMIT {TOP_REASONS}"
    ).fetchall()
    out = Distribution(signal, rows, scored, errors, [(r, int(n)) for r, n in reasons],
                       errors - sum(int(n) for _, n in reasons))  # fmt: skip
    if not scored:
        return out
    if not signal.numeric:
        values = con.execute(
            f"SELECT CAST({col} AS VARCHAR) AS v, count(*) AS n FROM {table} WHERE {col} IS NOT NULL "
            f"GROUP BY v ORDER BY n DESC, v LIMIT {TOP_VALUES}"
        ).fetchall()
        out.values = [(v, int(n)) for v, n in values]
        return out
    qs = [*QUANTILES, *HISTOGRAM_RANGE]
    minimum, maximum, mean, quantiles = con.execute(
        f"SELECT min({col})::DOUBLE, max({col})::DOUBLE, avg({col})::DOUBLE, quantile_cont({col}, ?) FROM {table}",
        [qs],
    ).fetchone()
    by_q = dict(zip(qs, quantiles, strict=True))
    out.minimum, out.maximum, out.mean = minimum, maximum, mean
    out.quantiles = {q: by_q[q] for q in QUANTILES}
    out.histogram = histogram(
        con, signal, *histogram_range(minimum, maximum, *(by_q[q] for q in HISTOGRAM_RANGE))
    )
    return out


def histogram_range(minimum: float, maximum: float, low: float, high: float) -> tuple[float, float]:
    """The bins span the central quantiles (long tails would squash the picture), or everything
    when those coincide."""
    if high > low:
        return low, high
    return minimum, maximum


def histogram(con: duckdb.DuckDBPyConnection, signal: Signal, low: float, high: float) -> Histogram:
    bins = HISTOGRAM_BINS if high > low else 1
    edges = [float(e) for e in np.linspace(low, high, bins + 1)] if high > low else [low, high]
    col, table = quote_ident(signal.column), quote_ident(signal.table)
    filters = [f"count(*) FILTER (WHERE {col} >= ? AND {col} < ?)" for _ in range(bins - 1)]
    filters.append(f"count(*) FILTER (WHERE {col} >= ? AND {col} <= ?)")
    params = [e for i in range(bins) for e in (edges[i], edges[i + 1])]
    row = con.execute(
        f"SELECT count(*) FILTER (WHERE {col} < ?), count(*) FILTER (WHERE {col} > ?), {', '.join(filters)} "
        f"FROM {table}",
        [edges[0], edges[-1], *params],
    ).fetchone()
    return Histogram(edges, [int(n) for n in row[2:]], int(row[0]), int(row[1]))


# -- thresholds, presets and sources: one pass over the clips -------------------------------------


def threshold_values(dist: Distribution, bound: Bound, preset_values: Sequence[float]) -> list[float]:
    """Round thresholds across the bulk of the distribution (5th to 95th percentile), plus the
    presets' own values for this bound."""
    from matplotlib.ticker import MaxNLocator

    values = set(preset_values)
    low, high = dist.quantile(0.05), dist.quantile(0.95)
    if low is not None and high is not None:
        ticks = MaxNLocator(nbins=8, steps=[1, 2, 2.5, 5, 10]).tick_values(low, high) if high > low else [low]
        values |= {float(f"{t:.6g}") for t in ticks if low <= t <= high}
    return sorted(v for v in values if math.isfinite(v))


def clips_sql(signals: Sequence[Signal], with_dedup: bool) -> str:
    """One row per clip (first readable batch wins): its source, whether it is readable, its footage
    and technical columns, each signal, each score table's error, and whether dedup keeps it."""
    tables = list(dict.fromkeys(s.table for s in signals))
    alias = {table: f"t{i}" for i, table in enumerate(tables)}
    q = quote_ident
    select = ["v.meta_file", "v.error IS NULL AS readable", "v.duration_s", "v.num_frames", "v.fps",
              "v.height", "v.width"]  # fmt: skip
    select += [f"{alias[s.table]}.{q(s.column)}" for s in signals]
    select += [f"{alias[t]}.error AS {error_column(t)}" for t in tables]
    joins = [f"LEFT JOIN {q(t)} {alias[t]} USING (video_id, batch)" for t in tables]
    if with_dedup:
        select.append("coalesce(n.keep, TRUE) AS dup_keep")
        joins.append("LEFT JOIN near_duplicates n USING (video_id, batch)")
    else:
        select.append("TRUE AS dup_keep")
    return (
        f"SELECT {', '.join(select)} FROM videos v {' '.join(joins)} "
        "QUALIFY row_number() OVER (PARTITION BY v.video_id ORDER BY v.error IS NOT NULL, v.batch) = 1"
    )


def error_column(table: str) -> str:
    return f'"{table}_error"'


@dataclass
class _Condition:
    label: str
    sql: str
    params: list[Any]


def _spec_condition(label: str, spec: FilterSpec) -> _Condition:
    predicate, params = spec.sql(alias="v.")
    if spec.dedup:
        predicate = f"({predicate}) AND v.dup_keep"
    return _Condition(label, predicate, params)


def preset_conditions(name: str, spec: FilterSpec, dedup_available: bool) -> tuple[list[_Condition], bool]:
    """Each bound of a preset alone, all bounds, then all bounds with dedup (when it can be computed)."""
    base = {"keep_unscored": spec.keep_unscored}
    steps = [
        _spec_condition(f"{column} {op} {value:g}", FilterSpec(**base, **{flag: value}))
        for flag, column, op, value in (*spec.active(), *spec.active_limits())
    ]
    if len(steps) != 1:
        steps.append(_spec_condition("all bounds", replace(spec, dedup=False)))
    if spec.dedup and dedup_available:
        steps.append(_spec_condition("all bounds + dedup", spec))
    return steps, spec.dedup and not dedup_available


def compute(
    store: TableStore, signals: Sequence[Signal], presets: dict[str, FilterSpec] | None = None
) -> CorpusNumbers:
    """Every number of the report (see the module docstring), for `signals` and `presets`."""
    presets = PRESETS if presets is None else presets
    dedup_available = bool(store.partitions("near_duplicates"))
    tables = [
        "videos",
        *dict.fromkeys(s.table for s in signals),
        *(["near_duplicates"] if dedup_available else []),
    ]
    with tables_connection(store, tables) as con:
        dists = [distribution(con, s) for s in signals]
        by_column = {d.signal.column: d for d in dists}
        thresholds: list[tuple[Bound, list[float]]] = []
        for signal in signals:
            if not signal.numeric:
                continue
            for bound in signal.bounds:
                preset_values = [getattr(spec, bound.flag) for spec in presets.values()
                                 if getattr(spec, bound.flag, None) is not None]  # fmt: skip
                thresholds.append((bound, threshold_values(by_column[signal.column], bound, preset_values)))
        conditions = [
            _Condition(f"{b.column} {b.op} {t:g}", f"v.{quote_ident(b.column)} {b.op} ?", [t])
            for b, values in thresholds
            for t in values
        ]
        preset_steps = {
            name: preset_conditions(name, spec, dedup_available) for name, spec in presets.items()
        }
        for steps, _ in preset_steps.values():
            conditions += steps
        rows = _clip_aggregates(con, signals, conditions, dedup_available)
    corpus = next(r for r in rows if r["__total"])
    sources = sorted((r for r in rows if not r["__total"]), key=lambda r: str(r["meta_file"]))

    def split(row: dict[str, Any]) -> tuple[list[ThresholdTable], list[PresetSteps]]:
        """A row's kept counts, in the order of `conditions`: the threshold tables, then the presets."""
        kept = iter(_kept_lists(row, conditions))
        tables = [ThresholdTable(bound, values, [next(kept) for _ in values]) for bound, values in thresholds]
        steps = [PresetSteps(name, _spec_fields(presets[name]), [next(kept) for _ in plan], not missing_dedup)
                 for name, (plan, missing_dedup) in preset_steps.items()]  # fmt: skip
        return tables, steps

    def counts(row: dict[str, Any]) -> SourceCounts:
        return _source_counts(row, signals, {p.name: p.steps[-1] for p in split(row)[1] if p.steps})

    out_thresholds, out_presets = split(corpus)
    return CorpusNumbers(dists, out_thresholds, out_presets, counts(corpus),
                         [counts(r) for r in sources], dedup_available)  # fmt: skip


def _spec_fields(spec: FilterSpec) -> dict[str, Any]:
    """The preset's active settings, for display: bounds, limits, flags that differ from the default."""
    out: dict[str, Any] = {flag: value for flag, _, _, value in (*spec.active(), *spec.active_limits())}
    if spec.keep_unscored:
        out["keep_unscored"] = True
    if spec.dedup:
        out["dedup"] = True
    return out


def _clip_aggregates(
    con: duckdb.DuckDBPyConnection,
    signals: Sequence[Signal],
    conditions: Sequence[_Condition],
    with_dedup: bool,
) -> list[dict[str, Any]]:
    """Per source and for the whole corpus (GROUPING SETS): the counts of SourceCounts and, for each
    condition, the clips and seconds it keeps."""
    q = quote_ident
    select = [
        "meta_file",
        "grouping(meta_file) = 1 AS __total",
        "count(*) AS clips",
        "count(*) FILTER (WHERE NOT readable) AS unreadable",
        "coalesce(sum(duration_s) FILTER (WHERE readable), 0) AS seconds",
    ]
    params: list[Any] = []
    for i, s in enumerate(signals):
        col = f"v.{q(s.column)}"
        select.append(f"count({col}) FILTER (WHERE readable) AS scored_{i}")
        select.append(
            f"count(*) FILTER (WHERE readable AND v.{error_column(s.table)} IS NOT NULL) AS errors_{i}"
        )
    for i, c in enumerate(conditions):
        select.append(f"count(*) FILTER (WHERE readable AND ({c.sql})) AS kept_{i}")
        select.append(f"coalesce(sum(duration_s) FILTER (WHERE readable AND ({c.sql})), 0) AS seconds_{i}")
        params += c.params * 2
    sql = (
        f"SELECT {', '.join(select)} FROM ({clips_sql(signals, with_dedup)}) v "
        "GROUP BY GROUPING SETS ((meta_file), ())"
    )
    cursor = con.execute(sql, params)
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]


def _kept_lists(row: dict[str, Any], conditions: Sequence[_Condition]) -> list[Kept]:
    return [
        Kept(c.label, int(row[f"kept_{i}"]), float(row[f"seconds_{i}"])) for i, c in enumerate(conditions)
    ]


def _source_counts(row: dict[str, Any], signals: Sequence[Signal], presets: dict[str, Kept]) -> SourceCounts:
    return SourceCounts(
        source=None if row["__total"] else row["meta_file"],
        clips=int(row["clips"]),
        unreadable=int(row["unreadable"]),
        seconds=float(row["seconds"]),
        scored={s.column: int(row[f"scored_{i}"]) for i, s in enumerate(signals)},
        errors={s.column: int(row[f"errors_{i}"]) for i, s in enumerate(signals)},
        presets=presets,
    )
