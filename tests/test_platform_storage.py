"""Orchestration on the Parquet tables, as users meet it: backfill ranges, held sessions, overrides, orphans."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from vidscore_core.media.synth import make_demo_corpus
from vidscore_core.tables.views import write_views
from vidscore_dagster.definitions import defs
from vidscore_dagster.defs.partitions import batches
from vidscore_dagster.runner import ingest_meta_file, materialize_batches

REPO = Path(__file__).resolve().parents[1]
HOLD_SESSION = """
import sys, duckdb
con = duckdb.connect(sys.argv[1])  # DuckDB's default: a read-write connection, as notebooks open it
print("open", flush=True)
for line in sys.stdin:
    print(con.execute(line).fetchall(), flush=True)
"""


def _checks(result) -> dict[str, tuple[bool, dict]]:
    """check name -> (passed, metadata values), over the check evaluations of a run."""
    out = {}
    for event in result.all_events:
        if event.event_type_value == "ASSET_CHECK_EVALUATION":
            data = event.asset_check_evaluation_data
            out[data.check_name] = (data.passed, {k: v.value for k, v in data.metadata.items()})
    return out


def _job(name: str, assets: list[str], checks_only: bool = False) -> dg.JobDefinition:
    keys = [dg.AssetKey(a) for a in assets]
    selection = dg.AssetSelection.checks_for_assets(*keys) if checks_only else dg.AssetSelection.assets(*keys)
    job = dg.define_asset_job(name, selection=selection, partitions_def=batches)
    return dg.Definitions(
        assets=defs.assets, asset_checks=defs.asset_checks, jobs=[job], resources=defs.resources
    ).resolve_job_def(name)


@pytest.fixture
def four_batches(vidscore_env, tmp_path, monkeypatch):
    monkeypatch.setenv("VIDSCORE_FLOW_BACKEND", "dis")
    settings, store = vidscore_env
    meta = make_demo_corpus(tmp_path / "corpus")
    instance = dg.DagsterInstance.ephemeral()
    keys, reason = ingest_meta_file(instance, meta, 2)  # 8 clips in 4 batches
    assert not reason and len(keys) == 4
    assert all(materialize_batches(instance, keys, ["videos"]).values())
    return settings, store, instance, keys, meta


def test_a_backfill_range_passes_its_checks_while_a_user_holds_the_database(four_batches):
    """Range run of 2 of 4 batches (what BackfillPolicy.multi_run launches), while a user session
    holds vidscore.duckdb open read-write: both batches are filled, their checks pass, the others
    are untouched, and the held session sees the new rows as soon as the run ends."""
    settings, store, instance, keys, _ = four_batches
    write_views(settings)
    session = subprocess.Popen([sys.executable, "-c", HOLD_SESSION, str(settings.db_path)], cwd=REPO,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert session.stdout.readline().strip() == "open"
        result = _job("range", ["clip_embeddings", "aesthetic_scores"]).execute_in_process(
            instance=instance,
            tags={"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[1]},
            raise_on_error=False,
        )
        assert result.success
        checks = _checks(result)
        for check in ("clip_embeddings_complete", "aesthetic_scores_complete", "aesthetic_scores_unique"):
            assert checks[check][0] is True, check
        # They checked exactly the run's two batches (4 clips), not the whole table (8).
        assert checks["aesthetic_scores_complete"][1]["batches"] == 2
        assert checks["aesthetic_scores_complete"][1]["expected"] == 4
        assert store.partitions("aesthetic_scores") == set(keys[:2])
        session.stdin.write("SELECT batch, count(*) FROM aesthetic_scores GROUP BY batch ORDER BY batch\n")
        session.stdin.flush()
        assert session.stdout.readline().strip() == str([(keys[0], 2), (keys[1], 2)])
    finally:
        session.stdin.close()
        session.wait(timeout=60)


def test_a_one_field_override_keeps_every_other_setting(four_batches, tmp_path, monkeypatch):
    """The launchpad's per-run config of one resource field leaves the others as deployed."""
    settings, store, instance, keys, _ = four_batches
    monkeypatch.chdir(tmp_path)  # a fallback to the default ./.vidscore would land here
    result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        instance=instance,
        partition_key=keys[0],
        asset_selection=[dg.AssetKey("flow_scores")],
        run_config={
            "resources": {
                "scoring": {"config": {"batch_size": 1}},
                "vidscore": {"config": {"models_dir": str(tmp_path / "elsewhere")}},
            }
        },
    )
    assert result.success
    rows = store.read("flow_scores", [keys[0]])
    # Still the deployment's tables (VIDSCORE_HOME) and flow backend (VIDSCORE_FLOW_BACKEND=dis).
    assert len(rows) == 2 and set(rows["backend"]) == {"dis"}
    assert not (tmp_path / ".vidscore").exists()
    event = instance.get_latest_materialization_event(dg.AssetKey("flow_scores"))
    assert event.asset_materialization.metadata["dagster/uri"].value == store.table_dir("flow_scores")


def test_orphan_rows_fail_the_check_and_a_rerun_removes_them(four_batches):
    """The meta file shrinks and `videos` is re-materialized: the score rows of clips no longer in the
    batch fail its completeness check; re-materializing the score removes them."""
    settings, store, instance, keys, meta = four_batches
    assert all(materialize_batches(instance, keys, ["flow_scores"]).values())
    source = pd.read_csv(meta)
    source.drop(index=[1]).to_csv(meta, index=False)  # one clip of the first batch goes
    new_keys, reason = ingest_meta_file(instance, meta, 2)
    assert not reason and len(new_keys) == 4
    # The first batch now holds clips 0 and 2; clip 1 left it.
    assert all(materialize_batches(instance, new_keys[:1], ["videos"]).values())
    check_job = _job("flow_checks", ["flow_scores"], checks_only=True)
    before = _checks(check_job.execute_in_process(instance=instance, tags={"dagster/partition": keys[0]},
                                                  raise_on_error=False))  # fmt: skip
    assert before["flow_scores_complete"][0] is False and before["flow_scores_complete"][1]["orphans"] == 1
    assert all(materialize_batches(instance, new_keys[:1], ["flow_scores"]).values())
    after = _checks(check_job.execute_in_process(instance=instance, tags={"dagster/partition": keys[0]}))
    assert after["flow_scores_complete"][0] is True
    videos = set(store.read("videos", [keys[0]])["video_id"])
    assert set(store.read("flow_scores", [keys[0]])["video_id"]) == videos


def test_a_meta_file_that_lost_a_batch_drops_its_partitions(four_batches):
    settings, store, instance, keys, meta = four_batches
    pd.read_csv(meta).iloc[:5].to_csv(meta, index=False)  # 8 -> 5 clips: 3 batches of 2
    new_keys, reason = ingest_meta_file(instance, meta, 2)
    assert not reason and new_keys == keys[:3]
    assert store.partitions("manifests") == set(keys[:3])
    assert keys[3] not in store.partitions("videos")
    assert keys[3] not in instance.get_dynamic_partitions("batches")


def test_every_meta_column_reaches_extra_whatever_its_name(vidscore_env, tmp_path):
    """A user's own `video_id`, `meta_row` or `path_original` column survives into `videos.extra`."""
    import json

    settings, store = vidscore_env
    clip = tmp_path / "a.mp4"
    clip.write_bytes(b"not a video")
    meta = tmp_path / "meta.csv"
    pd.DataFrame({"path": [str(clip)], "video_id": ["mine-1"], "meta_row": [7], "path_original": ["orig"],
                  "note": ["x"]}).to_csv(meta, index=False)  # fmt: skip
    instance = dg.DagsterInstance.ephemeral()
    (key,), reason = ingest_meta_file(instance, meta, 10)
    assert not reason
    extra = json.loads(store.read("manifests", [key])["extra"][0])
    assert extra == {"video_id": "mine-1", "meta_row": 7, "path_original": "orig", "note": "x"}
