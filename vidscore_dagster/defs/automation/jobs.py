"""Jobs the sensors and the schedule launch: ingest a meta file; one batch through probing and scoring."""

from __future__ import annotations

import os

import dagster as dg

from vidscore_core import scores
from vidscore_core.settings import Settings

SCORE_BATCH_JOB = "score_batch"
INGEST_JOB = "ingest_meta_file"
# In dependency order; a run may select a subset (the backfill schedule selects what is missing).
BATCH_ASSETS = ("videos", *scores.SCORE_TABLES)

# On a `meta_files` run: its batches are scored by whoever launched it (the CLI's --materialize),
# so `batches_sensor` requests no runs for them.
SCORED_BY_CALLER_TAG = "vidscore/scored_by_caller"


def runnable_assets(settings: Settings, score_options: scores.ScoreOptions) -> list[str]:
    """The batch assets whose model files are present (`scores.available`), in dependency order."""
    return ["videos", *scores.available(settings, score_options).tables]


def run_executor() -> dg.ExecutorDefinition | None:
    """`VIDSCORE_RUN_EXECUTOR`: `multiprocess` (default: one process per step) or `in_process`.

    Also meant for `Definitions(executor=...)`, so runs the automation sensor or the UI launch
    (job `__ASSET_JOB`) behave the same as `score_batch` runs. None: Dagster's default.

    in_process saves a Python start-up (imports of torch and the code location) per step, which
    dominates small batches; multiprocess isolates steps (a decoder crash fails one step only).
    """
    value = os.environ.get("VIDSCORE_RUN_EXECUTOR", "multiprocess").strip().lower()
    if value == "in_process":
        return dg.in_process_executor
    if value == "multiprocess":
        return None  # the code location's default executor
    raise ValueError(f"VIDSCORE_RUN_EXECUTOR={value!r}: expected 'multiprocess' or 'in_process'")


score_batch = dg.define_asset_job(
    SCORE_BATCH_JOB,
    selection=dg.AssetSelection.assets(*BATCH_ASSETS),
    executor_def=run_executor(),
    description="Probe one batch (`videos`) and compute its scores, with their asset checks.",
)

ingest_meta_file = dg.define_asset_job(
    INGEST_JOB,
    selection=dg.AssetSelection.assets("meta_files"),
    description="Ingest one meta file: its batch manifests and partitions (config: ops.meta_files.config.path).",
)
