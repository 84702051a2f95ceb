"""A run launcher whose runs cannot wedge the instance when their process is killed.

Dagster's default launcher starts each run in a subprocess of the code server but cannot tell run
monitoring whether that process is still alive. A run killed with SIGKILL (or by the OOM killer)
then stays STARTED forever and keeps its pool slots. This launcher answers the health check, so
the daemon's run monitoring marks such a run failed and frees its slots
(`run_monitoring.free_slots_after_run_end_seconds` in dagster.yaml).

Private Dagster names, because Dagster has no public ones for them (checked against 1.13): the
health-check types a run launcher returns (`CheckRunHealthResult`, `WorkerStatus`, imported from
`dagster._core.launcher` as Dagster's own launchers do), the run tag naming the run's code server,
and the gRPC client that asks that server which runs it executes.
"""

from __future__ import annotations

import json
import os

from dagster import DagsterEventType, DagsterInstance, DagsterRun, DefaultRunLauncher, deserialize_value
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._core.storage.tags import GRPC_INFO_TAG


class MonitoredRunLauncher(DefaultRunLauncher):
    """`DefaultRunLauncher` plus a worker health check (the code server's list of live runs, else the pid)."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        live = _code_server_runs(run)
        if live is not None:
            if run.run_id in live:
                return CheckRunHealthResult(WorkerStatus.RUNNING)
            return CheckRunHealthResult(WorkerStatus.NOT_FOUND, "the run's process is gone (killed?)")
        pid = _run_worker_pid(self._instance, run.run_id)
        if pid is None or _alive(pid):
            # Not started far enough to know, or still there: start_timeout_seconds covers a stuck start.
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        return CheckRunHealthResult(WorkerStatus.NOT_FOUND, f"run worker process {pid} is gone (killed?)")


def _code_server_runs(run: DagsterRun) -> list[str] | None:
    """Run ids the run's code server is executing now; None when it cannot be asked."""
    from dagster._grpc.client import DagsterGrpcClient

    raw = run.tags.get(GRPC_INFO_TAG)
    if not raw:
        return None
    info = json.loads(raw)
    client = DagsterGrpcClient(port=info.get("port"), socket=info.get("socket"), host=info.get("host"),
                               use_ssl=bool(info.get("use_ssl", False)))  # fmt: skip
    try:
        return list(deserialize_value(client.get_current_runs(), list))
    except Exception:  # a restarted or unreachable code server: fall back to the pid
        return None


def _run_worker_pid(instance: DagsterInstance, run_id: str) -> int | None:
    records = instance.all_logs(run_id, of_type=DagsterEventType.RUN_START)
    for record in records:
        if record.dagster_event is not None and record.dagster_event.pid:
            return int(record.dagster_event.pid)
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie (killed, not yet reaped by its parent) is dead for our purpose.
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def reap_dead_runs(instance: DagsterInstance) -> list[str]:
    """Mark STARTED runs whose process is gone as failed and free their pool slots; returns their ids.

    The daemon's run monitoring does this when it runs; the CLI calls it before materializing, so
    a run killed while no daemon was up never blocks the next one.
    """
    from dagster import DagsterRunStatus, RunsFilter

    reaped = []
    launcher = MonitoredRunLauncher()
    launcher.register_instance(instance)
    for record in instance.get_run_records(RunsFilter(statuses=[DagsterRunStatus.STARTED])):
        run = record.dagster_run
        if launcher.check_run_worker_health(run).status != WorkerStatus.NOT_FOUND:
            continue
        instance.report_engine_event("run worker process is gone (killed?): marking the run failed", run)
        instance.report_run_failed(run)
        reaped.append(run.run_id)
    for run_id in reaped:
        if instance.event_log_storage.supports_global_concurrency_limits:
            instance.event_log_storage.free_concurrency_slots_for_run(run_id)
    return reaped
