"""The report's pictures: histograms (PNG for the page, a compact SVG for Dagster's metadata table)
and contact sheets (a JPEG grid, and a preview small enough for the UI to show inline)."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from urllib.parse import quote

from vidscore_core.curation.corpus_report.contact_sheets import ContactSheet
from vidscore_core.curation.corpus_report.numbers import Distribution

BAR_COLOR = "#4f6bed"
# Dagster's UI shows a Markdown metadata value inline only below 1,000 characters (longer ones sit
# behind "[Show Markdown]"): the inline pictures are made to fit.
INLINE_MARKDOWN_CHARS = 1000


def png_data_uri(data: bytes, kind: str = "png") -> str:
    return f"data:image/{kind};base64,{base64.b64encode(data).decode()}"


def _figure_png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def distribution_png(dist: Distribution, marks: Sequence[tuple[str, float]] = ()) -> bytes:
    """The histogram over all batches (numeric), or the value counts; x labelled with the unit.
    `marks`: (label, value) drawn as dashed lines, e.g. the presets' thresholds."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=96)
    signal = dist.signal
    hist = dist.histogram
    if hist is not None:
        widths = [hi - lo for lo, hi in zip(hist.edges[:-1], hist.edges[1:], strict=True)]
        ax.bar(hist.edges[:-1], hist.counts, width=widths, align="edge", color=BAR_COLOR, edgecolor="white",
               linewidth=0.3)  # fmt: skip
        for label, value in marks:
            if hist.edges[0] <= value <= hist.edges[-1]:
                ax.axvline(value, color="#d9480f", linestyle="--", linewidth=1)
                ax.annotate(label, (value, 1), xycoords=("data", "axes fraction"), rotation=90, va="top",
                            ha="right", fontsize=7, color="#d9480f")  # fmt: skip
        outside = (
            f"; outside the range: {hist.below:,} below, {hist.above:,} above"
            if hist.below or hist.above
            else ""
        )
        ax.set_xlabel(f"{signal.column}: {signal.unit}")
        ax.set_title(f"{signal.label}: {dist.scored:,} scored{outside}", fontsize=9)
    else:
        labels = [v for v, _ in dist.values]
        ax.bar(range(len(labels)), [n for _, n in dist.values], color=BAR_COLOR)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_xlabel(f"{signal.column}: {signal.unit}")
        ax.set_title(f"{signal.label}: {dist.scored:,} scored", fontsize=9)
    ax.set_ylabel("rows")
    return _figure_png(fig)


def histogram_svg(dist: Distribution, max_chars: int = INLINE_MARKDOWN_CHARS - 120) -> str:
    """A small SVG histogram (bars, range and unit) as a data URI of at most `max_chars`: bins are
    merged in pairs until it fits."""
    hist = dist.histogram
    if hist is None:
        counts = [n for _, n in dist.values]
        low, high = "", ""
    else:
        counts = list(hist.counts)
        low, high = f"{hist.edges[0]:.3g}", f"{hist.edges[-1]:.3g}"
    unit = dist.signal.unit.replace("&", "and").replace("<", "").replace(">", "")
    unit = unit if len(unit) <= 40 else unit[:39] + "…"
    while True:
        uri = _svg_uri(counts, low, high, f"{dist.signal.column}: {unit}")
        if len(uri) <= max_chars or len(counts) <= 2:
            return uri
        counts = [sum(counts[i : i + 2]) for i in range(0, len(counts), 2)]


def _svg_uri(counts: Sequence[int], low: str, high: str, caption: str) -> str:
    width, height, top = 240, 60, max(1, max(counts, default=1))
    step = width / max(1, len(counts))
    path = (
        f"M0 {height}"
        + "".join(f"V{height - round(n * height / top)}h{step:.4g}" for n in counts)
        + f"V{height}z"
    )
    svg = (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height + 26}' font-size='10' "
        f"font-family='sans-serif'><path d='{path}' fill='{BAR_COLOR}'/>"
        f"<text y='{height + 11}'>{low}</text><text x='{width}' y='{height + 11}' text-anchor='end'>{high}</text>"
        f"<text x='{width / 2:g}' y='{height + 23}' text-anchor='middle'>{caption}</text></svg>"
    )
    return "data:image/svg+xml," + quote(svg, safe="/:=,.'-")


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType
        return ImageFont.load_default()


def sheet_jpeg(sheet: ContactSheet, tile_height: int = 144, label_width: int = 90) -> bytes | None:
    """The sheet as one picture: a row per position, each tile captioned with its value."""
    from PIL import Image, ImageDraw

    rows = [(position, tiles) for position, tiles in sheet.rows if tiles]
    if not rows:
        return None
    images = {id(t): Image.open(io.BytesIO(t.jpeg)).convert("RGB") for _, tiles in rows for t in tiles}
    scaled = {
        k: im.resize((max(1, round(im.width * tile_height / im.height)), tile_height))
        for k, im in images.items()
    }
    caption, gap = 16, 6
    width = label_width + max(sum(scaled[id(t)].width + gap for t in tiles) for _, tiles in rows)
    canvas = Image.new("RGB", (width, len(rows) * (tile_height + caption + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    font = _font(12)
    for r, (position, tiles) in enumerate(rows):
        y = r * (tile_height + caption + gap)
        draw.text((4, y + tile_height // 2), str(position)[:14], fill="black", font=font)
        x = label_width
        for tile in tiles:
            image = scaled[id(tile)]
            canvas.paste(image, (x, y))
            draw.text((x + 2, y + tile_height + 1), format_value(tile.pick.value), fill="black", font=font)
            x += image.width + gap
    buffer = io.BytesIO()
    canvas.save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def sheet_strip(sheet: ContactSheet, max_chars: int = INLINE_MARKDOWN_CHARS - 160) -> str | None:
    """The first clip of each row side by side (bottom, middle, top), as a data URI of at most
    `max_chars`: the largest tiles and best quality that fit (WebP, else AVIF, which packs more into
    the same bytes); None when nothing fits. What Dagster's metadata table can show without a click."""
    from PIL import Image

    firsts = [tiles[0] for _, tiles in sheet.rows if tiles]
    if not firsts:
        return None
    images = [Image.open(io.BytesIO(t.jpeg)).convert("RGB") for t in firsts]
    for height in (72, 54, 45, 36):
        tiles = [im.resize((max(1, round(im.width * height / im.height)), height)) for im in images]
        strip = Image.new("RGB", (sum(t.width for t in tiles) + 3 * (len(tiles) - 1), height), "white")
        x = 0
        for tile in tiles:
            strip.paste(tile, (x, 0))
            x += tile.width + 3
        for kind in ("webp", "avif"):
            for quality in (60, 35, 15):
                buffer = io.BytesIO()
                strip.save(buffer, format=kind.upper(), quality=quality)
                uri = png_data_uri(buffer.getvalue(), kind)
                if len(uri) <= max_chars:
                    return uri
    return None


def format_value(value: float | str) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
