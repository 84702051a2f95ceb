"""How partitioned assets are automated: declarative conditions and backfill grouping.

Read from the environment when the code location loads, so a deployment tunes them without code:
* `VIDSCORE_AUTOMATION` = `on_missing` (default), `eager` or `off`: how scores follow `videos`
  without a schedule (evaluated by `automation_sensor`, running by default).
* `VIDSCORE_BACKFILL_PARTITIONS_PER_RUN` (default 4): a backfill runs at most this many batches
  per run. Each run then pays its start-up (process, imports, model load) once for several
  batches, while the `gpu` pool still spreads runs over the GPUs.
"""

from __future__ import annotations

import os
import warnings

import dagster as dg

DEFAULT_PARTITIONS_PER_RUN = 4

# `backfill_policy` is marked beta; vidscore pins Dagster's version, and users cannot act on the warning
# (printed on every CLI, demo and UI start).
warnings.filterwarnings("ignore", message=".*backfill_policy.*", category=dg.BetaWarning)


def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{name}={value!r}: expected a whole number") from None
    if number < 1:
        raise ValueError(f"{name}={value!r}: must be >= 1")
    return number


def partitions_per_run() -> int:
    return _int_env("VIDSCORE_BACKFILL_PARTITIONS_PER_RUN", DEFAULT_PARTITIONS_PER_RUN)


def batch_backfill_policy() -> dg.BackfillPolicy:
    """Backfills of batch-partitioned assets: runs of up to N batches, each batch published whole."""
    return dg.BackfillPolicy.multi_run(max_partitions_per_run=partitions_per_run())


AUTOMATION_MODES = ("on_missing", "eager", "off")


def automation_mode() -> str:
    value = os.environ.get("VIDSCORE_AUTOMATION", "on_missing").strip().lower()
    if value not in AUTOMATION_MODES:
        raise ValueError(f"VIDSCORE_AUTOMATION={value!r}: expected one of {', '.join(AUTOMATION_MODES)}")
    return value


def score_automation_condition() -> dg.AutomationCondition | None:
    """When a score partition materializes without being asked (declarative automation).

    * `on_missing` (default): once, when a new batch's `videos` rows exist and the score's do not.
      Re-probing `videos` does not re-score (that costs GPU hours; the backfill schedule re-scores
      what is stale). `on_missing()` alone ignores runs in flight, so the inbox sensor's run, which
      covers the scores too, would be doubled: hence the two `in_progress` guards.
    * `eager`: also whenever an upstream partition is re-materialized.
    """
    mode = automation_mode()
    in_flight = dg.AutomationCondition.in_progress() | dg.AutomationCondition.any_deps_in_progress()
    if mode == "on_missing":
        return (dg.AutomationCondition.on_missing() & ~in_flight).with_label("on_missing, nothing in flight")
    if mode == "eager":
        return dg.AutomationCondition.eager()
    return None


def hourly_when_inputs_change(cron: str = "0 * * * *") -> dg.AutomationCondition:
    """A whole-corpus product: at most once per cron tick, and only when some partition of any input
    was updated since it last ran (`on_cron` would wait for every input to update instead)."""
    changed = dg.AutomationCondition.any_deps_match(
        dg.AutomationCondition.newly_updated() | dg.AutomationCondition.will_be_requested()
    )
    return (
        dg.AutomationCondition.cron_tick_passed(cron).since_last_handled()
        & changed.since_last_handled()
        & ~dg.AutomationCondition.in_progress()
    ).with_label(f"hourly when inputs change ({cron})")
