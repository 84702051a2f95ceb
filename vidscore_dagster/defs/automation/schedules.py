"""Scheduled backfills: re-run the batches whose scores are missing, retryable or stale.

Dagster's own automation (`automation_sensor`, on_missing) fills partitions that were never
materialized; what it cannot know is in the rows. Each tick (daily at 03:00 UTC by default;
`VIDSCORE_BACKFILL_CRON` changes it) compares the tables with what the current code and weights
would produce:
* missing: a registered batch without `videos` rows (when its manifest exists), or a score table
  with fewer clips than `videos` has for the batch;
* retryable: rows whose `error` matches `VIDSCORE_RETRYABLE_ERRORS` (decoder timeouts, CUDA out
  of memory, a non-finite model output...), which a new attempt may well score. They are retried
  once: when a batch's run for that same state succeeded and left it unchanged, the tick reports the
  batch (its log, the skip reason) instead of retrying it every day;
* stale: rows whose `code_version` (the source hash of the score's modules) or `weights_sha256`
  differ from the current ones, or that record another value of a score option (flow's backend).
It requests one run per such batch, selecting the affected assets and everything they feed.
Run keys hold the tick's date and the state found, so a tick evaluated twice launches nothing new,
while tomorrow's tick retries a batch whose run failed today.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

import dagster as dg

from vidscore_core import scores, weights
from vidscore_core.scores import SCORE_TABLES, SCORES
from vidscore_core.scoring import lineage, options
from vidscore_core.settings import Settings
from vidscore_core.tables.store import TableStore
from vidscore_dagster.defs.automation.jobs import BATCH_ASSETS, score_batch
from vidscore_dagster.defs.ingest.assets import videos
from vidscore_dagster.defs.partitions import BATCHES
from vidscore_dagster.defs.resources import ScoringOptions, VidscoreSettings
from vidscore_dagster.defs.scores.assets import score_assets

DEFAULT_CRON = "0 3 * * *"
# RE2 syntax (DuckDB's regexp_matches): what is worth another attempt, not a broken file.
DEFAULT_RETRYABLE = (
    r"(?i)(timed out|timeout|out of memory|CUDA error|CUBLAS_STATUS_ALLOC_FAILED|"
    r"CUDNN_STATUS_ALLOC_FAILED|resource temporarily unavailable|non-finite model output|\(retryable\))"
)
FINGERPRINT_TAG = "vidscore/backfill_fingerprint"


def downstream_map(assets: Iterable[dg.AssetsDefinition]) -> dict[str, tuple[str, ...]]:
    """Each asset -> every asset that reads it, directly or not (what a re-run of it invalidates),
    from the assets' own dependencies."""
    readers: dict[str, set[str]] = {}
    for definition in assets:
        for key, deps in definition.asset_deps.items():
            for dep in deps:
                readers.setdefault(dep.to_user_string(), set()).add(key.to_user_string())
    closed: dict[str, tuple[str, ...]] = {}
    for asset in readers:
        seen: set[str] = set()
        todo = [asset]
        while todo:
            for reader in readers.get(todo.pop(), ()):
                if reader not in seen:
                    seen.add(reader)
                    todo.append(reader)
        closed[asset] = tuple(a for a in BATCH_ASSETS if a in seen)
    return closed


# What a re-run of an asset invalidates downstream (derived scores read clip_embeddings), from the graph.
DOWNSTREAM: dict[str, tuple[str, ...]] = downstream_map([videos, *score_assets])
# An error in a derived score comes from the embedding it was computed from: retry both.
RETRY_UPSTREAM: dict[str, str] = {s.table: scores.EMBEDDINGS.table for s in SCORES if s.reads_embeddings}


@dataclass(frozen=True)
class Expected:
    """The lineage that rows of a table computed now would carry."""

    code_version: str
    weights_sha256: str | None = None
    check_weights: bool = True  # False when the weights file is absent (nothing to compare with)
    recorded: dict[str, str] = field(default_factory=dict)  # option column -> the value rows must hold


def current_lineage(settings: Settings, score_options: scores.ScoreOptions) -> tuple[dict[str, Expected], list[str]]:
    """Expected lineage per score table, and notes on what could not be determined."""
    score_options = scores.resolve_options(score_options)  # every score's options, given or default
    notes: list[str] = []

    def sha(name: str) -> str | None:
        try:
            return lineage.file_sha256(weights.require(name, settings))
        except (FileNotFoundError, OSError, ValueError) as exc:
            notes.append(f"{name} weights unavailable ({type(exc).__name__}); not comparing their hash")
            return None

    tables = (scores.EMBEDDINGS, *SCORES)
    # Only the files these options use are hashed (hashing reads the whole file, every tick).
    needed = dict.fromkeys(w for table in tables for w in table.weights_for(score_options))
    shas = {name: sha(name) for name in needed}

    def expected_for(table: scores.Table) -> Expected:
        names = table.weights_for(score_options)
        recorded = {}
        if isinstance(table, scores.Score):
            recorded = {o.name: score_options[table.name][o.name] for o in table.recorded_options()}
        if not names:  # weight-free (e.g. the DIS flow backend) stores no hash: rows must have none
            return Expected(lineage.code_version(*table.code), None, True, recorded)
        known = {n: shas[n] for n in names}
        digest = options.combined_sha(known) if all(known.values()) else None
        return Expected(lineage.code_version(*table.code), digest, digest is not None, recorded)

    return {table.table: expected_for(table) for table in tables}, notes


@dataclass
class BatchPlan:
    batch: str
    reasons: dict[str, list[str]] = field(default_factory=dict)  # asset -> why

    def need(self, asset: str, reason: str) -> None:
        self.reasons.setdefault(asset, []).append(reason)

    def assets(self) -> list[str]:
        """The assets to run, in dependency order, with everything downstream of a re-run asset."""
        chosen = set(self.reasons)
        for asset in list(chosen):
            if asset in RETRY_UPSTREAM and any(r.startswith("retryable") for r in self.reasons[asset]):
                chosen.add(RETRY_UPSTREAM[asset])
        for asset in list(chosen):  # one pass suffices: DOWNSTREAM lists transitive dependents
            chosen.update(DOWNSTREAM.get(asset, ()))
        return [a for a in BATCH_ASSETS if a in chosen]

    def summary(self) -> str:
        return "; ".join(f"{asset}: {', '.join(why)}" for asset, why in sorted(self.reasons.items()))

    def fingerprint(self) -> str:
        """The retryable errors this plan's run retries (else the whole plan): a run that retried them
        while also filling missing or stale tables has retried them all the same."""
        retries = {asset: [r for r in why if r.startswith("retryable")] for asset, why in self.reasons.items()}
        state = "; ".join(f"{a}: {', '.join(why)}" for a, why in sorted(retries.items()) if why) or self.summary()
        return hashlib.sha256(state.encode()).hexdigest()[:12]

    def only_retries(self) -> bool:
        return all(r.startswith("retryable") for why in self.reasons.values() for r in why)


def retried_already(instance: dg.DagsterInstance, plan: BatchPlan) -> bool:
    """A run of this schedule for the batch in this same state succeeded: retrying changed nothing."""
    tags = {FINGERPRINT_TAG: plan.fingerprint(), "dagster/partition": plan.batch}
    done = dg.RunsFilter(tags=tags, statuses=[dg.DagsterRunStatus.SUCCESS])
    return bool(instance.get_run_records(done, limit=1))


def _table_state(store: TableStore, table: str, exp: Expected, pattern: str) -> dict[str, dict[str, int]]:
    stale_weights = "weights_sha256 IS DISTINCT FROM $sha" if exp.check_weights else "false"
    # Option columns are declared names (scores.py), values are bound parameters.
    stale_options = " OR ".join(f'"{name}" IS DISTINCT FROM $opt_{name}' for name in exp.recorded) or "false"
    params: dict[str, object] = {"code": exp.code_version, "pattern": pattern}
    if exp.check_weights:
        params["sha"] = exp.weights_sha256
    params.update({f"opt_{name}": value for name, value in exp.recorded.items()})
    # Identifiers come from SCORE_TABLES (constants); values are bound parameters.
    frame = store.query_df(
        f"""
        SELECT batch,
               count(DISTINCT video_id) AS clips,
               count(*) FILTER (WHERE error IS NOT NULL AND regexp_matches(error, $pattern)) AS retryable,
               count(*) FILTER (WHERE code_version IS DISTINCT FROM $code) AS stale_code,
               count(*) FILTER (WHERE {stale_weights}) AS stale_weights,
               count(*) FILTER (WHERE {stale_options}) AS stale_options
        FROM "{table}" GROUP BY batch
        """,
        params,
    )
    return {str(row.pop("batch")): {k: int(v) for k, v in row.items()} for row in frame.to_dict("records")}


def plan_backfill(
    store: TableStore,
    settings: Settings,
    batch_keys: Iterable[str],
    expected: dict[str, Expected],
    retryable_pattern: str = DEFAULT_RETRYABLE,
) -> list[BatchPlan]:
    """The batches that need a run, each with the assets to run and why."""
    re.compile(retryable_pattern.replace("(?i)", ""))  # fail early on a pattern typo
    videos = store.partition_counts("videos")
    states = {t: _table_state(store, t, expected[t], retryable_pattern) for t in SCORE_TABLES}
    plans: list[BatchPlan] = []
    manifests: set[str] | None = None
    for batch in batch_keys:
        plan = BatchPlan(batch)
        n_videos = videos.get(batch, 0)
        if n_videos == 0:
            if manifests is None:
                manifests = store.partitions("manifests")
            if batch in manifests:
                plan.need("videos", "missing")
        else:
            for table in SCORE_TABLES:
                state = states[table].get(batch)
                if state is None:
                    plan.need(table, "missing")
                    continue
                if state["clips"] < n_videos:
                    plan.need(table, f"missing {n_videos - state['clips']} clips")
                if state["retryable"]:
                    plan.need(table, f"retryable errors in {state['retryable']} rows")
                if state["stale_code"]:
                    plan.need(table, f"stale code_version in {state['stale_code']} rows")
                if state["stale_weights"]:
                    plan.need(table, f"stale weights_sha256 in {state['stale_weights']} rows")
                if state["stale_options"]:
                    plan.need(table, f"another option value ({', '.join(expected[table].recorded)}) in "
                              f"{state['stale_options']} rows")
        if plan.reasons:
            plans.append(plan)
    return plans


def batches_in_flight(instance: dg.DagsterInstance) -> set[str]:
    """Batches that a queued or running run already covers, whatever launched it (not requested again).

    A second run would only redo the same work; the automation sensor's runs (job `__ASSET_JOB`)
    and UI backfills count as much as this schedule's own.
    """
    active = [dg.DagsterRunStatus[s] for s in ("QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING")]
    busy: set[str] = set()
    partition_keys: list[str] | None = None
    for record in instance.get_run_records(dg.RunsFilter(statuses=active)):
        tags = record.dagster_run.tags
        if "dagster/partition" in tags:
            busy.add(tags["dagster/partition"])
        start, end = (
            tags.get("dagster/asset_partition_range_start"),
            tags.get("dagster/asset_partition_range_end"),
        )
        if start and end:
            partition_keys = (
                partition_keys if partition_keys is not None else instance.get_dynamic_partitions(BATCHES)
            )
            if start in partition_keys and end in partition_keys:
                busy.update(partition_keys[partition_keys.index(start) : partition_keys.index(end) + 1])
    return busy


def backfill_requests(
    context: dg.ScheduleEvaluationContext,
    settings: Settings,
    store: TableStore,
    score_options: scores.ScoreOptions,
    *,
    max_runs: int | None = None,
    retryable_pattern: str | None = None,
) -> list[dg.RunRequest] | dg.SkipReason:
    keys = context.instance.get_dynamic_partitions(BATCHES)
    if not keys:
        return dg.SkipReason("no batches registered yet")
    expected, notes = current_lineage(settings, score_options)
    for note in notes:
        context.log.warning(note)
    pattern = retryable_pattern or os.environ.get("VIDSCORE_RETRYABLE_ERRORS") or DEFAULT_RETRYABLE
    plans = plan_backfill(store, settings, keys, expected, pattern)
    busy = batches_in_flight(context.instance)
    todo, given_up = [], []
    for plan in plans:
        if plan.batch in busy:
            continue
        if plan.only_retries() and retried_already(context.instance, plan):
            context.log.warning(f"backfill {plan.batch}: retried once, unchanged, not retried again: {plan.summary()}")
            given_up.append(plan.batch)
        else:
            todo.append(plan)
    limit = max_runs if max_runs is not None else int(os.environ.get("VIDSCORE_BACKFILL_MAX_RUNS") or 200)
    if not todo:
        if not plans:
            return dg.SkipReason(f"all {len(keys)} batches are complete and current")
        why = []
        if given_up:
            why.append(f"{len(given_up)} batches keep their errors after a retry (see their rows' `error`): "
                       f"{', '.join(given_up[:10])}")  # fmt: skip
        if len(plans) > len(given_up):
            why.append(f"{len(plans) - len(given_up)} batches need work but already have a run in flight")
        return dg.SkipReason("; ".join(why))
    tick = (
        context.scheduled_execution_time.strftime("%Y%m%dT%H%M")
        if context.scheduled_execution_time
        else "now"
    )
    requests = []
    for plan in todo[:limit]:
        context.log.info(f"backfill {plan.batch}: {plan.summary()}")
        requests.append(
            dg.RunRequest(
                run_key=f"backfill:{tick}:{plan.batch}:{plan.fingerprint()}",
                partition_key=plan.batch,
                asset_selection=[dg.AssetKey(a) for a in plan.assets()],
                tags={
                    "vidscore/source": "backfill_schedule",
                    "vidscore/backfill_reason": plan.summary()[:1000],
                    FINGERPRINT_TAG: plan.fingerprint(),
                },
            )
        )
    if len(todo) > limit:
        context.log.info(f"{len(todo) - limit} more batches left for the next tick (limit {limit})")
    return requests


def backfill_cron() -> str:
    return os.environ.get("VIDSCORE_BACKFILL_CRON") or DEFAULT_CRON


@dg.schedule(
    name="score_backfill_schedule",
    cron_schedule=backfill_cron(),
    job=score_batch,
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
    description="Re-run batches whose scores are missing, hit a retryable error (decoder timeout, CUDA "
    "out of memory) or are stale (code_version / weights_sha256 changed). Cron: VIDSCORE_BACKFILL_CRON.",
)
def score_backfill_schedule(
    context: dg.ScheduleEvaluationContext,
    vidscore: VidscoreSettings,
    scoring: ScoringOptions,
):
    settings = vidscore.settings()
    score_options = scoring.resolved()["score_options"]
    return backfill_requests(context, settings, TableStore.from_settings(settings), score_options)


schedules = [score_backfill_schedule]
