"""A clip listed with several captions: every meta row is kept and matched, on the platform and in CSV.

`videos` holds one row per distinct path; `matching_scores` one row per meta row (`meta_row`, `text`);
`video_scores` and `filtered_videos` one row per (clip, caption). `vidscore ingest` says what it found.
"""

from __future__ import annotations

import json
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
from fixture_env import fixture_model_env
from test_cli_scoring_commands import run

from vidscore_dagster.definitions import defs
from vidscore_dagster.defs.resources import default_resources

HUBBLE = "media/pan_hubble_right_5px.mp4"
CAPTIONS = [  # (clip, caption): the hubble clip three times, once without a caption
    (HUBBLE, "a pan to the right across a star field"),
    ("media/image_colorwheel.jpg", "a colour wheel"),
    (HUBBLE, "a bowl of soup on a kitchen table"),
    (HUBBLE, ""),
    ("media/pan_ihc_diag_25frames.mkv", "cells under a microscope"),
]
CLIP_ASSETS = "videos,clip_embeddings,aesthetic_scores,matching_scores"


@pytest.fixture
def meta(tmp_path: Path, fixtures: Path) -> Path:
    path = tmp_path / "captions.csv"
    rows = [{"path": str(fixtures / clip), "text": text, "k": i} for i, (clip, text) in enumerate(CAPTIONS)]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def sql(tmp_path: Path, env: dict[str, str], query: str) -> dict[str, list]:
    """`vidscore sql --format json`, column by column (NULL as None)."""
    proc = run(["sql", query, "--format", "json"], tmp_path, **env)
    assert proc.returncode == 0, proc.stderr
    records = json.loads(proc.stdout)
    return {name: [r[name] for r in records] for name in (records[0] if records else {})}


def test_every_caption_of_a_clip_is_matched_on_the_platform(meta: Path, tmp_path: Path, fixtures: Path,
                                                             monkeypatch) -> None:  # fmt: skip
    env = fixture_model_env(fixtures)
    # Batches of 2 clips: the hubble clip's later captions follow it into its batch.
    proc = run(["ingest", str(meta), "--batch-size", "2", "--materialize", "--assets", CLIP_ASSETS], tmp_path, **env)
    assert proc.returncode == 0, proc.stderr
    assert "1 path(s) listed in more than one row (2 extra row(s))" in proc.stdout  # nothing dropped silently
    assert "1 row(s) without a caption" in proc.stdout

    videos = sql(tmp_path, env, "SELECT path, text FROM videos ORDER BY meta_row")
    assert len(videos["path"]) == 3 and videos["text"][0] == CAPTIONS[0][1]  # one row per clip
    matching = sql(tmp_path, env, 'SELECT meta_row, text, "match", error FROM matching_scores ORDER BY meta_row')
    assert matching["meta_row"] == [0, 1, 2, 3, 4]
    assert matching["text"] == [text or None for _, text in CAPTIONS]
    assert matching["error"] == [None, None, None, "no caption", None]
    first, other = matching["match"][0], matching["match"][2]
    assert first is not None and other is not None and first != other  # each caption its own score

    # video_scores: one row per (clip, caption); the clip's other scores repeat on each.
    joined = sql(tmp_path, env, 'SELECT meta_row, text, aes, "match" FROM video_scores ORDER BY meta_row')
    assert joined["meta_row"] == [0, 1, 2, 3, 4] and joined["text"] == matching["text"]
    assert joined["match"] == matching["match"]
    assert joined["aes"][0] == joined["aes"][2] == joined["aes"][3]

    # The CSV command scores the same captions to the same numbers.
    proc = run(["score", "matching", str(meta), "--device", "cpu", "--num-workers", "0"], tmp_path, **env)
    assert proc.returncode == 0, proc.stderr
    csv = pd.read_csv(tmp_path / "captions_match.csv")
    assert csv["k"].tolist() == [0, 1, 2, 3, 4] and csv["match_error"].tolist()[3] == "no caption"
    for row in (0, 1, 2, 4):
        assert abs(csv["match"].iloc[row] - matching["match"][row]) <= 1e-4, row

    # filtered_videos keeps or drops each caption by its own match.
    for name, value in {**env, "VIDSCORE_HOME": str(tmp_path / "home")}.items():
        monkeypatch.setenv(name, value)
    matchmin = (first + other) / 2
    asset = next(a for a in defs.assets if dg.AssetKey("filtered_videos") in a.keys)
    dg.materialize([asset], resources=default_resources(),
                   run_config={"ops": {"filtered_videos": {"config": {"preset": "captions", "matchmin": matchmin}}}})  # fmt: skip
    kept = sql(tmp_path, env, 'SELECT path, text, "match" FROM filtered_videos ORDER BY meta_row')
    best, weaker = (CAPTIONS[0], CAPTIONS[2]) if first >= other else (CAPTIONS[2], CAPTIONS[0])
    assert best[1] in kept["text"] and weaker[1] not in kept["text"]
    exported = pd.read_csv(tmp_path / "home/exports/filtered_captions.csv")
    assert exported["text"].tolist() == kept["text"]
