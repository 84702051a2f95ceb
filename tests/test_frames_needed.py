"""What a file holds decides how every score reads it, whatever its name; flow needs two distinct frames.

A still image (also one renamed .mp4) is one frame: aesthetic and matching score it, flow refuses it
("not a video"). A one-frame video gets "one frame" from flow, never 0. Animated GIF, WebP and APNG are
videos of their frames (PIL composes them), for every score, under any name.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from fixture_env import fixture_model_env
from PIL import Image
from test_cli_scoring_commands import run

from vidscore_core.media.synth import pan_frames, texture_image, write_clip
from vidscore_dagster.defs.resources import default_resources
from vidscore_dagster.runner import ingest_meta_file, materialize_batches

FRAMES = 16


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """Stills, a one-frame video and animations of a textured pan (3 px per frame: real motion)."""
    folder = tmp_path_factory.mktemp("media")
    frames = pan_frames(texture_image(96, 160 + 3 * FRAMES, seed=3), 160, 96, FRAMES, dx=3, dy=0)
    pictures = [Image.fromarray(f) for f in frames]
    files = {name: folder / name for name in (
        "still.png", "png_named.mp4", "still.gif", "one_frame.mp4", "two_frames.mp4",
        "anim.gif", "anim.webp", "anim.png", "gif_named.mp4",
    )}  # fmt: skip
    pictures[0].save(files["still.png"])
    shutil.copy(files["still.png"], files["png_named.mp4"])
    pictures[0].save(files["still.gif"])
    write_clip(files["one_frame.mp4"], frames[:1])
    write_clip(files["two_frames.mp4"], frames[:2])
    for name in ("anim.gif", "anim.webp", "anim.png"):
        pictures[0].save(files[name], save_all=True, append_images=pictures[1:], duration=100, loop=0, lossless=True)
    shutil.copy(files["anim.gif"], files["gif_named.mp4"])
    return files


def _meta(media: dict[str, Path], folder: Path) -> Path:
    meta = folder / "media.csv"
    pd.DataFrame({"path": [str(p) for p in media.values()], "text": ["a textured pan"] * len(media)}).to_csv(
        meta, index=False
    )
    return meta


def test_every_score_reads_a_file_by_what_it_holds(media, tmp_path: Path, fixtures: Path) -> None:
    meta = _meta(media, tmp_path)
    proc = run(["score", "all", str(meta), "--backend", "dis", "--device", "cpu", "--num-workers", "0"],
               tmp_path, **fixture_model_env(fixtures))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    scored = pd.read_csv(tmp_path / "media_scores.csv").assign(name=list(media)).set_index("name")

    for still in ("still.png", "png_named.mp4", "still.gif"):
        assert pd.isna(scored.loc[still, "flow"]), still
        assert scored.loc[still, "flow_error"].startswith("not a video"), still
    assert pd.isna(scored.loc["one_frame.mp4", "flow"])
    assert scored.loc["one_frame.mp4", "flow_error"].startswith("one frame")
    for moving in ("two_frames.mp4", "anim.gif", "anim.webp", "anim.png", "gif_named.mp4"):
        assert scored.loc[moving, "flow"] > 0.5 and pd.isna(scored.loc[moving, "flow_error"]), moving
    # Every file gets the CLIP scores, and a file scores the same under a video name as under its own
    # (the same pixels; only the batch it was embedded in differs).
    assert scored[["aes", "match"]].notna().all().all() and scored[["aes_error", "match_error"]].isna().all().all()
    for own, renamed in (("still.png", "png_named.mp4"), ("anim.gif", "gif_named.mp4")):
        for column in ("aes", "match"):
            assert scored.loc[own, column] == pytest.approx(scored.loc[renamed, column], abs=1e-5), (own, column)
    assert scored.loc["anim.gif", "flow"] == scored.loc["gif_named.mp4", "flow"]
    # An animation is scored on its frames at 10/50/90 %, not on its first frame as a still.
    assert scored.loc["anim.png", "aes"] != scored.loc["still.png", "aes"]
    # Shots: a still has none to count; an animation of one smooth pan is one shot, as a video would be.
    for still in ("still.png", "png_named.mp4", "still.gif"):
        assert pd.isna(scored.loc[still, "shots"]) and scored.loc[still, "shots_error"].startswith("not a video"), still
    for moving in ("two_frames.mp4", "anim.gif", "anim.webp", "anim.png", "gif_named.mp4"):
        assert scored.loc[moving, "shots"] == 1 and pd.isna(scored.loc[moving, "shots_error"]), moving

    # UniMatch refuses the same inputs with the same reasons, before any model time.
    refused = {k: media[k] for k in ("png_named.mp4", "one_frame.mp4", "still.gif")}
    meta = _meta(refused, tmp_path)
    proc = run(["score", "flow", str(meta), "--device", "cpu", "--num-workers", "0"], tmp_path,
               **fixture_model_env(fixtures))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    flow = pd.read_csv(tmp_path / "media_flow.csv")
    assert flow["flow"].isna().all()
    assert [e.split(":")[0] for e in flow["flow_error"]] == ["not a video", "one frame", "not a video"]


def test_the_platform_probes_and_scores_them_alike(media, vidscore_env, tmp_path: Path, monkeypatch) -> None:
    settings, store = vidscore_env
    monkeypatch.setenv("VIDSCORE_FLOW_BACKEND", "dis")
    instance = dg.DagsterInstance.ephemeral()
    keys, reason = ingest_meta_file(instance, _meta(media, tmp_path), 100)
    assert not reason
    assert all(materialize_batches(instance, keys, ["videos", "flow_scores"], resources=default_resources()).values())
    rows = store.query_df("SELECT path, media_type, num_frames, fps, flow, flow_error FROM video_scores")
    rows = rows.assign(name=[Path(p).name for p in rows["path"]]).set_index("name")
    assert rows.loc[["still.png", "png_named.mp4", "still.gif"], "media_type"].tolist() == ["image"] * 3
    for animated in ("anim.gif", "anim.webp", "anim.png", "gif_named.mp4"):
        assert rows.loc[animated, "media_type"] == "video" and rows.loc[animated, "num_frames"] == FRAMES
        assert rows.loc[animated, "fps"] == pytest.approx(10.0) and rows.loc[animated, "flow"] > 0.5
    assert rows.loc["one_frame.mp4", "flow_error"].startswith("one frame")
    assert rows.loc["png_named.mp4", "flow_error"].startswith("not a video")
    assert np.isnan(rows.loc["one_frame.mp4", "flow"])
