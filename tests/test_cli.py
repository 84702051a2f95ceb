"""The `vidscore` command line, as users run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from vidscore_dagster.cli import main

TOLERANCE = {"aes": 2e-4, "match": 1e-3}


@pytest.fixture
def weights_env(vidscore_env, tmp_path):
    return tmp_path


def _run(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize(
    ("task", "column", "workers"), [("aesthetic", "aes", "2"), ("matching", "match", "0")]
)
def test_score_writes_open_sora_output_with_reference_scores(weights_env, fixtures, task, column, workers):
    out = weights_env / f"meta_{column}.csv"
    _run("score", task, str(fixtures / "media/meta.csv"), "--output", str(out), "--device", "cpu",
         "--num-workers", workers, "--bs", "2")  # fmt: skip
    scored = pd.read_csv(out)
    source = pd.read_csv(fixtures / "media/meta.csv")
    # Every input row and column, unchanged and in order, plus the score and its error.
    assert list(scored.columns) == [*source.columns, column, f"{column}_error"]
    pd.testing.assert_frame_equal(scored[source.columns], source)
    reference = pd.read_csv(fixtures / f"reference/{column}.csv").set_index("path")[column]
    by_path = scored.set_index("path")
    for path, expected in reference.items():
        assert abs(by_path.loc[path, column] - expected) <= TOLERANCE[column], path
        assert pd.isna(by_path.loc[path, f"{column}_error"])
    bad = by_path.loc["media/bad_truncated.mp4"]
    assert pd.isna(bad[column]) and "truncated" in bad[f"{column}_error"]


def test_matching_without_caption_is_an_error_not_a_score(weights_env, fixtures, tmp_path):
    meta = tmp_path / "meta.csv"
    clip = str(fixtures / "media/pan_hubble_right_5px.mp4")
    pd.DataFrame({"path": [clip, clip + "x", str(fixtures / "media/image_colorwheel.jpg")],
                  "text": ["  ", "missing file", 'a "quoted", multi\nline caption 🎨 漢字']}).to_csv(meta, index=False)  # fmt: skip
    _run("score", "matching", str(meta), "--device", "cpu", "--num-workers", "0")
    scored = pd.read_csv(tmp_path / "meta_match.csv")
    assert scored.loc[0, "match_error"] == "no caption" and pd.isna(scored.loc[0, "match"])
    assert "not found" in scored.loc[1, "match_error"]
    assert pd.notna(scored.loc[2, "match"]) and pd.isna(scored.loc[2, "match_error"])


def test_missing_weights_fail_with_the_fix(tmp_path, fixtures, monkeypatch):
    monkeypatch.setenv("VIDSCORE_MODELS_DIR", str(tmp_path / "models"))
    for var in ("VIDSCORE_CLIP_WEIGHTS", "VIDSCORE_AESTHETIC_WEIGHTS", "VIDSCORE_UNIMATCH_WEIGHTS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.cache/clip either
    result = CliRunner().invoke(main, ["score", "aesthetic", str(fixtures / "media/meta.csv"), "--output",
                                       str(tmp_path / "o.csv")])  # fmt: skip
    assert result.exit_code == 1
    assert "vidscore weights download clip" in result.output and str(tmp_path / "models") in result.output
    status = _run("weights", "status")
    assert status.count("MISSING") == 3


def test_filter_names_output_like_open_sora(tmp_path):
    meta = tmp_path / "meta_aes.csv"
    pd.DataFrame({"path": ["a.mp4", "b.mp4", "c.mp4", "d.mp4"], "text": ["x", "y", "z", "w"],
                  "aes": [4.0, 5.5, 6.0, None], "flow": [1.0, 2.0, 50.0, 3.0]}).to_csv(meta, index=False)  # fmt: skip
    _run("filter", str(meta), "--aesmin", "5", "--flowmax", "10")
    out = tmp_path / "meta_aes_aesmin5.0_flowmax10.0.csv"
    kept = pd.read_csv(out)
    assert list(kept["path"]) == ["b.mp4"]
    assert list(kept.columns) == ["path", "text", "aes", "flow"]


def test_ingest_materialize_and_sql(weights_env, fixtures):
    out = _run(
        "ingest", str(fixtures / "media/meta.csv"), "--batch-size", "3", "--materialize", "--assets", "videos"
    )
    assert "2 batch(es)" in out
    assert (weights_env / "home/dagster/dagster.yaml").exists()  # the instance `vidscore ui` opens too
    counted = json.loads(
        _run("sql", "SELECT count(*) AS n, count(error) AS errors FROM videos", "--format", "json")
    )
    assert counted == [{"n": 5, "errors": 1}]
    as_csv = _run("sql", "SELECT path_original FROM videos WHERE media_type = 'image'", "--format", "csv")
    assert as_csv.splitlines() == ["path_original", "media/image_colorwheel.jpg"]
    result = CliRunner().invoke(main, ["sql", "SELECT * FROM no_such_table"])
    assert result.exit_code == 1 and "no_such_table" in result.output


def test_sql_reads_only_the_tables_and_never_creates_a_database(weights_env, fixtures, tmp_path):
    _run("ingest", str(fixtures / "media/meta.csv"))
    for query, code in (
        (f"COPY (SELECT 1) TO '{tmp_path / 'out.csv'}'", 2),  # not a query: refused before it runs
        ("SELECT * FROM read_text('/etc/hostname')", 1),  # a query DuckDB refuses: outside the tables
        (f"ATTACH '{tmp_path / 'other.duckdb'}' AS other (READ_WRITE)", 2),
        ("CREATE TABLE t AS SELECT 1", 2),
    ):
        result = CliRunner().invoke(main, ["sql", query])
        assert result.exit_code == code and result.output.startswith("error: "), (query, result.output)
        assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out.csv").exists() and not (tmp_path / "other.duckdb").exists()
    # From another folder (or with a mistyped VIDSCORE_HOME) it says where it looked, creates nothing.
    missing = tmp_path / "typo"
    env = {k: v for k, v in os.environ.items()}
    env["VIDSCORE_HOME"] = str(missing)
    proc = subprocess.run([str(Path(sys.executable).with_name("vidscore")), "sql", "SELECT 1"],
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 1 and str(missing) in proc.stderr and "Traceback" not in proc.stderr
    assert not missing.exists()


def test_demo_runs_on_a_fresh_home(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIDSCORE_", "DAGSTER_"))}
    env.update(
        VIDSCORE_HOME=str(tmp_path / "home"), VIDSCORE_MODELS_DIR=str(tmp_path / "models"), HOME=str(tmp_path)
    )
    exe = Path(sys.executable).with_name("vidscore")
    proc = subprocess.run(
        [str(exe), "demo"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "flow: model files absent, scored with the weight-free backend dis" in proc.stdout
    assert "vidscore weights download clip" in proc.stdout
    assert "vidscore ui" in proc.stdout
    # Reads well: one empty marker, full error reasons, no decoder chatter from the broken files.
    assert not any(token in proc.stdout for token in ("NaN", "<NA>", "None"))
    assert "not_a_video.mp4: cannot decode: moov atom not found" in proc.stdout
    assert "[h264 @" not in proc.stderr and "moov atom" not in proc.stderr
    assert "turn on the inbox sensor" not in proc.stdout  # it is on already
    from vidscore_core.tables.store import TableStore

    rows = TableStore(tmp_path / "home/tables").query_df("SELECT path_original, flow, flow_error FROM video_scores")
    scored = rows.set_index("path_original")
    assert scored.loc["static_texture.mp4", "flow"] < 0.1
    assert scored.loc["fast_pan_left_8px.mp4", "flow"] > scored.loc["slow_pan_right_1px.mp4", "flow"] > 1
    assert pd.notna(scored.loc["broken_truncated.mp4", "flow_error"])


def test_ingest_materialize_builds_a_preset_and_summarizes(weights_env, fixtures, monkeypatch):
    monkeypatch.setenv("VIDSCORE_FLOW_BACKEND", "dis")
    out = _run("ingest", str(fixtures / "media/meta.csv"), "--materialize", "--preset", "fair")
    assert "filtered_videos[fair]: ok" in out
    summary = out[out.index("summary:"):]
    assert "5 clips in 1 batch(es), 1 unreadable" in summary and "flow 3" in summary
    assert "not a video: a still image has no motion to score" in summary  # errors by reason, in full
    assert "tables:" in summary and "next: vidscore sql" in summary
    assert (weights_env / "home/exports/filtered_fair.csv").exists()
    # Unknown assets are one error line before any work starts.
    result = CliRunner().invoke(main, ["ingest", str(fixtures / "media/meta.csv"), "--materialize",
                                       "--assets", "videos,flow_scorez"])  # fmt: skip
    assert result.exit_code == 2 and "--assets: unknown asset(s) flow_scorez" in result.output
    assert result.output.startswith("error: ")
