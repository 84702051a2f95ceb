"""The Dagster layer: definitions load, partitions materialize into Parquet tables, checks catch bad data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from vidscore_core.media.synth import make_demo_corpus
from vidscore_core.settings import Settings
from vidscore_dagster.definitions import defs
from vidscore_dagster.defs.partitions import batches
from vidscore_dagster.defs.resources import default_resources
from vidscore_dagster.runner import ingest_meta_file, materialize_batches

SCORE_ASSETS = ["videos", "clip_embeddings", "aesthetic_scores", "matching_scores", "flow_scores"]


@pytest.fixture
def env(vidscore_env):
    return vidscore_env


def _ingest(
    settings: Settings, meta: Path, instance: dg.DagsterInstance, batch_size: int = 5000
) -> list[str]:
    keys, reason = ingest_meta_file(instance, meta, batch_size)
    assert not reason
    return keys


def test_definitions_load_with_contract_names():
    repo = defs.get_repository_def()
    keys = {k.to_user_string() for k in repo.asset_graph.get_all_asset_keys()}
    assert {
        "videos",
        "clip_embeddings",
        "aesthetic_scores",
        "flow_scores",
        "matching_scores",
        "filtered_videos",
    } <= keys
    checks = {c.name for c in repo.asset_graph.asset_check_keys}
    assert {"videos_complete", "videos_unique", "videos_error_ratio", "flow_scores_non_negative"} <= checks
    # Model steps queue on the gpu pool, nothing else is pooled (no writer lock); the per-clip tables
    # are one subsettable step (one decode per clip), every other asset is its own step.
    pools = {a.node_def.name: a.node_def.pool for a in defs.assets if isinstance(a, dg.AssetsDefinition)}
    assert pools["per_clip_scores"] == "gpu" and pools["aesthetic_scores"] == "gpu"
    per_clip = next(a for a in defs.assets if a.node_def.name == "per_clip_scores")
    assert {k.to_user_string() for k in per_clip.keys} == {
        "clip_embeddings", "flow_scores", "camera_motion_scores", "luminance_scores", "blur_scores",
        "ocr_scores", "shot_scores",
    } and per_clip.can_subset  # fmt: skip
    assert pools["videos"] is None and pools["filtered_videos"] is None and pools["meta_files"] is None


def test_definitions_load_without_the_model_stack():
    """Every step process, the webserver and the daemon load the definitions: commits, probes and
    sensors must not pay for importing torch, open_clip and OpenCV (seconds per process)."""
    heavy = ("torch", "open_clip", "cv2", "decord", "matplotlib")
    code = f"import sys, vidscore_dagster.definitions; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_videos_partition_materializes_the_right_rows(env, tmp_path):
    settings, store = env
    meta = make_demo_corpus(tmp_path / "corpus")
    instance = dg.DagsterInstance.ephemeral()
    keys = _ingest(settings, meta, instance, batch_size=5)
    assert len(keys) == 2  # 8 rows in batches of 5
    outcome = materialize_batches(instance, keys, ["videos"], resources=default_resources())
    assert all(outcome.values())
    videos = store.query_df("SELECT * FROM videos ORDER BY batch, meta_row")
    source = pd.read_csv(meta)
    assert len(videos) == len(source)
    assert sorted(videos["path_original"]) == sorted(source["path"])
    assert videos.groupby("batch").size().to_dict() == {keys[0]: 5, keys[1]: 3}
    bad = videos[videos["path_original"].isin(["broken_truncated.mp4", "not_a_video.mp4"])]
    assert bad["error"].notna().all()
    good = videos[videos["media_type"] == "video"].dropna(subset=["num_frames"])
    assert set(good["num_frames"]) <= {48, 20}
    # Re-materializing a partition replaces exactly its rows.
    assert all(materialize_batches(instance, keys[:1], ["videos"], resources=default_resources()).values())
    assert store.partition_counts("videos") == {keys[0]: 5, keys[1]: 3}
    # The materialization carries the metadata users look at.
    event = instance.get_latest_materialization_event(dg.AssetKey("videos"))
    meta_values = event.asset_materialization.metadata
    assert meta_values["dagster/row_count"].value in (5, 3)
    assert "resolution_histogram" in meta_values and "total_duration_s" in meta_values


def _check_results(instance: dg.DagsterInstance, run_result) -> dict[str, bool]:
    return {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
        for e in run_result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


def test_checks_pass_on_good_data_and_fail_on_planted_bad_data(env, tmp_path):
    settings, store = env
    meta = make_demo_corpus(tmp_path / "corpus")
    instance = dg.DagsterInstance.ephemeral()
    (key,) = _ingest(settings, meta, instance)
    checks = [c for c in defs.asset_checks if any(k.asset_key == dg.AssetKey("videos") for k in c.check_keys)]
    videos_asset = next(a for a in defs.assets if dg.AssetKey("videos") in a.keys)
    result = dg.materialize(
        [videos_asset, *checks], partition_key=key, instance=instance, resources=default_resources()
    )
    passed = _check_results(instance, result)
    assert passed["videos_complete"] and passed["videos_unique"]
    assert passed["videos_error_ratio"] is False  # 2 of 8 demo files are deliberately unreadable (> 10 %)

    # Plant a duplicate and drop a row, then run only the checks.
    rows = store.read("videos", [key]).sort_values("video_id")
    # Duplicate the first row, drop the last: two different rows, so the delete cannot undo the copy.
    store.publish(pd.concat([rows.iloc[:-1], rows.iloc[:1]]), "videos", key)
    # Checks run on their own (as from the UI's "Execute checks") for the chosen partition.
    job = dg.define_asset_job(
        "videos_checks_only", selection=dg.AssetSelection.checks_for_assets(videos_asset), partitions_def=batches
    )
    check_defs = dg.Definitions(
        assets=[videos_asset], asset_checks=checks, jobs=[job], resources=default_resources()
    )
    only_checks = check_defs.resolve_job_def("videos_checks_only").execute_in_process(
        instance=instance, raise_on_error=False, tags={"dagster/partition": key}
    )
    passed = _check_results(instance, only_checks)
    assert passed["videos_unique"] is False
    assert passed["videos_complete"] is False


def test_score_assets_match_the_reference(env, fixtures, monkeypatch):
    """All score assets on the parity fixtures, through Dagster: aes and match within tolerance."""
    settings, store = env
    monkeypatch.setenv("VIDSCORE_FLOW_BACKEND", "dis")  # UniMatch parity is tested in test_flow_scoring
    instance = dg.DagsterInstance.ephemeral()
    (key,) = _ingest(settings, fixtures / "media/meta.csv", instance)
    outcome = materialize_batches(instance, [key], SCORE_ASSETS, resources=default_resources())
    assert outcome[key]
    scores = store.query_df(
        'SELECT path_original AS path, aes, "match", flow, aes_error, flow_error, match_error FROM video_scores'
    )
    scores = scores.set_index("path")
    for name, column, tol in (("aes", "aes", 2e-4), ("match", "match", 1e-3)):
        ref = pd.read_csv(fixtures / f"reference/{name}.csv").set_index("path")[name]
        for path, value in ref.items():
            assert abs(scores.loc[path, column] - value) <= tol, (path, column)
    bad = scores.loc["media/bad_truncated.mp4"]
    assert pd.isna(bad["aes"]) and pd.isna(bad["match"]) and pd.isna(bad["flow"])
    assert bad["aes_error"] and bad["match_error"] and bad["flow_error"]
    assert scores.loc["media/image_colorwheel.jpg", "flow_error"].startswith("not a video")
    # Lineage is on every row.
    lineage = store.query_df(
        "SELECT model, weights_sha256, params, run_id, code_version, scored_at FROM aesthetic_scores"
    )
    assert lineage.notna().all().all()
    # One image-tower pass: clip_embeddings has 3 frames per video, 1 for the image, 1 error row.
    per_clip = store.query_df("SELECT video_id, count(*) AS n FROM clip_embeddings GROUP BY video_id")
    assert sorted(per_clip["n"]) == [1, 1, 3, 3, 3]
