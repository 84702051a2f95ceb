"""Materialization metadata: row counts, quantiles and a histogram picture for the UI."""

from __future__ import annotations

import base64
import io

import dagster as dg
import numpy as np
import pandas as pd

from vidscore_core.tables import schema


def table_schema(table: str) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(name, type_) for name, type_ in schema.columns(table)])


def histogram_png(values: np.ndarray, title: str, bins: int = 30) -> bytes:
    """A small PNG histogram (matplotlib, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3), dpi=90)
    ax.hist(values, bins=bins, color="#4f6bed", edgecolor="white")
    ax.set_title(title)
    ax.set_ylabel("clips")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def histogram_markdown(values: np.ndarray, title: str) -> dg.MetadataValue:
    """A histogram the UI renders inline: markdown with the PNG as a data URI, plus its bin table."""
    counts, edges = np.histogram(values, bins=min(10, max(1, len(np.unique(values)))))
    table = "\n".join(
        f"| {lo:.4g} – {hi:.4g} | {n} |" for lo, hi, n in zip(edges[:-1], edges[1:], counts, strict=True)
    )
    png = base64.b64encode(histogram_png(values, title)).decode()
    return dg.MetadataValue.md(
        f"![{title}](data:image/png;base64,{png})\n\n| range | clips |\n|---|---|\n{table}"
    )


def totals_text(frame: pd.DataFrame, scored: int, errors: int, unit: str = "clips") -> dg.MetadataValue:
    """The run's totals in one line, first in the metadata: a batch of broken files reads as such
    ("2 clips: 0 scored, 2 errors (most often: …)"), not as an empty result."""
    batches = frame["batch"].nunique() if "batch" in frame and len(frame) else 0
    where = f" in {batches} batches" if batches > 1 else ""
    line = f"{len(frame)} {unit}{where}: {scored} scored, {errors} errors"
    if errors:
        reason, count = next(iter(frame["error"].dropna().value_counts().items()))
        line += f" (most often: {reason} ×{count})"
    return dg.MetadataValue.text(line)


def score_metadata(frame: pd.DataFrame, column: str, title: str) -> dict[str, dg.MetadataValue | int | float]:
    """Counts, mean/quantiles and a histogram of one score column."""
    if column not in frame:
        return {"scored": 0}
    if frame[column].map(lambda v: isinstance(v, str)).any():  # a label (camera motion): counts per label
        labels = frame[column].dropna()
        return {
            "dagster/row_count": int(len(frame)),
            "scored": int(len(labels)),
            "errors": int(frame["error"].notna().sum()) if "error" in frame else 0,
            f"{column}_counts": dg.MetadataValue.json({str(k): int(v) for k, v in labels.value_counts().items()}),
        }
    values = pd.to_numeric(frame[column], errors="coerce").dropna().to_numpy(dtype=float)
    errors = int(frame["error"].notna().sum()) if "error" in frame else 0
    meta: dict = {
        "totals": totals_text(frame, len(values), errors),
        "dagster/row_count": int(len(frame)),
        "scored": int(len(values)),
        "errors": errors,
    }
    if len(values):
        q = np.quantile(values, [0.05, 0.25, 0.5, 0.75, 0.95])
        meta.update({
            f"{column}_mean": float(values.mean()),
            f"{column}_min": float(values.min()),
            f"{column}_max": float(values.max()),
            f"{column}_quantiles": dg.MetadataValue.json(
                {k: float(v) for k, v in zip(["p05", "p25", "p50", "p75", "p95"], q, strict=True)}
            ),
            f"{column}_histogram": histogram_markdown(values, title),
        })  # fmt: skip
    if "error" in frame and frame["error"].notna().any():
        top = frame["error"].dropna().value_counts().head(5)
        meta["top_errors"] = dg.MetadataValue.json({str(k): int(v) for k, v in top.items()})
    return meta
