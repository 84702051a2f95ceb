"""Where the CSV commands write: output paths are checked before any work, nothing partial survives, and
the input's columns come back as written (an integer column with blanks stays integer).

Real subprocesses of the console script; flow uses the weight-free DIS backend so no weights are needed.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fixture_env import fixture_model_env
from test_cli_scoring_commands import one_error_line, run

# Each command that writes a meta file, with the options it needs to run without weights.
COMMANDS = {
    "score flow": ["score", "flow", "{meta}", "--backend", "dis", "--num-workers", "0"],
    "score all": ["score", "all", "{meta}", "--backend", "dis", "--num-workers", "0"],
    "filter": ["filter", "{meta}", "--fmin", "1"],
    "dedup": ["dedup", "{meta}", "--num-workers", "0"],
}


@pytest.fixture
def meta(tmp_path: Path, fixtures: Path) -> Path:
    """Two real clips; `height` is an integer column with a blank, `note` text with a blank."""
    clips = tmp_path / "clips"
    clips.mkdir()
    for name in ("pan_hubble_right_5px.mp4", "pan_ihc_diag_25frames.mkv"):
        shutil.copy(fixtures / "media" / name, clips / name)
    path = tmp_path / "meta.csv"
    path.write_text(
        "path,text,height,num_frames,note\n"
        "clips/pan_hubble_right_5px.mp4,a pan,640,30,\n"
        "clips/pan_ihc_diag_25frames.mkv,a diagonal,,25,kept\n"
    )
    return path


def _args(command: str, meta: Path, *extra: str) -> list[str]:
    return [a.replace("{meta}", str(meta)) for a in COMMANDS[command]] + list(extra)


def _stray(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith((".tmp", ".part")))


@pytest.mark.parametrize("command", COMMANDS)
def test_bad_output_paths_fail_before_any_work(command: str, meta: Path, tmp_path: Path) -> None:
    before = meta.read_bytes()
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    cases = {
        str(meta): "is the input meta file",
        str(tmp_path / "clips"): "is a directory",
    }
    if command == "score all":  # the same check serves every command: the other cases once
        cases[str(a_file / "out.csv")] = "a_file is not a folder"
        cases[str(tmp_path / ("x" * 300 + ".csv"))] = "File name too long"
    for output, reason in cases.items():
        line = one_error_line(run(_args(command, meta, "--output", output), tmp_path), 1)
        assert reason in line and "output" in line, line
        # No progress bar, no scoring: the single error line is all there is (one_error_line), and the
        # input is untouched.
        assert meta.read_bytes() == before
    assert _stray(tmp_path) == []


@pytest.mark.parametrize("command", COMMANDS)
def test_overwrite_replaces_the_meta_file_and_types_survive(
    command: str, meta: Path, tmp_path: Path, fixtures: Path
) -> None:
    proc = run(_args(command, meta, "--output", str(meta), "--overwrite"), tmp_path, **fixture_model_env(fixtures))
    assert proc.returncode == 0, proc.stderr
    text = meta.read_text()
    rows = text.splitlines()
    assert rows[0].startswith("path,text,height,num_frames,note")
    # 640 stays 640 (not 640.0), the blank stays blank, 30 stays 30.
    assert rows[1].startswith("clips/pan_hubble_right_5px.mp4,a pan,640,30,,") or rows[1] == (
        "clips/pan_hubble_right_5px.mp4,a pan,640,30,"
    ), rows[1]
    assert ",,25,kept" in rows[2], rows[2]
    assert "640.0" not in text
    assert _stray(tmp_path) == []


def test_parquet_integer_column_with_nulls_stays_integer(meta: Path, tmp_path: Path) -> None:
    source = pd.read_csv(meta).astype({"height": "Int64"})
    parquet = tmp_path / "meta.parquet"
    source.to_parquet(parquet, index=False)
    proc = run(["filter", str(parquet), "--fmin", "1"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    written = pq.read_table(next(tmp_path.glob("meta_fmin1*.parquet")))
    assert written.schema.field("height").type == pa.int64()
    assert written.column("height").to_pylist() == [640, None]
