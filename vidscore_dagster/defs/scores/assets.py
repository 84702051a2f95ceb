"""Score assets: `per_clip_scores`, one step computing `clip_embeddings` and every registered score
that decodes clips (flow) from one decode per clip, and one asset per derived score (aesthetic,
matching; vidscore_core/scores.py), built by `score_asset` from its declaration.

The scoring code (torch, open_clip) is imported inside the producers: sensors, the daemon and the
webserver load these definitions too and never need it.
"""

import dagster as dg
import pandas as pd

from vidscore_core import scores
from vidscore_core.scores import EMBEDDINGS, PER_CLIP, SCORES, Score, Table
from vidscore_core.scoring import lineage
from vidscore_dagster.defs.automation.policies import batch_backfill_policy, score_automation_condition
from vidscore_dagster.defs.metadata import score_metadata, totals_text
from vidscore_dagster.defs.partitions import batches
from vidscore_dagster.defs.publishing import BatchContext, publish_batches, publish_tables, score_per_clip
from vidscore_dagster.defs.resources import ScoringOptions, VidscoreSettings

# Runs on the GPU (or the CPU's cores) go through the `gpu` pool; see README "Operate".
GPU_POOL = "gpu"


def _step_args() -> dict:
    """What every score step shares: batches, the gpu pool, resources, a retry."""
    return dict(
        partitions_def=batches,
        backfill_policy=batch_backfill_policy(),
        pool=GPU_POOL,
        retry_policy=dg.RetryPolicy(max_retries=1, delay=30),
    )


def _table_args() -> dict:
    """What every score table shares: its group, kinds and automation."""
    return dict(group_name="scores", kinds={"parquet", "pytorch"}, automation_condition=score_automation_condition())


def _describe_embeddings(frame: pd.DataFrame) -> dict:
    if frame.empty:
        return {"totals": totals_text(frame, 0, 0), "frames": 0, "clips": 0, "errors": 0}
    per_clip = frame.groupby(["video_id", "batch"], as_index=False)["error"].first()  # a failed clip: one row
    errors = int(per_clip["error"].notna().sum())
    return {
        "totals": totals_text(per_clip, len(per_clip) - errors, errors),
        "frames": int(frame["embedding"].notna().sum()),
        "clips": int(frame["video_id"].nunique()),
        "errors": errors,
    }


def _description(table: Table) -> str:
    return f"{table.description} Unit: {table.unit}." if isinstance(table, Score) else table.description


def _per_clip_spec(table: Table) -> dg.AssetSpec:
    return dg.AssetSpec(
        table.table,
        deps=["videos"],
        description=_description(table) + " Decoded once per clip with the other per-clip scores of the run.",
        code_version=lineage.code_version(*table.code),
        **_table_args(),
    )


def _describer(table: str):
    if table == EMBEDDINGS.table:
        return _describe_embeddings
    score = scores.get(table)
    return lambda frame: score_metadata(frame, score.column, f"{score.name} score ({score.unit})")


@dg.multi_asset(
    name="per_clip_scores",
    specs=[_per_clip_spec(table) for table in PER_CLIP],
    can_subset=True,
    **_step_args(),
)
def per_clip_scores(context: dg.AssetExecutionContext, vidscore: VidscoreSettings, scoring: ScoringOptions):
    """`clip_embeddings` and the scores that decode clips (flow): whichever of them the run selects
    are computed in one step, one decode per clip serving them all (docs/ARCHITECTURE.md, "Data flow")."""
    selected = {key.to_user_string() for key in context.selected_asset_keys}
    tables = [t.table for t in PER_CLIP if t.table in selected]
    yield from publish_tables(
        context, vidscore, scoring, {table: _describer(table) for table in tables}, lambda ctx: score_per_clip(ctx, tables)
    )


def produce_score(ctx: BatchContext, score: Score) -> pd.DataFrame:
    """One batch's rows of a derived score: its producer on the batch's embeddings."""
    from vidscore_core.scoring.producers import ScoreInputs

    if not ctx.store.has(EMBEDDINGS.table, ctx.batch):
        raise dg.Failure(f"batch {ctx.batch!r} has no clip_embeddings yet: materialize them first")
    inputs = ScoreInputs(
        batch=ctx.batch,
        videos=ctx.listings() if score.per_row else ctx.videos(),
        settings=ctx.settings,
        options=ctx.scoring.job_options(ctx.context.run.run_id, ctx.log_progress(score.name)),
        embedding_rows=ctx.store.read(EMBEDDINGS.table, [ctx.batch]),
        log=ctx.context.log.info,
    )
    return score.produce()(inputs)


def score_asset(score: Score) -> dg.AssetsDefinition:
    """The Dagster asset of a registered score derived from `clip_embeddings`: its table, one step,
    its batch's rows published."""

    @dg.asset(
        name=score.table,
        deps=[EMBEDDINGS.table, "videos"],
        description=f"{score.description} Unit: {score.unit}.",
        code_version=lineage.code_version(*score.code),
        **_step_args(),
        **_table_args(),
    )
    def _asset(context: dg.AssetExecutionContext, vidscore: VidscoreSettings, scoring: ScoringOptions) -> dg.MaterializeResult:
        return publish_batches(context, vidscore, scoring, score.table, lambda ctx: produce_score(ctx, score), _describer(score.table))

    return _asset


score_assets = [per_clip_scores, *(score_asset(score) for score in SCORES if score.reads_embeddings)]
