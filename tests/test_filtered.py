"""filtered_videos: thresholds, presets, exports, and agreement with an independent SQL query."""

from __future__ import annotations

import dagster as dg
import duckdb
import pandas as pd
import pytest

from vidscore_dagster.definitions import defs
from vidscore_dagster.defs.resources import default_resources
from vidscore_dagster.runner import ingest_meta_file, materialize_batches

SCORES = ["videos", "clip_embeddings", "aesthetic_scores", "matching_scores", "flow_scores"]


@pytest.fixture
def scored(vidscore_env, fixtures, monkeypatch):
    """The parity fixtures ingested and scored (DIS flow), in a fresh home."""
    settings, store = vidscore_env
    monkeypatch.setenv("VIDSCORE_FLOW_BACKEND", "dis")
    instance = dg.DagsterInstance.ephemeral()
    keys, _ = ingest_meta_file(instance, fixtures / "media/meta.csv", 2)
    assert all(materialize_batches(instance, keys, SCORES, resources=default_resources()).values())
    return settings, store, instance


def _filter(instance, config: dict) -> dg.ExecuteInProcessResult:
    asset = next(a for a in defs.assets if dg.AssetKey("filtered_videos") in a.keys)
    checks = [c for c in defs.asset_checks if any(k.asset_key == asset.key for k in c.check_keys)]
    return dg.materialize([asset, *checks], instance=instance, resources=default_resources(),
                          run_config={"ops": {"filtered_videos": {"config": config}}})  # fmt: skip


def test_filter_agrees_with_independent_sql_and_presets_coexist(scored):
    settings, store, instance = scored
    scores = store.query_df('SELECT aes, flow, "match" FROM video_scores WHERE video_error IS NULL')
    aesmin = float(scores["aes"].median())  # a threshold that splits the fixture clips
    result = _filter(instance, {"preset": "strict", "aesmin": aesmin, "flowmin": 1.0, "matchmin": 0.0})
    checks = {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
              for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}  # fmt: skip
    assert checks["filtered_videos_meet_thresholds"] and checks["filtered_videos_subset_of_videos"]

    # Through the user's path: vidscore.duckdb's views (the meta_files run created them).
    with duckdb.connect(str(settings.db_path), read_only=True) as con:
        independent = con.execute(
            "SELECT v.path FROM videos v JOIN aesthetic_scores a ON a.video_id = v.video_id "
            "JOIN flow_scores f ON f.video_id = v.video_id JOIN matching_scores m ON m.video_id = v.video_id "
            "WHERE a.aes >= ? AND f.flow >= 1.0 AND m.match >= 0.0 ORDER BY v.path",
            [aesmin],
        ).df()
    kept = store.query_df("SELECT path FROM filtered_videos WHERE preset = 'strict' ORDER BY path")
    assert 0 < len(kept) < 4
    assert list(kept["path"]) == list(independent["path"])

    # A second preset coexists; re-running one replaces only its own rows.
    _filter(instance, {"preset": "everything", "keep_unscored": True})
    _filter(instance, {"preset": "strict", "aesmin": aesmin, "flowmin": 1.0, "matchmin": 0.0})
    counts = store.partition_counts("filtered_videos")
    assert counts["strict"] == len(kept) and counts["everything"] == 4  # every readable clip, image included

    # Exports in Open-Sora's meta format, with the input's other columns.
    export = pd.read_csv(settings.exports_dir / "filtered_strict.csv")
    assert list(export.columns[:5]) == ["path", "text", "aes", "match", "flow"]
    assert {"kind", "gt_flow"} <= set(export.columns)
    assert sorted(export["path"]) == sorted(kept["path"])
    assert len(pd.read_parquet(settings.exports_dir / "filtered_strict.parquet")) == len(kept)
    event = instance.get_latest_materialization_event(dg.AssetKey("filtered_videos"))
    metadata = event.asset_materialization.metadata
    assert metadata["filter_spec"].value["aesmin"] == aesmin and metadata["kept"].value == len(kept)


def test_nothing_kept_is_a_warning_not_a_failure(scored):
    _, store, instance = scored
    result = _filter(instance, {"preset": "impossible", "aesmin": 9.9})
    assert result.success
    checks = {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
              for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}  # fmt: skip
    assert checks["filtered_videos_not_empty"] is False and checks["filtered_videos_meet_thresholds"]


def test_readme_near_duplicate_query_runs(scored):
    settings, store, _ = scored
    sql = (
        "WITH mid AS (SELECT video_id, embedding::FLOAT[768] AS e FROM clip_embeddings WHERE frame_point = 0.5) "
        "SELECT a.video_id, b.video_id, array_cosine_similarity(a.e, b.e) AS sim "
        "FROM mid a JOIN mid b ON a.video_id < b.video_id ORDER BY sim DESC"
    )
    pairs = store.query_df(sql)
    assert len(pairs) == 6  # 4 readable clips at the 50 % frame (the image's only frame counts): 4 choose 2
    assert pairs["sim"].between(-1.0001, 1.0001).all()


def test_every_readme_sql_example_runs_on_the_views(scored):
    """The README's SQL block, statement by statement, through vidscore.duckdb's views (the user's path)."""
    import re
    from pathlib import Path

    from vidscore_core.tables.views import connect_read_only

    settings, store, _ = scored
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```sql\n(.*?)```", readme, flags=re.S)
    statements = [s.strip() for block in blocks for s in block.split(";") if s.strip()]
    statements = [s for s in statements if any(not line.startswith("--") for line in s.splitlines())]
    assert len(statements) >= 5
    con = connect_read_only(settings.db_path, store)
    try:
        for statement in statements:
            con.execute(statement).fetchall()
    finally:
        con.close()
