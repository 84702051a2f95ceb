"""Sensors: the inbox (meta files dropped in `$VIDSCORE_HOME/inbox/`, or `$VIDSCORE_INBOX`: a folder
or an s3:// prefix) and new batches.

The inbox sensor only notices files and requests runs; the work happens in runs:
* a file is taken only once it has settled (not modified for `VIDSCORE_INBOX_SETTLE_S`, default
  5 s); dotfiles and `.tmp`/`.part` names are never taken, so "write to a temp name, then
  rename" is the way to drop a file at once. The tick never goes past an unsettled file, so the
  cursor cannot skip it;
* its content fingerprint (sha256) names its copy in `inbox/processed/` and the run key of the
  `meta_files` run that ingests that copy: a file dropped twice is ingested once;
* a file whose name is not a meta file's moves to `inbox/rejected/` with `<name>.reason.txt`; a
  file that cannot be read as a meta file fails its `meta_files` run, which says why.
* on an s3:// prefix the same rules hold for its objects: one loop over `ingest.inbox.Inbox`, a
  local folder or an s3:// prefix (`ingest.object_inbox`), where the fingerprint is the object's
  ETag and size and the `meta_files` run reads the copy under `processed/` in place.
`batches_sensor` then requests one `score_batch` run per batch a `meta_files` run registered.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from vidscore_core.ingest.batches import DEFAULT_BATCH_SIZE
from vidscore_core.ingest.inbox import PROCESSED, Unsettled
from vidscore_core.ingest.inboxes import open_inbox
from vidscore_dagster.defs.automation.jobs import (
    BATCH_ASSETS,
    SCORED_BY_CALLER_TAG,
    ingest_meta_file,
    runnable_assets,
    score_batch,
)
from vidscore_dagster.defs.resources import ScoringOptions, VidscoreSettings

META_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")
RECENT_LIMIT = 1000
TICK_BUDGET_S = 20.0  # stop taking files after this long; the gRPC sensor call times out at 60 s


def _float_env(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    return float(value) if value else default


def settle_seconds() -> float:
    return _float_env("VIDSCORE_INBOX_SETTLE_S", 5.0)


@dataclass
class InboxCursor:
    """Where the last tick stopped: files at or before `after` were handled (moved away or kept)."""

    after: tuple[int, str] = (0, "")
    recent: list[str] = field(default_factory=list)  # fingerprints, oldest first

    @classmethod
    def parse(cls, raw: str | None) -> InboxCursor:
        if not raw:
            return cls()
        data = json.loads(raw)
        return cls(after=(int(data["after"][0]), str(data["after"][1])), recent=list(data.get("recent", [])))

    def dump(self) -> str:
        return json.dumps({"after": list(self.after), "recent": self.recent[-RECENT_LIMIT:]})

    def remember(self, fingerprint: str) -> None:
        if fingerprint not in self.recent:
            self.recent.append(fingerprint)
            del self.recent[:-RECENT_LIMIT]


@dataclass
class Outcome:
    name: str
    fingerprint: str
    target: str  # the copy in processed/ that the run ingests
    status: str = "queued"  # queued | duplicate | rejected
    detail: str = ""


def run_request(outcome: Outcome, batch_size: int) -> dg.RunRequest:
    """The `meta_files` run of a file; the run key is its content, so Dagster launches it once."""
    return dg.RunRequest(
        run_key=f"inbox:{outcome.fingerprint[:32]}",
        run_config={"ops": {"meta_files": {"config": {"path": outcome.target, "batch_size": batch_size}}}},
        tags={"vidscore/source": "inbox", "vidscore/meta_file": outcome.name[:200]},
    )


def inbox_location(default: Path) -> str:
    """`$VIDSCORE_INBOX` (a folder or an s3:// prefix), else `$VIDSCORE_HOME/inbox`."""
    return os.environ.get("VIDSCORE_INBOX", "").strip() or str(default)


def _tick_limits() -> tuple[int, int, int]:
    """(settle time in ns, files per tick, batch size) for this tick."""
    return (
        int(settle_seconds() * 1e9),
        int(os.environ.get("VIDSCORE_INBOX_MAX_FILES") or 10),
        int(os.environ.get("VIDSCORE_INGEST_BATCH_SIZE") or DEFAULT_BATCH_SIZE),
    )


def evaluate_inbox(context: dg.SensorEvaluationContext, vidscore: VidscoreSettings) -> dg.SensorResult:
    """One tick over the inbox, a local folder or an s3:// prefix (`ingest.inbox`): settled meta files
    move to processed/ and get their run request; other names move to rejected/."""
    inbox = open_inbox(inbox_location(vidscore.settings().inbox_dir))
    settle_ns, limit, batch_size = _tick_limits()
    cursor = InboxCursor.parse(context.cursor)
    started = time.monotonic()
    outcomes: list[Outcome] = []
    requests: list[dg.RunRequest] = []
    waiting: str | None = None
    for arrival in inbox.scan(cursor.after):
        if len(outcomes) >= limit or time.monotonic() - started > TICK_BUDGET_S:
            break
        if time.time_ns() - arrival.changed_ns < settle_ns:
            waiting = arrival.name  # later files wait too, so the cursor never passes this one
            break
        if Path(arrival.name).suffix.lower() not in META_SUFFIXES:  # rejected before hashing a stray video
            inbox.reject(arrival, f"not a meta file: the name must end in one of {', '.join(META_SUFFIXES)}")
            outcomes.append(Outcome(arrival.name, "", "", "rejected", "not a meta file"))
            cursor.after = arrival.key
            continue
        try:
            fp = inbox.fingerprint(arrival)
        except FileNotFoundError:
            continue  # taken away before we read it
        except Unsettled:
            waiting = arrival.name  # still being written despite the settle time
            break
        taken = inbox.take(arrival, fp)
        status = "queued" if taken.created else "duplicate"
        outcome = Outcome(arrival.name, fp, taken.target, status, f"-> {PROCESSED}/{taken.target.rsplit('/', 1)[-1]}")
        outcomes.append(outcome)
        requests.append(run_request(outcome, batch_size))  # a duplicate's request has the same key
        cursor.remember(fp)
        cursor.after = arrival.key
        context.log.info(f"{outcome.status} {outcome.name}: {outcome.detail}")
    if not outcomes:
        reason = f"waiting for {waiting} to settle" if waiting else "no new meta files in the inbox"
        return dg.SensorResult(skip_reason=reason, cursor=cursor.dump())
    return dg.SensorResult(run_requests=requests, cursor=cursor.dump())


@dg.sensor(
    name="inbox_sensor",
    job=ingest_meta_file,
    minimum_interval_seconds=int(os.environ.get("VIDSCORE_INBOX_INTERVAL_S") or 30),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Request a `meta_files` run for each meta file dropped in $VIDSCORE_HOME/inbox/ or "
    "$VIDSCORE_INBOX (a folder or an s3:// prefix) (moved "
    "to inbox/processed/); files that are not meta files go to inbox/rejected/ with a reason.",
)
def inbox_sensor(context: dg.SensorEvaluationContext, vidscore: VidscoreSettings) -> dg.SensorResult:
    return evaluate_inbox(context, vidscore)


@dg.asset_sensor(
    asset_key=dg.AssetKey("meta_files"),
    job=score_batch,
    name="batches_sensor",
    minimum_interval_seconds=int(os.environ.get("VIDSCORE_INBOX_INTERVAL_S") or 30),
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="One `score_batch` run for each batch a `meta_files` run registered, selecting the assets "
    "the present weights allow (the run's tags say which wait for weights).",
)
def batches_sensor(
    context: dg.SensorEvaluationContext,
    asset_event: dg.EventLogEntry,
    vidscore: VidscoreSettings,
    scoring: ScoringOptions,
):
    materialization = asset_event.asset_materialization
    keys = materialization.metadata.get("batches") if materialization else None
    run = context.instance.get_run_by_id(asset_event.run_id)
    if run is not None and run.tags.get(SCORED_BY_CALLER_TAG) == "true":
        context.log.info(f"run {asset_event.run_id} scores its own batches (vidscore ingest --materialize)")
        return
    runnable = runnable_assets(vidscore.settings(), scoring.resolved()["score_options"])
    waiting = [a for a in BATCH_ASSETS if a not in runnable]
    if waiting:
        context.log.info(f"not requested for lack of weights (see `vidscore weights status`): {', '.join(waiting)}")
    for key in keys.value if keys is not None else []:
        yield dg.RunRequest(
            run_key=f"batch:{asset_event.run_id}:{key}",
            partition_key=key,
            asset_selection=[dg.AssetKey(a) for a in runnable],
            tags={"vidscore/source": "meta_files", "vidscore/meta_files_run": asset_event.run_id,
                  **({"vidscore/waiting_for_weights": ",".join(waiting)} if waiting else {})},
        )  # fmt: skip


# Evaluates the assets' automation conditions (see policies.py). Declared here rather
# than left to Dagster's default sensor, which starts stopped: scores should follow `videos` as soon
# as the daemon runs. Many partitions at once become one backfill, grouped by the backfill policy.
automation_sensor = dg.AutomationConditionSensorDefinition(
    "automation_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=int(os.environ.get("VIDSCORE_AUTOMATION_INTERVAL_S") or 30),
    description="Materializes assets whose automation condition is met (scores follow new or re-run "
    "`videos` partitions).",
)

sensors = [inbox_sensor, batches_sensor, automation_sensor]
