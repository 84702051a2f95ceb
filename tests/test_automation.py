"""Automation: the inbox sensor, the backfill schedule's plan, multi-partition runs, eager scores.

The sensor and the schedule are evaluated as Dagster evaluates them (a real instance, a real
cursor, resources injected), against real files and real Parquet tables. The daemon-driven flow
over Postgres is in tests/e2e/.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from vidscore_core import weights
from vidscore_core.media.synth import make_demo_corpus
from vidscore_core.scores import SCORES
from vidscore_core.scoring import lineage, options
from vidscore_core.tables.store import TableStore
from vidscore_dagster.defs.automation import policies
from vidscore_dagster.defs.automation.jobs import BATCH_ASSETS, score_batch
from vidscore_dagster.defs.automation.schedules import (
    Expected,
    current_lineage,
    plan_backfill,
    score_backfill_schedule,
)
from vidscore_dagster.defs.automation.sensors import InboxCursor, batches_sensor, inbox_sensor
from vidscore_dagster.defs.resources import ScoringOptions, VidscoreSettings, default_resources
from vidscore_dagster.runner import failure_reason, ingest_meta_file

OLD = time.time() - 3600  # an mtime well past the settle period


@pytest.fixture
def home(vidscore_env):
    settings, store = vidscore_env
    settings.inbox_dir.mkdir(parents=True, exist_ok=True)
    return settings, store


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_demo_corpus(tmp_path_factory.mktemp("corpus"))


def drop(inbox: Path, name: str, content: bytes | str, *, mtime: float | None = OLD) -> Path:
    """Write a file into the inbox the safe way (temp name, then rename), with a chosen mtime."""
    path = inbox / name
    tmp = inbox / f".{name}.tmp"
    tmp.write_bytes(content.encode() if isinstance(content, str) else content)
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    os.replace(tmp, path)
    return path


def tick(settings, instance: dg.DagsterInstance, cursor: str | None = None) -> dg.SensorResult:
    resources = {"vidscore": VidscoreSettings(home=str(settings.home))}
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
        return inbox_sensor(context)


def run_ingest(instance: dg.DagsterInstance, request: dg.RunRequest) -> dg.ExecuteInProcessResult:
    """Execute a `meta_files` run request as the daemon would launch it."""
    from vidscore_dagster.definitions import defs

    return defs.resolve_job_def(request.job_name or "ingest_meta_file").execute_in_process(
        instance=instance, run_config=request.run_config, tags=request.tags, raise_on_error=False
    )


def test_a_dropped_meta_file_becomes_a_meta_files_run_then_batch_runs(home, corpus, monkeypatch):
    settings, store = home
    monkeypatch.setenv("VIDSCORE_INGEST_BATCH_SIZE", "5")
    # Paths in the meta file are relative to the corpus: make them absolute as users should.
    meta = pd.read_csv(corpus)
    meta["path"] = [str(corpus.parent / p) for p in meta["path"]]
    drop(settings.inbox_dir, "corpus.csv", meta.to_csv(index=False))
    (settings.inbox_dir / ".hidden.csv").write_text("path\nx.mp4\n")  # dotfiles are never taken
    (settings.inbox_dir / "upload.csv.part").write_text("path\n")  # neither are partial downloads

    with dg.instance_for_test() as instance:
        result = tick(settings, instance)
        # The tick itself reads nothing of the file: it requests the run that ingests it.
        (request,) = result.run_requests
        assert inbox_sensor.job_name == "ingest_meta_file" and request.tags["vidscore/meta_file"] == "corpus.csv"
        assert not result.dynamic_partitions_requests and not store.partitions("manifests")
        left = sorted(p.name for p in settings.inbox_dir.iterdir())
        assert left == [".hidden.csv", "processed", "upload.csv.part"]
        processed = [p.name for p in (settings.inbox_dir / "processed").iterdir() if p.is_file()]
        assert len(processed) == 1 and processed[0].startswith("corpus-") and processed[0].endswith(".csv")
        # The cursor moved: the next tick has nothing to do and says so.
        again = tick(settings, instance, result.cursor)
        assert not again.run_requests and "no new meta files" in str(again.skip_reason)

        # The run registers the batches (8 rows in batches of 5) ...
        assert run_ingest(instance, request).success
        keys = instance.get_dynamic_partitions("batches")
        assert len(keys) == 2 and store.partitions("manifests") == set(keys)
        # ... and the batches sensor asks for one score_batch run per batch, once.
        resources = {"vidscore": VidscoreSettings(), "scoring": ScoringOptions()}
        from vidscore_dagster.definitions import defs

        with (
            dg.partition_loading_context(dynamic_partitions_store=instance),  # what the daemon provides
            dg.build_sensor_context(instance=instance, resources=resources, definitions=defs) as context,
        ):
            batch_requests = batches_sensor.evaluate_tick(context).run_requests
            assert sorted(r.partition_key for r in batch_requests) == sorted(keys)
            assert {r.job_name for r in batch_requests} <= {None, "score_batch"}
            # The fixture weights are all present: every batch asset is selected.
            assert {k.to_user_string() for k in batch_requests[0].asset_selection} == set(BATCH_ASSETS)
            context.update_cursor(batches_sensor.evaluate_tick(context).cursor)
            assert not batches_sensor.evaluate_tick(context).run_requests  # the cursor moved past it
        # Without the aesthetic MLP, no run is launched that would fail for lack of it: the rest runs,
        # and the run says what waits.
        monkeypatch.setenv("VIDSCORE_AESTHETIC_WEIGHTS", str(settings.home / "missing.pth"))
        with (
            dg.partition_loading_context(dynamic_partitions_store=instance),
            dg.build_sensor_context(instance=instance, resources=resources, definitions=defs) as context,
        ):
            request = batches_sensor.evaluate_tick(context).run_requests[0]
            assert dg.AssetKey("aesthetic_scores") not in request.asset_selection
            assert dg.AssetKey("matching_scores") in request.asset_selection
            assert request.tags["vidscore/waiting_for_weights"] == "aesthetic_scores"
        # A meta file ingested by `vidscore ingest --materialize` is scored by that command: no runs here.
        ingest_meta_file(instance, corpus, 5, scored_by_caller=True)
        with (
            dg.partition_loading_context(dynamic_partitions_store=instance),
            dg.build_sensor_context(instance=instance, resources=resources, definitions=defs,
                                    cursor=None) as later,  # fmt: skip
        ):
            assert not batches_sensor.evaluate_tick(later).run_requests



def test_the_same_content_is_ingested_once_even_under_another_name(home, corpus):
    settings, _ = home
    instance = dg.DagsterInstance.ephemeral()
    meta = pd.read_csv(corpus).assign(path=lambda f: [str(corpus.parent / p) for p in f["path"]])
    content = meta.to_csv(index=False)
    drop(settings.inbox_dir, "a.csv", content)
    first = tick(settings, instance)
    assert len(first.run_requests) == 1
    second_path = drop(settings.inbox_dir, "b.csv", content)
    os.utime(second_path, (OLD, OLD))
    second = tick(settings, instance, first.cursor)
    # The same run key: Dagster launches nothing new for it.
    assert [r.run_key for r in second.run_requests] == [r.run_key for r in first.run_requests]
    assert not second_path.exists()


def test_bad_files_are_rejected_or_fail_their_run_with_a_reason(home, corpus):
    settings, _ = home
    inbox = settings.inbox_dir
    drop(inbox, "1_no_path_column.csv", "file,caption\na.mp4,hello\n", mtime=OLD)
    drop(inbox, "2_not_parquet.parquet", b"PAR1 this is not parquet", mtime=OLD + 1)
    drop(inbox, "3_notes.txt", "remember the milk", mtime=OLD + 2)
    good = pd.read_csv(corpus).assign(path=lambda f: [str(corpus.parent / p) for p in f["path"]])
    drop(inbox, "4_good.csv", good.to_csv(index=False), mtime=OLD + 3)

    with dg.instance_for_test() as instance:
        result = tick(settings, instance)
        # A name that is no meta file's is rejected at once, with a reason next to it.
        assert sorted(p.name for p in (inbox / "rejected").iterdir()) == ["3_notes.txt", "3_notes.txt.reason.txt"]
        assert "not a meta file" in (inbox / "rejected" / "3_notes.txt.reason.txt").read_text()
        # The others get a run each; a file that cannot be read fails its run and says why.
        runs = {r.tags["vidscore/meta_file"]: run_ingest(instance, r) for r in result.run_requests}
        assert set(runs) == {"1_no_path_column.csv", "2_not_parquet.parquet", "4_good.csv"}
        assert "no 'path' column" in failure_reason(runs["1_no_path_column.csv"])
        assert "Parquet" in failure_reason(runs["2_not_parquet.parquet"])
        assert runs["4_good.csv"].success
    assert not any(p.is_file() for p in inbox.iterdir())


def test_unsettled_files_wait_and_the_cursor_never_passes_them(home, corpus, monkeypatch):
    settings, _ = home
    monkeypatch.setenv("VIDSCORE_INBOX_SETTLE_S", "30")
    instance = dg.DagsterInstance.ephemeral()
    good = pd.read_csv(corpus).assign(path=lambda f: [str(corpus.parent / p) for p in f["path"]])
    writing = drop(settings.inbox_dir, "being_written.csv", good.to_csv(index=False), mtime=None)
    result = tick(settings, instance)
    assert not result.run_requests and "being_written.csv" in str(result.skip_reason)
    assert writing.exists()

    # A file moved in later with an old mtime (`mv` keeps it) is still seen: arrival uses ctime too.
    elsewhere = settings.home / "older.csv"
    elsewhere.write_text(good.iloc[:2].to_csv(index=False))
    os.utime(elsewhere, (OLD, OLD))
    os.replace(elsewhere, settings.inbox_dir / "older.csv")
    os.utime(writing, (OLD, OLD))  # the writer finished long ago
    result = tick(settings, instance, result.cursor)
    assert {r.tags["vidscore/meta_file"] for r in result.run_requests} == {"being_written.csv", "older.csv"}
    assert InboxCursor.parse(result.cursor).after[1] in ("older.csv", "being_written.csv")


# -- backfill schedule ------------------------------------------------------------------------------

DIS = {"flow": {"backend": "dis"}}  # the weight-free flow backend


def _rows(table: str, batch: str, ids: list[str], exp: Expected, **extra) -> pd.DataFrame:
    frame = pd.DataFrame({"video_id": ids, "batch": batch})
    frame["code_version"] = exp.code_version
    frame["weights_sha256"] = exp.weights_sha256
    frame["run_id"] = "r1"
    frame["scored_at"] = pd.Timestamp(lineage.utc_now())
    for option, value in exp.recorded.items():  # the options a table records (flow: backend)
        frame[option] = value
    for key, value in extra.items():
        frame[key] = value
    return frame


def _put(store: TableStore, settings, table: str, batch: str, frame: pd.DataFrame) -> None:
    store.publish(frame, table, batch)


def _seed(store: TableStore, settings, expected: dict[str, Expected], batch: str, ids: list[str]) -> None:
    """A batch whose tables are complete and current."""
    _put(store, settings, "videos", batch, pd.DataFrame({"video_id": ids}))
    for table in ("clip_embeddings", *(score.table for score in SCORES)):
        _put(store, settings, table, batch, _rows(table, batch, ids, expected[table]))


def test_the_backfill_plan_finds_missing_retryable_and_stale_rows(home, monkeypatch):
    settings, store = home
    expected, notes = current_lineage(settings, DIS)
    assert not notes
    shas = {"clip": lineage.file_sha256(weights.get("clip").path(settings)),
            "aesthetic": lineage.file_sha256(weights.get("aesthetic").path(settings))}  # fmt: skip
    assert expected["aesthetic_scores"].weights_sha256 == options.combined_sha(shas)
    ids = ["v1", "v2", "v3"]
    for batch in ("complete", "missing", "timeout", "stale_code", "stale_weights", "other_backend"):
        _seed(store, settings, expected, batch, ids)
    store.delete("flow_scores", "missing")
    exp = expected["clip_embeddings"]
    frame = _rows("clip_embeddings", "timeout", ids, exp, error=["decoder timed out after 60 s", None, None])
    _put(store, settings, "clip_embeddings", "timeout", frame)
    frame = _rows(
        "matching_scores", "stale_code", ids, expected["matching_scores"], code_version="0.0.1+deadbeef"
    )
    _put(store, settings, "matching_scores", "stale_code", frame)
    frame = _rows(
        "aesthetic_scores", "stale_weights", ids, expected["aesthetic_scores"], weights_sha256="0" * 64
    )
    _put(store, settings, "aesthetic_scores", "stale_weights", frame)
    frame = _rows("flow_scores", "other_backend", ids[:2], Expected("x", recorded={"backend": "unimatch"}))
    _put(store, settings, "flow_scores", "other_backend", frame)
    # A broken file is not retried; a registered batch with a manifest but no videos rows is.
    frame = _rows(
        "flow_scores",
        "complete",
        ids,
        expected["flow_scores"],
        error=["cannot decode: moov atom not found", None, None],
    )
    _put(store, settings, "flow_scores", "complete", frame)
    store.publish(pd.DataFrame({"video_id": ids}), "manifests", "never_probed")

    batches = ["complete", "missing", "timeout", "stale_code", "stale_weights", "other_backend",
               "never_probed", "no_manifest"]  # fmt: skip
    plans = {p.batch: p for p in plan_backfill(store, settings, batches, expected)}

    assert set(plans) == {
        "missing",
        "timeout",
        "stale_code",
        "stale_weights",
        "other_backend",
        "never_probed",
    }
    assert plans["missing"].assets() == ["flow_scores"]
    # A decoder timeout in the embeddings re-runs them and what is derived from them.
    assert plans["timeout"].assets() == ["clip_embeddings", "aesthetic_scores", "matching_scores"]
    assert plans["stale_code"].assets() == ["matching_scores"]
    assert plans["stale_weights"].assets() == ["aesthetic_scores"]
    assert plans["other_backend"].assets() == ["flow_scores"]
    assert "another option value (backend)" in plans["other_backend"].summary()
    assert plans["never_probed"].assets() == list(BATCH_ASSETS)


def test_the_schedule_requests_idempotent_runs_for_what_needs_work(home):
    settings, store = home
    expected, _ = current_lineage(settings, DIS)
    for batch in ("b1", "b2"):
        _seed(store, settings, expected, batch, ["v1", "v2"])
    store.delete("aesthetic_scores", "b2")
    resources = {
        "vidscore": VidscoreSettings(home=str(settings.home), weights={n: str(p) for n, p in settings.weights.items()}),
        "scoring": ScoringOptions(score_options={"flow": {"backend": "dis"}}),
    }  # fmt: skip
    when = datetime(2026, 1, 2, 3, 0, tzinfo=timezone.utc)

    with dg.instance_for_test() as instance:  # a schedule context needs an instance with a ref

        def evaluate(at: datetime):
            # `with`: the context opens its own instance from the ref and must close it.
            with dg.build_schedule_context(
                instance=instance, scheduled_execution_time=at, resources=resources
            ) as context:
                return score_backfill_schedule(context)

        instance.add_dynamic_partitions("batches", ["b1", "b2"])
        first = evaluate(when)
        (request,) = first
        assert request.partition_key == "b2"
        assert [k.to_user_string() for k in request.asset_selection] == ["aesthetic_scores"]
        assert "missing" in request.tags["vidscore/backfill_reason"]
        # The same tick evaluated again asks for the same run (Dagster launches a run key once) ...
        assert [r.run_key for r in evaluate(when)] == [request.run_key]
        # ... the next day's tick asks again if the batch is still incomplete (its run may have failed).
        later = evaluate(datetime(2026, 1, 3, 3, 0, tzinfo=timezone.utc))
        assert [r.run_key for r in later] != [request.run_key]
        # Once complete, nothing is requested.
        _seed(store, settings, expected, "b2", ["v1", "v2"])
        assert isinstance(evaluate(when), dg.SkipReason)


def test_schedule_cron_comes_from_the_environment(monkeypatch):
    import importlib

    from vidscore_dagster.defs.automation import schedules

    assert score_backfill_schedule.cron_schedule == os.environ.get("VIDSCORE_BACKFILL_CRON", "0 3 * * *")
    monkeypatch.setenv("VIDSCORE_BACKFILL_CRON", "*/5 * * * *")
    reloaded = importlib.reload(schedules)
    try:
        assert reloaded.score_backfill_schedule.cron_schedule == "*/5 * * * *"
    finally:
        monkeypatch.delenv("VIDSCORE_BACKFILL_CRON")
        importlib.reload(schedules)


# -- policies on the assets -----------------------------------------------------------------------


def test_the_code_location_carries_the_automation():
    from vidscore_dagster.definitions import defs

    repo = defs.get_repository_def()
    assert {"inbox_sensor", "batches_sensor", "automation_sensor"} <= {s.name for s in repo.sensor_defs}
    assert "score_backfill_schedule" in {s.name for s in repo.schedule_defs}
    assert repo.has_job("score_batch")


def test_score_assets_carry_automation_and_a_grouping_backfill_policy():
    from vidscore_dagster.defs.ingest.assets import videos
    from vidscore_dagster.defs.scores.assets import score_assets

    for asset in score_assets:
        for key in asset.keys:
            assert asset.automation_conditions_by_key[key] is not None, key
        assert asset.backfill_policy == policies.batch_backfill_policy()
    assert videos.backfill_policy.max_partitions_per_run == policies.DEFAULT_PARTITIONS_PER_RUN
    assert score_batch.name == "score_batch"


def test_a_multi_partition_run_publishes_every_partition(home, corpus):
    """What a backfill with BackfillPolicy.multi_run launches: one run over a range of batches."""
    from vidscore_dagster.defs.ingest.assets import videos
    from vidscore_dagster.defs.scores.assets import score_assets

    (per_clip,) = [a for a in score_assets if dg.AssetKey("flow_scores") in a.keys]

    settings, store = home
    instance = dg.DagsterInstance.ephemeral()
    keys, _ = ingest_meta_file(instance, corpus, 3)
    assert len(keys) == 3
    resources = default_resources(score_options={"flow": {"backend": "dis"}})
    result = dg.materialize(
        [videos, per_clip],
        selection=["videos", "flow_scores"],
        instance=instance,
        resources=resources,
        tags={"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[2]},
    )
    assert result.success
    assert store.partition_counts("videos") == {keys[0]: 3, keys[1]: 3, keys[2]: 2}
    assert store.partition_counts("flow_scores") == {keys[0]: 3, keys[1]: 3, keys[2]: 2}
    # One materialization per partition, all from the one run.
    for asset in ("videos", "flow_scores"):
        records = instance.fetch_materializations(dg.AssetKey(asset), limit=10).records
        assert sorted(r.partition_key for r in records) == sorted(keys)
    latest = instance.get_latest_materialization_event(dg.AssetKey("flow_scores")).asset_materialization
    assert json.loads(json.dumps(latest.metadata["rows_by_batch"].value)) == {
        keys[0]: 3,
        keys[1]: 3,
        keys[2]: 2,
    }


def test_scores_follow_a_new_videos_partition_but_never_double_a_running_batch(home, corpus):
    """Declarative automation (default `on_missing`), evaluated as the automation sensor does."""
    from vidscore_dagster.defs.ingest.assets import videos
    from vidscore_dagster.defs.scores.assets import score_assets

    settings, store = home
    defs = dg.Definitions(assets=[videos, *score_assets], resources=default_resources(score_options={"flow": {"backend": "dis"}}))
    scores = [
        dg.AssetKey(k) for k in ("clip_embeddings", "aesthetic_scores", "matching_scores", "flow_scores")
    ]
    def requested(instance: dg.DagsterInstance, cursor):
        result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        return {k.to_user_string(): result.get_requested_partitions(k) for k in scores}, result.cursor

    with dg.instance_for_test() as instance:
        _, cursor = requested(instance, None)
        keys, _ = ingest_meta_file(instance, corpus, 5)
        wanted, cursor = requested(instance, cursor)
        assert not any(wanted.values())  # videos is missing: nothing to score yet

        # A batch probed on its own (CLI `vidscore ingest`, a UI launch): all its scores follow.
        assert dg.materialize(
            [videos], partition_key=keys[0], instance=instance, resources=defs.resources
        ).success
        wanted, cursor = requested(instance, cursor)
        assert wanted == {k.to_user_string(): {keys[0]} for k in scores}

        # A batch whose run covers videos and the scores (the inbox sensor's): nothing more to do.
        job = dg.Definitions(assets=[videos, *score_assets], jobs=[score_batch], resources=defs.resources)
        assert (
            job.resolve_job_def("score_batch")
            .execute_in_process(instance=instance, partition_key=keys[1])
            .success
        )
        wanted, cursor = requested(instance, cursor)
        assert not any(keys[1] in parts for parts in wanted.values())
        assert store.partition_counts("flow_scores")[keys[1]] == 3
