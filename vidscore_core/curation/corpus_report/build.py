"""Build the corpus report from the tables and write it to `$VIDSCORE_HOME/reports/`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from vidscore_core.curation.corpus_report import numbers as corpus_numbers
from vidscore_core.curation.corpus_report import page, pictures
from vidscore_core.curation.corpus_report.contact_sheets import (
    ContactSheet,
    FrameCache,
    build_sheets,
    replace_file,
)
from vidscore_core.curation.corpus_report.signals import signals
from vidscore_core.curation.filtered_dataset import PRESETS
from vidscore_core.settings import Settings
from vidscore_core.tables.store import TableStore

REPORT_NAME = "corpus_report"
CODE = tuple(f"vidscore_core.curation.corpus_report.{m}" for m in
             ("signals", "numbers", "contact_sheets", "pictures", "page", "build"))  # fmt: skip


@dataclass
class Report:
    numbers: corpus_numbers.CorpusNumbers
    sheets: list[ContactSheet]
    tables_root: str
    generated_at: str
    histograms: dict[str, bytes] = field(default_factory=dict)  # signal column -> PNG
    sheet_pictures: dict[str, bytes] = field(default_factory=dict)  # signal column -> JPEG

    def inline_histogram(self, column: str) -> str | None:
        """The signal's histogram as a data URI short enough for Dagster's UI to show inline."""
        dist = next(d for d in self.numbers.distributions if d.signal.column == column)
        return pictures.histogram_svg(dist) if dist.scored else None

    def inline_sheet(self, column: str) -> str | None:
        """The first clip of each row of the signal's contact sheet, short enough to show inline,
        followed by their positions and values."""
        sheet = next((s for s in self.sheets if s.column == column), None)
        uri = pictures.sheet_strip(sheet) if sheet is not None else None
        if uri is None:
            return None
        legend = " · ".join(f"{p} {pictures.format_value(t[0].pick.value)}" for p, t in sheet.rows if t)
        return f"![{column} contact sheet]({uri})\n\n{legend}"


def report_paths(settings: Settings) -> dict[str, Path]:
    folder = settings.reports_dir
    return {
        "html": folder / f"{REPORT_NAME}.html",
        "json": folder / f"{REPORT_NAME}.json",
        "frames": folder / "frames",
    }


def build(settings: Settings, *, workers: int = 2, timings: dict[str, float] | None = None) -> Report:
    """Compute every number, pick and decode the contact sheets' clips, draw the pictures.
    `timings`, when given, receives the seconds each phase took (numbers, sheets, pictures)."""
    clock = _Clock(timings)
    store = TableStore.from_settings(settings)
    chosen = signals()
    result = corpus_numbers.compute(store, chosen, PRESETS)
    clock.lap("numbers")
    cache = FrameCache(report_paths(settings)["frames"])
    with corpus_numbers.tables_connection(store, ["videos", *dict.fromkeys(s.table for s in chosen)]) as con:
        sheets = build_sheets(con, result.distributions, cache, workers=workers, store=store)
    clock.lap("sheets")
    report = Report(result, sheets, store.root, datetime.now(timezone.utc).isoformat(timespec="seconds"))
    for dist in result.distributions:
        if dist.scored:
            report.histograms[dist.signal.column] = pictures.distribution_png(
                dist, _preset_marks(dist.signal.column)
            )
    for sheet in sheets:
        picture = pictures.sheet_jpeg(sheet)
        if picture is not None:
            report.sheet_pictures[sheet.column] = picture
    clock.lap("pictures")
    return report


class _Clock:
    def __init__(self, laps: dict[str, float] | None) -> None:
        self.laps, self.last = laps, time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        if self.laps is not None:
            self.laps[name] = round(now - self.last, 2)
        self.last = now


def _preset_marks(column: str) -> list[tuple[str, float]]:
    """(label, value) of every preset bound on `column`, for the histogram."""
    return [(f"{name} {op} {value:g}", value) for name, spec in PRESETS.items()
            for _, col, op, value in spec.active() if col == column]  # fmt: skip


def write(report: Report, settings: Settings) -> dict[str, Path]:
    """The HTML page and the JSON numbers, each replaced whole (a reader never sees half a file)."""
    paths = report_paths(settings)
    replace_file(paths["html"], page.html(report).encode())
    replace_file(paths["json"], page.as_json(report).encode())
    return paths
