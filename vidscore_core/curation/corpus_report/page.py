"""The report as a self-contained HTML page (pictures embedded as data URIs), as Markdown for
Dagster's metadata, and as JSON (every number, for scripts and tests)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vidscore_core.curation.corpus_report.numbers import QUANTILES
from vidscore_core.curation.corpus_report.pictures import format_value, png_data_uri

if TYPE_CHECKING:
    from vidscore_core.curation.corpus_report.build import Report


def hours(seconds: float) -> str:
    h = seconds / 3600
    return f"{h:,.1f}" if h >= 10 else f"{h:.3g}"


def num(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


def pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "–"


def spec_text(spec: dict[str, Any]) -> str:
    return " ".join(f"--{k}" if v is True else f"--{k} {v:g}" for k, v in spec.items()) or "(no bounds)"


def html(report: Report) -> str:
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    numbers = report.numbers
    return env.get_template("page.html.j2").render(
        r=numbers,
        tables_root=report.tables_root,
        generated_at=report.generated_at,
        quantiles=[q for q in QUANTILES if q in (0.05, 0.25, 0.5, 0.75, 0.95)],
        readable=numbers.corpus.clips - numbers.corpus.unreadable,
        thresholds_by_column=_thresholds_by_column(report),
        pictures={c: png_data_uri(p) for c, p in report.histograms.items()},
        sheets={s.column: s for s in report.sheets},
        hours=hours, num=num, pct=pct, spec_text=spec_text, value=format_value,
        jpeg_uri=lambda data: png_data_uri(data, "jpeg"),
    )  # fmt: skip


def _thresholds_by_column(report: Report) -> dict[str, list]:
    out: dict[str, list] = {}
    for table in report.numbers.thresholds:
        out.setdefault(table.bound.column, []).append(table)
    return out


def markdown(report: Report) -> str:
    """Every section of the page in Markdown, pictures included (Dagster's "[Show Markdown]")."""
    numbers = report.numbers
    readable = numbers.corpus.clips - numbers.corpus.unreadable
    lines = [
        f"**{numbers.corpus.clips:,} clips** ({numbers.corpus.unreadable:,} unreadable), "
        f"**{hours(numbers.corpus.seconds)} hours** of readable footage, {len(numbers.sources)} source(s).",
        "",
    ]
    by_column = _thresholds_by_column(report)
    sheets = {s.column: s for s in report.sheets}
    for dist in numbers.distributions:
        s = dist.signal
        lines += [
            f"### {s.label}",
            "",
            f"{s.unit}. {dist.rows:,} rows, {dist.scored:,} scored, {dist.errors:,} errors.",
            "",
        ]
        if s.column in report.histograms:
            lines += [f"![{s.column} histogram]({png_data_uri(report.histograms[s.column])})", ""]
        if dist.quantiles:
            lines += ["| " + " | ".join(f"p{round(q * 100)}" for q in dist.quantiles) + " |",
                      "|" + "---|" * len(dist.quantiles),
                      "| " + " | ".join(num(v) for v in dist.quantiles.values()) + " |", ""]  # fmt: skip
        if dist.reasons:
            lines += [
                "| error | rows |",
                "|---|---|",
                *(f"| {_cell(r)} | {n:,} |" for r, n in dist.reasons),
                "",
            ]
        for table in by_column.get(s.column, []):
            lines += [f"`--{table.bound.flag}` | clips kept | hours kept", "---|---|---"]
            lines += [f"{table.bound.op} {t:g} | {k.clips:,} ({pct(k.clips, readable)}) | {hours(k.seconds)}"
                      for t, k in zip(table.thresholds, table.kept, strict=True)]  # fmt: skip
            lines.append("")
        sheet = sheets.get(s.column)
        if sheet is not None and report.sheet_pictures.get(s.column):
            lines += [
                f"![{s.column} contact sheet]({png_data_uri(report.sheet_pictures[s.column], 'jpeg')})",
                "",
            ]
            lines += [f"- {position}: " + ", ".join(f"{format_value(t.pick.value)} `{t.pick.path}`" for t in tiles)
                      for position, tiles in sheet.rows]  # fmt: skip
            lines.append("")
        if sheet is not None and sheet.skipped:
            lines += [f"- skipped `{t.pick.path or t.pick.video_id}`: {t.error}" for t in sheet.skipped] + [
                ""
            ]
    lines += ["### Presets", ""]
    for preset in numbers.presets:
        note = "" if preset.dedup_available else " (dedup not applied: near_duplicates not materialized)"
        lines += [
            f"**{preset.name}** `{spec_text(preset.spec)}`{note}",
            "",
            "| bounds | clips | hours |",
            "|---|---|---|",
        ]
        lines += [
            f"| {k.label} | {k.clips:,} ({pct(k.clips, readable)}) | {hours(k.seconds)} |"
            for k in preset.steps
        ]
        lines.append("")
    return "\n".join(lines)


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def as_json(report: Report) -> str:
    """Every number of the report (sheets as paths and values, without pictures)."""
    numbers = dataclasses.asdict(report.numbers)
    for dist in numbers["distributions"]:
        dist["quantiles"] = {str(q): v for q, v in dist["quantiles"].items()}
    sheets = [
        {
            "column": sheet.column,
            "rows": [
                {"position": position, "clips": [_pick(t.pick) for t in tiles]}
                for position, tiles in sheet.rows
            ],
            "skipped": [{**_pick(t.pick), "error": t.error} for t in sheet.skipped],
        }
        for sheet in report.sheets
    ]
    payload = {
        "generated_at": report.generated_at,
        "tables": report.tables_root,
        **numbers,
        "contact_sheets": sheets,
    }
    return json.dumps(payload, indent=1, default=str)


def _pick(pick) -> dict[str, Any]:
    return {"position": pick.position, "video_id": pick.video_id, "batch": pick.batch, "path": pick.path,
            "value": pick.value}  # fmt: skip
