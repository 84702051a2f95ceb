"""`corpus_report`: distributions, what thresholds keep, contact sheets and sources, over every batch."""

import dagster as dg

from vidscore_core.curation.corpus_report import build as corpus_report_build
from vidscore_core.curation.corpus_report.build import CODE, Report
from vidscore_core.curation.corpus_report.page import hours, markdown, num, pct
from vidscore_core.curation.corpus_report.signals import tables as signal_tables
from vidscore_core.scoring import lineage
from vidscore_dagster.defs.automation.policies import hourly_when_inputs_change
from vidscore_dagster.defs.resources import VidscoreSettings


@dg.asset(
    deps=["videos", *signal_tables(), "near_duplicates"],
    group_name="datasets",
    code_version=lineage.code_version(*CODE),
    kinds={"html", "duckdb"},
    # Once per hour at most, and only when some batch's videos or scores (or the duplicates) changed.
    automation_condition=hourly_when_inputs_change(),
    description="Every score's distribution over all batches, the clips and hours each threshold and preset "
    "keeps, contact sheets of the clips at the bottom, middle and top of each score, and counts per source "
    "(meta file). Written to $VIDSCORE_HOME/reports/corpus_report.html.",
)
def corpus_report(context: dg.AssetExecutionContext, vidscore: VidscoreSettings) -> dg.MaterializeResult:
    settings = vidscore.settings()
    report = corpus_report_build.build(settings)
    paths = corpus_report_build.write(report, settings)
    context.log.info(f"wrote {paths['html']}")
    return dg.MaterializeResult(metadata=report_metadata(report, str(paths["html"]), str(paths["json"])))


def report_metadata(report: Report, html_path: str, json_path: str) -> dict:
    """The totals first, tables and small pictures the UI shows inline, then the whole report."""
    numbers = report.numbers
    corpus = numbers.corpus
    readable = corpus.clips - corpus.unreadable
    meta: dict = {
        "summary": dg.MetadataValue.text(
            f"{corpus.clips:,} clips ({corpus.unreadable:,} unreadable), {hours(corpus.seconds)} hours of "
            f"readable footage, {len(numbers.sources)} source(s)"
        ),
        "html": dg.MetadataValue.path(html_path),
        "signals": _table(
            [
                {
                    "signal": d.signal.label,
                    "unit": d.signal.unit,
                    "rows": d.rows,
                    "scored": d.scored,
                    "errors": d.errors,
                    **{f"p{round(q * 100)}": num(d.quantile(q)) for q in (0.05, 0.5, 0.95)},
                }
                for d in numbers.distributions
            ]
        ),  # fmt: skip
    }
    for dist in numbers.distributions:
        column = dist.signal.column
        picture = report.inline_histogram(column)
        if picture:
            meta[f"{column}_histogram"] = dg.MetadataValue.md(
                f"![{column} histogram ({dist.signal.unit})]({picture})"
            )
        preview = report.inline_sheet(column)
        if preview:
            meta[f"{column}_contact_sheet"] = dg.MetadataValue.md(preview)
    meta["presets"] = _table(
        [{"preset": p.name, "bounds": k.label, "clips": k.clips, "of readable": pct(k.clips, readable),
          "hours": hours(k.seconds)} for p in numbers.presets for k in p.steps]
    )  # fmt: skip
    meta["sources"] = _table(
        [{"source": s.source or "all sources", "clips": s.clips, "unreadable": s.unreadable, "hours": hours(s.seconds),
          **{f"{p}: clips": k.clips for p, k in s.presets.items()}} for s in [*numbers.sources, corpus]]
    )  # fmt: skip
    meta["report"] = dg.MetadataValue.md(markdown(report))
    meta["json"] = dg.MetadataValue.path(json_path)
    return meta


def _table(records: list[dict]) -> dg.MetadataValue:
    """A table the UI renders inline; columns from the first record (all records share them)."""
    if not records:
        return dg.MetadataValue.text("(none)")
    columns = [
        dg.TableColumn(name, "int" if isinstance(value, int) else "string")
        for name, value in records[0].items()
    ]
    return dg.MetadataValue.table([dg.TableRecord(r) for r in records], dg.TableSchema(columns=columns))
