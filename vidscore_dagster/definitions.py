"""The vidscore code location: every domain's assets, checks, sensors, schedules and resources."""

import dagster as dg

from vidscore_dagster.defs.automation.jobs import ingest_meta_file, run_executor, score_batch
from vidscore_dagster.defs.automation.schedules import schedules
from vidscore_dagster.defs.automation.sensors import sensors
from vidscore_dagster.defs.dedup.assets import near_duplicates
from vidscore_dagster.defs.dedup.checks import dedup_checks
from vidscore_dagster.defs.filtering.assets import filtered_videos
from vidscore_dagster.defs.filtering.checks import filtering_checks
from vidscore_dagster.defs.ingest.assets import meta_files, videos
from vidscore_dagster.defs.ingest.checks import videos_checks
from vidscore_dagster.defs.reports.assets import corpus_report
from vidscore_dagster.defs.resources import default_resources
from vidscore_dagster.defs.scores.assets import score_assets
from vidscore_dagster.defs.scores.checks import score_checks

defs = dg.Definitions(
    assets=[meta_files, videos, *score_assets, near_duplicates, filtered_videos, corpus_report],
    asset_checks=[*videos_checks, *score_checks, *dedup_checks, *filtering_checks],
    jobs=[score_batch, ingest_meta_file],
    schedules=schedules,
    sensors=sensors,
    resources=default_resources(),
    executor=run_executor(),
)
