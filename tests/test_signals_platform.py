"""Camera motion, luminance and blur on the platform: one Dagster step with flow's part, their checks,
`video_scores`, `filtered_videos`; and object motion read from the flow fields, never a second flow."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from vidscore_core.models.flow import UniMatchFlow
from vidscore_core.scoring import flow_frames
from vidscore_core.scoring.options import JobOptions
from vidscore_core.scoring.per_clip import score_videos
from vidscore_dagster.definitions import defs
from vidscore_dagster.defs.resources import default_resources
from vidscore_dagster.runner import ingest_meta_file, materialize_batches

SIGNALS = ["camera_motion_scores", "luminance_scores", "blur_scores"]


def _check_results(result) -> dict[str, bool]:
    return {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
            for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}  # fmt: skip


def test_signals_through_dagster_views_and_filtered_videos(vidscore_env, fixtures, monkeypatch):
    settings, store = vidscore_env
    monkeypatch.setenv("VIDSCORE_FLOW_BACKEND", "dis")
    instance = dg.DagsterInstance.ephemeral()
    keys, _ = ingest_meta_file(instance, fixtures / "media/meta.csv", 5000)
    assert all(materialize_batches(instance, keys, ["videos", *SIGNALS], resources=default_resources()).values())
    # Camera motion ran the flow part for its object motion, but only the selected tables are published.
    assert not store.partitions("flow_scores") and all(store.partitions(t) == set(keys) for t in SIGNALS)
    rows = store.query_df(
        "SELECT path_original AS path, cmotion, object_motion, lum, blur, cmotion_error, lum_error "
        "FROM video_scores ORDER BY path"
    ).set_index("path")
    assert rows.loc["media/pan_hubble_right_5px.mp4", "cmotion"] in ("pan right", "pan left", "dynamic", "pan/tilt")
    assert rows.loc["media/image_colorwheel.jpg", "cmotion_error"].startswith("not a video")
    assert rows.loc["media/image_colorwheel.jpg", "lum"] > 0  # an image has a brightness
    assert rows.loc["media/bad_truncated.mp4", "lum_error"]
    lineage = store.query_df("SELECT backend, model, params, code_version FROM camera_motion_scores")
    assert set(lineage["backend"]) == {"dis"} and lineage.notna().all().all()

    # The registered checks ran with the step and pass (label vocabulary, ranges, completeness).
    job = dg.define_asset_job("signal_checks", selection=dg.AssetSelection.checks_for_assets(*SIGNALS))
    check_defs = dg.Definitions(assets=[a for a in defs.assets if isinstance(a, dg.AssetsDefinition)],
                                asset_checks=defs.asset_checks, jobs=[job], resources=default_resources())  # fmt: skip
    result = check_defs.resolve_job_def("signal_checks").execute_in_process(
        instance=instance, raise_on_error=False, tags={"dagster/partition": keys[0]}
    )
    passed = _check_results(result)
    for name in ("camera_motion_scores_known_label", "camera_motion_scores_complete", "luminance_scores_in_range",
                 "blur_scores_non_negative", "camera_motion_scores_object_motion_non_negative"):  # fmt: skip
        assert passed[name], name

    # filtered_videos: the new bounds in its config, re-checked in SQL, exported with the new columns.
    lummin = float(rows["lum"].median())
    asset = next(a for a in defs.assets if dg.AssetKey("filtered_videos") in a.keys)
    checks = [c for c in defs.asset_checks if any(k.asset_key == asset.key for k in c.check_keys)]
    filtered = dg.materialize([asset, *checks], instance=instance, resources=default_resources(),
                              run_config={"ops": {"filtered_videos": {"config": {
                                  "preset": "bright", "lummin": lummin, "objmotionmin": 0.0, "blurmin": 1.0}}}})  # fmt: skip
    assert _check_results(filtered)["filtered_videos_meet_thresholds"]
    kept = store.query_df("SELECT path, lum, cmotion, object_motion FROM filtered_videos ORDER BY path")
    expected = rows[(rows["lum"] >= lummin) & (rows["object_motion"] >= 0)].index.tolist()
    assert sorted(kept["path"].str.removeprefix(str(fixtures) + "/")) == sorted(expected) and len(kept) >= 1
    export = pd.read_csv(settings.exports_dir / "filtered_bright.csv")
    assert {"cmotion", "object_motion", "lum", "blur"} <= set(export.columns)


def test_object_motion_reuses_the_flow_fields(vidscore_env, fixtures, monkeypatch):
    """With UniMatch, flow and camera motion together run the flow network once per clip (one forward
    of its three pairs), flow keeps the reference's value, and object motion comes from those fields;
    a pass without camera motion fits no camera motion and gives flow the same bits."""
    settings, _ = vidscore_env
    calls, fits = [], []
    forward, fit = UniMatchFlow.batch_pair_flows, flow_frames.object_motion_batch
    monkeypatch.setattr(UniMatchFlow, "batch_pair_flows", lambda self, a, b: calls.append(len(a)) or forward(self, a, b))
    monkeypatch.setattr(flow_frames, "object_motion_batch", lambda flows: fits.append(flows.shape[:2]) or fit(flows))
    path = "media/pan_ihc_diag_25frames.mkv"
    videos = pd.DataFrame({"video_id": ["a"], "path": [str(fixtures / path)], "error": [None]})
    options = JobOptions(device="cpu", batch_size=2, num_workers=1)
    alone, _ = score_videos(["flow_scores"], videos, "b0", settings, options)
    assert calls == [3] and fits == []  # flow alone: no homography fits
    both, _ = score_videos(["flow_scores", "camera_motion_scores"], videos, "b0", settings, options)
    assert calls == [3, 3] and fits == [(1, 3)]  # one clip, three pairs, one forward, fitted once
    for column in ("flow", "flow_pairs", "frame_indices"):
        assert both["flow_scores"][column].tolist() == alone["flow_scores"][column].tolist()
    reference = pd.read_csv(fixtures / "reference/flow.csv").set_index("path")["flow"][path]
    assert both["flow_scores"]["flow"].iloc[0] == pytest.approx(reference, rel=1e-3)
    motion = both["camera_motion_scores"].iloc[0]
    assert motion["error"] is None and motion["object_motion"] >= 0 and len(motion["object_motion_pairs"]) == 3
    assert motion["object_motion"] == pytest.approx(sum(motion["object_motion_pairs"]) / 3)
    assert motion["backend"] == "unimatch" and motion["weights_sha256"]

