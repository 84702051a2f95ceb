"""kill -9 of a run mid-step on the deployed platform (Postgres, webserver, daemon): nothing wedges.

A `flow_scores` run (pool `gpu`, limit 1) re-scores a batch that already has a complete version;
once its step is scoring clips, its run worker process (and anything it started) gets SIGKILL.
Nobody calls any repair code afterwards. What a user must see:
* the killed run ends FAILURE, and its `gpu` slot is freed;
* the next run in the `gpu` pool (another batch) succeeds;
* nothing half-written is visible: the killed batch's partition is still the previous complete
  version, byte for byte, and the views' globs match only published versions
  `batch=<key>/<stamp>-<id>.parquet` (and the schema file).
No timed asserts: each wait is a generous timeout that only ends a hung test.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import duckdb
import pandas as pd
import pytest

from vidscore_core.media.synth import make_demo_corpus
from vidscore_core.tables import schema

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

COPIES = 30  # hard links of each demo clip: 150 distinct clips, many seconds of flow scoring
KILLED_TABLE = "flow_scores"
SOURCE = {"vidscore/source": "kill_test"}


@pytest.fixture(scope="module")
def platform_env_overrides() -> dict[str, str]:
    # Only the runs this test submits: no declarative automation scoring batches behind its back.
    return {"VIDSCORE_AUTOMATION": "off"}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def visible_files(store, table: str) -> list[str]:
    """What the table's view reads: the files DuckDB's glob (the one tables/views.py uses) matches."""
    con = duckdb.connect()
    try:
        pattern = f"{store.table_dir(table)}/{schema.partition_key(table)}=*/*.parquet".replace("'", "''")
        rows = con.execute(f"SELECT file FROM glob('{pattern}')").fetchall()
    finally:
        con.close()
    return sorted(os.path.relpath(r[0], store.table_dir(table)) for r in rows)


def progress(instance: dg.DagsterInstance, run_id: str, label: str) -> tuple[int, int] | None:
    """The latest "label[batch]: done/total clips" line of the run, as (done, total)."""
    pattern = re.compile(rf"^{re.escape(label)}: (\d+)/(\d+) clips$")
    latest = None
    for record in instance.all_logs(run_id):
        match = pattern.match(record.user_message or "")
        if match:
            latest = (int(match.group(1)), int(match.group(2)))
    return latest


def run_worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.RUN_START):
        if record.dagster_event is not None and record.dagster_event.pid:
            return int(record.dagster_event.pid)
    return None


def test_kill_9_mid_step_frees_the_pool_and_leaves_no_partial_partition(platform, tmp_path):
    instance = platform.instance()
    store = platform.store()
    wait_for = platform.wait_for

    def succeed(run_id: str, what: str, timeout: float = 300) -> dg.DagsterRun:
        run = platform.wait_run(run_id, timeout, what)
        assert run.status == dg.DagsterRunStatus.SUCCESS, (
            f"{what} ended {run.status}\n{platform.describe_runs()}"
        )
        return run

    # Only runs this test submits: the batches sensor would score every batch a meta file brings.
    assert platform.stop_sensor("batches_sensor") == "STOPPED"

    # A big batch (150 distinct clips: hard links have their own paths, hence their own video ids)
    # and a small one (the demo corpus), ingested and probed through GraphQL-submitted runs.
    corpus = make_demo_corpus(tmp_path / "corpus")
    meta = pd.read_csv(corpus)
    meta["path"] = [str(corpus.parent / p) for p in meta["path"]]
    rows = []
    for i in range(COPIES):
        for row in meta[meta["kind"] == "video"].itertuples():
            copy = Path(row.path).with_name(f"copy{i:02d}_{Path(row.path).name}")
            os.link(row.path, copy)
            rows.append({"path": str(copy), "text": row.text})
    big_meta, small_meta = tmp_path / "big.csv", tmp_path / "small.csv"
    pd.DataFrame(rows).to_csv(big_meta, index=False)
    meta.to_csv(small_meta, index=False)
    keys: dict[str, str] = {}
    for name, path in (("big", big_meta), ("small", small_meta)):
        run_id = platform.submit(
            "ingest_meta_file",
            run_config={"ops": {"meta_files": {"config": {"path": str(path), "batch_size": 1000}}}},
            tags=SOURCE,
        )
        succeed(run_id, f"the meta_files run of {path.name}")
        records = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
        (keys[name],) = records[0].asset_materialization.metadata["batches"].value
    big, small = keys["big"], keys["small"]
    for batch in (big, small):
        run_id = platform.submit(
            "score_batch", tags={"dagster/partition": batch, **SOURCE}, asset_selection=["videos"]
        )
        succeed(run_id, f"videos of {batch}")
    assert store.partition_counts("videos") == {big: len(rows), small: len(meta)}

    # The previous complete version of the big batch's flow scores.
    first = platform.submit(
        "score_batch", tags={"dagster/partition": big, **SOURCE}, asset_selection=[KILLED_TABLE]
    )
    succeed(first, f"the first {KILLED_TABLE} run of {big}")
    published = Path(store.partition_path(KILLED_TABLE, big))
    before = sha256(published)
    assert store.partition_counts(KILLED_TABLE)[big] == len(rows)

    # The run to kill: wait until its step scores clips (past start-up, not yet publishing).
    victim = platform.submit(
        "score_batch", tags={"dagster/partition": big, **SOURCE}, asset_selection=[KILLED_TABLE]
    )
    label = f"{KILLED_TABLE}[{big}]"  # the step logs progress under the tables it computes
    done, total = wait_for(
        lambda: (p := progress(instance, victim, label)) and p[0] > 0 and p,
        300, f"run {victim} to score clips of {big}", 0.5,
    )  # fmt: skip
    assert done < total, f"the step finished scoring ({done}/{total}) before the kill: make the batch bigger"
    gpu = instance.event_log_storage.get_concurrency_info("gpu")
    assert victim in gpu.active_run_ids, f"the scoring step holds no gpu slot: {gpu}"
    pid = run_worker_pid(instance, victim)
    assert pid is not None and platform.alive(pid), pid
    servers = {p for s in platform.services for p in (s.process.pid, *platform.descendants(s.process.pid))}
    assert pid in servers, f"pid {pid} of run {victim} is not a process of the platform"
    # Frozen first, so it starts no process between the listing and the kill: then SIGKILL the worker
    # and everything under it (step processes under a multiprocess executor, decoder workers).
    os.kill(pid, signal.SIGSTOP)
    tree = [pid, *platform.descendants(pid)]
    for target in tree:
        with contextlib.suppress(ProcessLookupError):
            os.kill(target, signal.SIGKILL)
    killed_at = time.monotonic()
    wait_for(lambda: not any(platform.alive(p) for p in tree), 60, "the killed processes to be gone", 0.5)
    assert not any(r.dagster_event_type == dg.DagsterEventType.STEP_SUCCESS
                   for r in instance.all_logs(victim)), "the step succeeded before the kill"  # fmt: skip

    # Nothing repairs anything by hand: the platform marks the run failed and frees its slot.
    killed = platform.wait_run(victim, 240, f"the killed run {victim} to be marked ended")
    assert killed.status == dg.DagsterRunStatus.FAILURE, killed.status
    failed_after = time.monotonic() - killed_at
    wait_for(
        lambda: victim not in instance.event_log_storage.get_concurrency_info("gpu").active_run_ids,
        240, f"the gpu slot of {victim} to be freed",
    )  # fmt: skip
    freed_after = time.monotonic() - killed_at
    reasons = [
        (r.dagster_event.message if r.dagster_event else None) or r.user_message
        for r in instance.all_logs(victim)
        if r.dagster_event_type in (dg.DagsterEventType.ENGINE_EVENT, dg.DagsterEventType.RUN_FAILURE)
    ]
    print(f"killed run {victim} (pid {pid}, {len(tree)} processes) at {done}/{total} clips: marked FAILURE "
          f"after {failed_after:.0f}s, gpu slot freed after {freed_after:.0f}s; engine events: {reasons[-3:]}")  # fmt: skip
    cli = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "instance", "concurrency", "get", "gpu"],
        env=platform.env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    print(f"after the kill, `dagster instance concurrency get gpu`:\n{cli.stdout.strip()}")
    assert victim not in cli.stdout

    # Nothing half-written is visible: the previous version whole, only published files in the globs.
    assert sha256(published) == before, "the killed run changed the published partition"
    assert store.partition_counts(KILLED_TABLE)[big] == len(rows)
    for table in schema.PUBLIC_TABLES:
        key = re.escape(schema.partition_key(table))
        published_name = re.compile(rf"{key}=[^./][^/]*/\d{{8}}T\d{{12}}Z-[0-9a-f]{{8}}\.parquet")
        names = visible_files(store, table)
        strays = [n for n in names if n != f"{schema.partition_key(table)}=!schema/schema.parquet"
                  and not published_name.fullmatch(n)]  # fmt: skip
        assert not strays, f"{table}: files other than published versions match the view's glob: {strays}"
    schema_file = f"{schema.partition_key(KILLED_TABLE)}=!schema/schema.parquet"
    assert set(visible_files(store, KILLED_TABLE)) == {
        schema_file,
        f"{published.parent.name}/{published.name}",
    }

    # The next run in the gpu pool proceeds: another batch, then the killed one again.
    nxt = platform.submit(
        "score_batch", tags={"dagster/partition": small, **SOURCE}, asset_selection=[KILLED_TABLE]
    )
    succeed(nxt, f"the {KILLED_TABLE} run of {small} after the kill")
    assert store.partition_counts(KILLED_TABLE)[small] == len(meta)
    again = platform.submit(
        "score_batch", tags={"dagster/partition": big, **SOURCE}, asset_selection=[KILLED_TABLE]
    )
    succeed(again, f"a new {KILLED_TABLE} run of {big}")
    assert store.partition_counts(KILLED_TABLE)[big] == len(rows)
    assert not instance.event_log_storage.get_concurrency_info("gpu").active_run_ids
    con = duckdb.connect(str(platform.home / "vidscore.duckdb"), read_only=True)
    try:
        n, scored = con.execute(
            "SELECT count(*), count(flow) FROM flow_scores WHERE batch = ?", [big]
        ).fetchone()
    finally:
        con.close()
    assert n == len(rows) and scored == len(rows)
    print("kill -9 runs:\n" + platform.describe_runs())
