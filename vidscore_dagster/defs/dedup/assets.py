"""`near_duplicates`: near-duplicate groups over every batch, recomputed when batches change."""

import dagster as dg
from pydantic import Field

from vidscore_core.curation.dedup import DEFAULT_THRESHOLD
from vidscore_core.curation.near_duplicates import CODE, SCOPE, DedupSettings, compute
from vidscore_core.scoring import lineage
from vidscore_dagster.defs.metadata import table_schema
from vidscore_dagster.defs.resources import ScoringOptions, VidscoreSettings


class NearDuplicatesConfig(dg.Config):
    threshold: float = Field(default=DEFAULT_THRESHOLD, ge=-1.0, le=1.0,
                             description="Cosine of the 50 % frame CLIP embeddings at or above which two clips are near-duplicates.")  # fmt: skip
    same_resolution: bool = Field(default=True, description="Only clips of equal width × height can be duplicates (Open-Sora's rule).")
    method: str = Field(default="auto", description="auto, exact (blockwise) or ivf (faiss candidates + exact re-check).")


@dg.asset(
    deps=["clip_embeddings", "aesthetic_scores", "videos"],
    group_name="datasets",
    code_version=lineage.code_version(*CODE),
    kinds={"parquet", "faiss"},
    # Once per hour at most, and only when some batch's embeddings, scores or videos changed.
    automation_condition=dg.AutomationCondition.on_cron("0 * * * *"),
    description="For each clip with a 50 % frame embedding: its near-duplicate group (connected components "
    "of cosine >= threshold, same resolution by default) and whether it is the one to keep (highest aes).",
)
def near_duplicates(
    context: dg.AssetExecutionContext, config: NearDuplicatesConfig, vidscore: VidscoreSettings, scoring: ScoringOptions
) -> dg.MaterializeResult:
    store = vidscore.store()
    device = scoring.resolved()["device"]
    settings = DedupSettings(config.threshold, config.same_resolution, config.method,
                             device="cuda" if device.startswith("cuda") else None)  # fmt: skip
    rows = compute(store, settings, context.run.run_id)
    published = store.publish(rows, "near_duplicates", SCOPE)
    duplicated = rows[rows["group_size"] > 1]
    context.log.info(
        f"{len(rows)} clips, {duplicated['group_id'].nunique()} groups of near-duplicates, "
        f"{int((~rows['keep']).sum())} clips to drop ({rows['method'].iloc[0] if len(rows) else 'none'})"
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": published.rows,
            "dagster/column_schema": table_schema("near_duplicates"),
            "dagster/uri": published.path,
            "clips": len(rows),
            "duplicate_groups": int(duplicated["group_id"].nunique()),
            "clips_to_drop": int((~rows["keep"]).sum()),
            "threshold": config.threshold,
            "same_resolution": config.same_resolution,
            "method": str(rows["method"].iloc[0]) if len(rows) else config.method,
        }
    )
