"""Run the code location's assets from the CLI: one Dagster instance shared with `dagster dev`."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import dagster as dg

from vidscore_core.ingest.meta import meta_location
from vidscore_core.settings import Settings
from vidscore_dagster.defs.automation.jobs import SCORED_BY_CALLER_TAG
from vidscore_dagster.defs.ingest.signed_meta import config_path

INSTANCE_TEMPLATE = Path(__file__).with_name("dagster.yaml")


def ensure_dagster_home(settings: Settings) -> Path:
    """Point DAGSTER_HOME at `$VIDSCORE_HOME/dagster` when unset, and give it vidscore's dagster.yaml."""
    home = settings.dagster_home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    target = home / "dagster.yaml"
    if not target.exists() and INSTANCE_TEMPLATE.exists():
        shutil.copyfile(INSTANCE_TEMPLATE, target)
    return home


def instance_for(settings: Settings) -> dg.DagsterInstance:
    ensure_dagster_home(settings)
    return dg.DagsterInstance.get()


def materialize_batches(
    instance: dg.DagsterInstance,
    keys: Sequence[str],
    asset_names: Sequence[str],
    *,
    resources: dict | None = None,
    on_batch: Callable[[str, bool, str], None] | None = None,
    log_level: str | None = None,
) -> dict[str, bool]:
    """Materialize `asset_names` (with their checks) for each batch, in-process; returns success per batch."""
    from vidscore_dagster.launcher import reap_dead_runs

    reap_dead_runs(instance)  # a run killed earlier must not hold the pool slots this one needs
    outcome: dict[str, bool] = {}
    for key in keys:
        result = _materialize(instance, asset_names, resources=resources, log_level=log_level, partition_key=key)
        outcome[key] = result.success
        if on_batch:
            on_batch(key, result.success, "" if result.success else failure_reason(result))
    return outcome


def _materialize(
    instance: dg.DagsterInstance,
    asset_names: Sequence[str],
    *,
    resources: dict | None = None,
    log_level: str | None = None,
    partition_key: str | None = None,
    op_config: dict | None = None,
    tags: dict[str, str] | None = None,
) -> dg.ExecuteInProcessResult:
    """One in-process run of the code location's `asset_names` with their checks, as the CLI launches it.

    Dagster's own log lines (stack traces included) go to the instance's event log, where `vidscore ui`
    shows them, not to the terminal: the CLI prints one line per step instead. `VIDSCORE_DEBUG=1` (or an
    explicit `log_level`) prints them too.
    """
    from vidscore_dagster.definitions import defs
    from vidscore_dagster.defs.resources import default_resources

    wanted = {dg.AssetKey(n) for n in asset_names}
    assets = [a for a in defs.assets or [] if set(a.keys) & wanted]
    checks = [c for c in defs.asset_checks or [] if {k.asset_key for k in c.check_keys} & wanted]
    return dg.materialize(
        [*assets, *checks],
        # A multi-asset step (per_clip_scores) computes only the selected tables it holds.
        selection=dg.AssetSelection.assets(*wanted),
        partition_key=partition_key,
        instance=instance,
        # Read the environment now, not when `definitions` was first imported.
        resources=resources or default_resources(),
        raise_on_error=False,
        tags={"vidscore/launched_by": "cli", **(tags or {})},
        run_config={"ops": op_config or {}, "loggers": {"console": {"config": {"log_level": log_level or console_log_level()}}}},
    )


def console_log_level() -> str:
    """Dagster's terminal logging: everything with VIDSCORE_DEBUG=1, else nothing (it is in the instance)."""
    return "DEBUG" if os.environ.get("VIDSCORE_DEBUG") else "CRITICAL"


def ingest_meta_file(
    instance: dg.DagsterInstance,
    meta: str | Path,
    batch_size: int,
    *,
    resources: dict | None = None,
    scored_by_caller: bool = False,
) -> tuple[list[str], str]:
    """Materialize `meta_files` for one meta file, in-process; returns (batch keys, failure reason or "").

    `scored_by_caller`: the caller materializes the batches itself; the batches sensor leaves them be.
    """
    result = _materialize(
        instance, ["meta_files"], resources=resources,
        op_config={"meta_files": {"config": {"path": config_path(meta_location(meta)), "batch_size": batch_size}}},
        tags={SCORED_BY_CALLER_TAG: "true"} if scored_by_caller else None,
    )  # fmt: skip
    if not result.success:
        return [], failure_reason(result)
    materialization = result.asset_materializations_for_node("meta_files")[0]
    return list(materialization.metadata["batches"].value), ""


def ingest_notes(instance: dg.DagsterInstance) -> list[str]:
    """What the last `meta_files` run found in the meta file's rows (repeated paths, missing captions)."""
    event = instance.get_latest_materialization_event(dg.AssetKey("meta_files"))
    notes = event.asset_materialization.metadata.get("row_notes") if event and event.asset_materialization else None
    return list(notes.value) if notes is not None else []


def materialize_report(instance: dg.DagsterInstance, *, resources: dict | None = None) -> tuple[str, str]:
    """Build `corpus_report` in-process; returns (its summary line, "") or ("", the failure reason)."""
    result = _materialize(instance, ["corpus_report"], resources=resources)
    if not result.success:
        return "", failure_reason(result)
    return str(result.asset_materializations_for_node("corpus_report")[0].metadata["summary"].value), ""


def materialize_corpus(
    instance: dg.DagsterInstance, name: str, config: dict | None = None, *, resources: dict | None = None
) -> tuple[bool, str, dict]:
    """Build an unpartitioned asset (`near_duplicates`, `filtered_videos`) and its checks, in-process;
    returns (ok, failure reason, the materialization's metadata as plain values)."""
    result = _materialize(instance, [name], resources=resources,
                          op_config={name: {"config": config or {}}})  # fmt: skip
    if not result.success:
        return False, failure_reason(result), {}
    events = result.asset_materializations_for_node(name)
    metadata = {k: v.value for k, v in events[0].metadata.items()} if events else {}
    return True, "", metadata


def summary(settings: Settings, keys: Sequence[str], preset: str | None = None,
            failed: Sequence[str] = ()) -> str:  # fmt: skip
    """What the batches hold now: rows, scores, errors by reason, where to look next (files that exist).

    `keys` are the batches this run built; `failed` the ones it could not (named, not counted).
    """
    from vidscore_core.scores import SCORES
    from vidscore_core.tables.schema import quote_ident
    from vidscore_core.tables.store import TableStore

    store = TableStore.from_settings(settings)
    # video_scores has a row per caption of a clip: clip counts are distinct, per-caption scores per row.
    def count(column: str, per_row: bool) -> str:
        col = quote_ident(column)
        return f"count({col}) AS {col}" if per_row else f"count(DISTINCT video_id) FILTER (WHERE {col} IS NOT NULL) AS {col}"

    counts = ", ".join(count(s.column, s.per_row) for s in SCORES)
    totals = store.query_df(
        "SELECT count(DISTINCT video_id) AS clips, count(DISTINCT video_id) FILTER (WHERE video_error IS NOT NULL) "
        f"AS unreadable, {counts} FROM video_scores",
        keys=keys,
    ).iloc[0]
    reasons = ", ".join(["video_error", *(s.error_column for s in SCORES)])
    errors = store.query_df(
        f"SELECT reason, count(*) AS n FROM (SELECT coalesce({reasons}) AS reason FROM video_scores) "
        "WHERE reason IS NOT NULL GROUP BY reason ORDER BY n DESC LIMIT 5",
        keys=keys,
    )
    scored = ", ".join(f"{s.column} {int(totals[s.column])}" for s in SCORES)
    lines = [
        f"summary: {int(totals['clips'])} clips in {len(keys)} batch(es), {int(totals['unreadable'])} unreadable; "
        f"scored: {scored}",
    ]
    if failed:  # their tables may hold an earlier run's rows: not this run's result
        lines.append(f"  not counted: {len(failed)} failed batch(es): {', '.join(failed[:5])}"
                     f"{' …' if len(failed) > 5 else ''}")  # fmt: skip
    lines += [f"  {int(n)} × {reason}" for reason, n in zip(errors["reason"], errors["n"], strict=True)]
    lines.append(f"tables: {store.root} (SQL views: {settings.db_path})")
    export = settings.exports_dir / f"filtered_{preset}.csv" if preset else None
    if export is not None and export.is_file():
        lines.append(f"filtered: {export}")
    lines.append('next: vidscore sql "SELECT path, aes, flow, match FROM video_scores ORDER BY aes DESC LIMIT 10"')
    return "\n".join(lines)


def failure_reason(result: dg.ExecuteInProcessResult) -> str:
    """The first failed step and the cause of its failure, for a one-line report.

    The cause is the innermost error under Dagster's wrappers (a step error, "Exceeded max_retries"), shown
    without its module path: "meta_files: MetaError: meta.csv: no 'path' column" reads as
    "meta_files: meta.csv: no 'path' column" for vidscore's own user-facing errors.
    """
    retried: dict[str, object] = {}
    for event in result.all_events:
        data = event.event_specific_data
        if event.event_type_value == "STEP_UP_FOR_RETRY" and getattr(data, "error", None) is not None:
            retried[event.step_key] = data.error
        if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
            error = _cause(event.step_failure_data.error)
            wrapper = error.message.startswith(("Exceeded max_retries", "dagster."))
            if wrapper and event.step_key in retried:
                error = _cause(retried[event.step_key])
            return f"{event.step_key}: {_message(error)}"
    return "the run did not succeed (see the run in the Dagster UI)"


# vidscore's errors whose message is written for the user: shown without their class name.
_USER_ERRORS = ("MetaError", "OutputError", "WeightsMissingError", "WeightsDownloadError", "ChecksumMismatchError")


def _cause(error):
    """The innermost error under Dagster's own wrappers (its classes, or a retry request)."""
    while error.cause is not None and ((error.cls_name or "").startswith("Dagster")
                                       or error.message.startswith("dagster.")):  # fmt: skip
        error = error.cause
    return error


def _message(error) -> str:
    text = " ".join(line.strip() for line in error.message.strip().splitlines() if line.strip())
    head, sep, rest = text.partition(": ")
    if sep and head.rsplit(".", 1)[-1] == error.cls_name and error.cls_name in _USER_ERRORS:
        return rest
    if sep and "." in head and head.rsplit(".", 1)[-1] == error.cls_name:
        return f"{error.cls_name}: {rest}"  # the class, not its module path
    return text


def set_pool_limits(instance: dg.DagsterInstance | None = None) -> dict[str, int]:
    """`gpu` = the number of visible GPUs (at least 1)."""
    import torch

    instance = instance or dg.DagsterInstance.get()
    limits = {"gpu": max(1, torch.cuda.device_count())}
    for pool, limit in limits.items():
        instance.event_log_storage.set_concurrency_slots(pool, limit)
    return limits
