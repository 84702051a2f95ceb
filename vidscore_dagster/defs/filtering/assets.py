"""`filtered_videos`: the clips that pass a preset's thresholds, as a table and as exports."""

import json
import re

import dagster as dg
import pandas as pd
import pydantic
from pydantic import Field

from vidscore_core.curation.filtered_dataset import (
    PRESETS,
    removed_by_bound,
    select_rows,
    source_counts,
    write_exports,
)
from vidscore_core.curation.filters import BOUNDS, LIMITS, FilterSpec, removed_line
from vidscore_core.scores import SCORES
from vidscore_core.scoring import lineage
from vidscore_core.tables.store import TableStore
from vidscore_dagster.defs.metadata import score_metadata, table_schema
from vidscore_dagster.defs.resources import VidscoreSettings

FILTER_CODE = ("vidscore_core.curation.filtered_dataset", "vidscore_core.curation.filters")
# Config values are validated by FilterSpec (NaN, inf, a min above its max): one error line, no traceback.


class _FilterConfigBase(dg.Config):
    """Thresholds and technical limits; a named preset (fair, good, curated) fills those left empty."""

    preset: str = Field(default="default", description="Name the result is stored under; presets coexist.")
    fmin: float | None = Field(default=None, description="At least this many frames.")
    fmax: float | None = Field(default=None, description="At most this many frames.")
    fpsmax: float | None = None
    hwmax: float | None = Field(default=None, description="At most this many pixels (height × width).")
    aspect_min: float | None = Field(default=None, description="Aspect ratio height / width, as Open-Sora's meta.")
    aspect_max: float | None = None
    duration_min: float | None = Field(default=None, description="Seconds.")
    duration_max: float | None = None
    dedup: bool | None = Field(default=None, description="Keep only the `keep` clip of each near-duplicate group.")
    keep_unscored: bool = Field(default=False, description="Keep clips whose bounded score is missing.")

    def spec(self) -> FilterSpec:
        base = PRESETS.get(self.preset, FilterSpec())
        names = [*(flag for flag, _, _ in BOUNDS), *(name for name, _, _ in LIMITS), "dedup"]
        values = {k: getattr(self, k) if getattr(self, k) is not None else getattr(base, k) for k in names}
        return FilterSpec(**values, keep_unscored=self.keep_unscored)


# The launchpad's config: the limits above plus one field per bound the score registry declares.
FilterConfig = pydantic.create_model(
    "FilterConfig",
    __base__=_FilterConfigBase,
    **{flag: (float | None, Field(default=None, description=f"Keep clips with {column} {op} this."))
       for flag, column, op in BOUNDS},
)  # fmt: skip


@dg.asset(
    deps=["videos", *(score.table for score in SCORES), "near_duplicates"],
    group_name="datasets",
    code_version=lineage.code_version(*FILTER_CODE),
    kinds={"parquet", "csv"},
    description="Clips passing the preset's thresholds over every batch, in Open-Sora's meta format "
    "(table filtered_videos, exports under $VIDSCORE_HOME/exports/).",
)
def filtered_videos(context: dg.AssetExecutionContext, config: FilterConfig, vidscore: VidscoreSettings) -> dg.MaterializeResult:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", config.preset):
        raise ValueError(f"preset name {config.preset!r}: use letters, digits, '_' or '-'")
    spec = config.spec()
    settings = vidscore.settings()
    store = TableStore.from_settings(settings)
    sources = source_counts(store)
    rows = select_rows(store, spec)
    removed = removed_by_bound(store, spec)
    exports = write_exports(rows, settings.exports_dir, config.preset)
    table = rows.assign(
        preset=config.preset,
        filter_spec=spec.to_json(),
        run_id=context.run.run_id,
        code_version=lineage.code_version(*FILTER_CODE),
        filtered_at=pd.Timestamp(lineage.utc_now()),
    )
    kept = store.publish(table, "filtered_videos", config.preset).rows
    context.log.info(f"preset {config.preset}: kept {kept} of {sources['videos']} clips; {removed_line(removed)} "
                     f"({spec.to_json()})")  # fmt: skip
    meta = score_metadata(rows.assign(error=None), "aes", "aesthetic score of kept clips") if kept else {}
    return dg.MaterializeResult(
        metadata={
            **meta,
            "dagster/row_count": kept,
            "dagster/column_schema": table_schema("filtered_videos"),
            "preset": config.preset,
            "filter_spec": dg.MetadataValue.json(json.loads(spec.to_json())),
            "source_rows": dg.MetadataValue.json(sources),
            "kept": kept,
            # Readable clips each bound removes on its own (a clip failing two counts in both).
            "removed_by_bound": dg.MetadataValue.json(removed),
            "export_csv": dg.MetadataValue.path(str(exports["csv"])),
            "export_parquet": dg.MetadataValue.path(str(exports["parquet"])),
        }
    )
