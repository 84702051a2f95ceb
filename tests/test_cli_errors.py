"""What a user sees when something goes wrong: one `error:` line with the cause, usage errors exit 2,
numeric options checked when parsed, and no decoder or Dagster chatter on the terminal.

Real subprocesses of the console script.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from test_cli_scoring_commands import VIDSCORE, one_error_line, run


def test_ingest_error_is_one_line_without_dagster_logs(tmp_path: Path) -> None:
    meta = tmp_path / "nopath.csv"
    meta.write_text("file,text\na.mp4,x\n")
    proc = run(["ingest", str(meta)], tmp_path)
    line = one_error_line(proc, 1)  # no STEP_FAILURE log, no stack trace, no BetaWarning before it
    assert f"{meta}: no 'path' column; columns found: 'file', 'text'" in line
    assert "MetaError" not in line and "dagster" not in line.lower()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["score", "flow", "{meta}", "--backend", "dis", "--decode-timeout", "nan"], "'nan' is not a finite number"),
        (["score", "all", "{meta}", "--decode-timeout", "0"], "0.0 is not in the range x>0"),
        (["dedup", "{meta}", "--decode-timeout", "-1"], "-1.0 is not in the range x>0"),
        (["score", "aesthetic", "{meta}", "--num-workers", "-1"], "-1 is not in the range x>=0"),
        (["dedup", "{meta}", "--bs", "0"], "0 is not in the range x>=1"),
        (["dedup", "{meta}", "--threshold", "inf"], "inf is not in the range -1<=x<=1"),
        (["ingest", "{meta}", "--batch-size", "0"], "0 is not in the range x>=1"),
        (["filter", "{meta}", "--fpsmax", "nan"], "'nan' is not a finite number"),
        (["filter", "{meta}", "--fmin", "-5"], "-5 is not in the range x>=0"),
        (["filter", "{meta}"], "give at least one of"),
        (["ingest", "{meta}", "--materialize", "--assets", "videos,flow_scorez"], "unknown asset(s) flow_scorez"),
        (["weights", "download", "vae"], "unknown model file vae"),
        (["weights", "download", "clip", "aesthetic", "--url", "file:///x"], "need exactly one weight name"),
    ],
)
def test_usage_errors_exit_2_before_any_work(tmp_path: Path, args: list[str], message: str) -> None:
    meta = tmp_path / "meta.csv"
    meta.write_text("path,text\na.mp4,x\n")
    line = one_error_line(run([a.replace("{meta}", str(meta)) for a in args], tmp_path), 2)
    assert message in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["meta.csv"]  # nothing written, no home made


def test_version() -> None:
    proc = subprocess.run([str(VIDSCORE), "--version"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("vidscore ") and proc.stdout.split()[1][0].isdigit()


def test_decoder_messages_go_to_a_log_the_output_names(tmp_path: Path, fixtures: Path) -> None:
    meta = tmp_path / "meta.csv"
    shutil.copy(fixtures / "media/bad_truncated.mp4", tmp_path / "bad.mp4")
    shutil.copy(fixtures / "media/pan_hubble_right_5px.mp4", tmp_path / "good.mp4")
    meta.write_text("path\nbad.mp4\ngood.mp4\n")
    proc = run(["score", "flow", str(meta), "--backend", "dis", "--num-workers", "1"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    log = tmp_path / "home" / "logs" / "decoders.log"
    assert f"decoder messages: {log}" in proc.stdout
    assert "h264" in log.read_text()  # FFmpeg's complaint about the truncated file is kept there ...
    assert "h264" not in proc.stderr and "NAL" not in proc.stderr  # ... and not on the terminal
    assert "flow: 100%" in proc.stderr and "2/2" in proc.stderr  # while the progress bar is,
    assert "clip/s" in proc.stderr or "s/clip" in proc.stderr  # with its rate


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1) to mount a small file system")
def test_disk_full_names_the_file_and_the_reason(tmp_path: Path, fixtures: Path) -> None:
    """A 16 KiB file system filled up: the error names the table file and "No space left on device"."""
    small = tmp_path / "small"
    small.mkdir()
    meta = tmp_path / "meta.csv"
    meta.write_text(f"path\n{fixtures / 'media/pan_hubble_right_5px.mp4'}\n")
    script = (f"mount -t tmpfs -o size=16k tmpfs {small} || exit 77; "
              f"dd if=/dev/zero of={small}/filler bs=4k 2>/dev/null; "
              f'exec {VIDSCORE} ingest {meta}')  # fmt: skip
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("no permission to create a mount namespace")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIDSCORE_", "DAGSTER_"))}
    env.update(HOME=str(tmp_path / "userhome"), VIDSCORE_HOME=str(tmp_path / "home"),
               VIDSCORE_MODELS_DIR=str(tmp_path / "models"), VIDSCORE_TABLES=str(small / "tables"))  # fmt: skip
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    if proc.returncode == 77:
        pytest.skip("cannot mount a tmpfs here")
    line = one_error_line(proc, 1)
    assert "No space left on device" in line and str(small / "tables") in line


def test_meta_files_that_are_not_what_they_seem(tmp_path: Path) -> None:
    duplicated = tmp_path / "dup.csv"
    duplicated.write_text("path,path\na.mp4,b.mp4\n")
    fifo = tmp_path / "pipe.csv"
    os.mkfifo(fifo)
    zeros = tmp_path / "zeros.csv"
    zeros.symlink_to("/dev/zero")
    expected = {
        duplicated: "the header names 'path' more than once",
        fifo: "is a FIFO (named pipe), not a regular file",
        zeros: "is a character device, not a regular file",
    }
    for meta, message in expected.items():
        for args in (["filter", str(meta), "--aesmin", "1"], ["ingest", str(meta)]):
            assert message in one_error_line(run(args, tmp_path), 1), args


def test_parquet_caption_that_is_not_utf8_fails_before_scoring(tmp_path: Path, fixtures: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    from fixture_env import fixture_model_env

    clip = str(fixtures / "media/pan_hubble_right_5px.mp4")
    meta = tmp_path / "meta.parquet"
    pq.write_table(pa.table({"path": [clip, clip], "text": pa.array([b"fine", b"caf\xe9"], pa.binary())}), meta)
    proc = run(["score", "matching", str(meta)], tmp_path, **fixture_model_env(fixtures))
    line = one_error_line(proc, 1)  # no progress bar: nothing was scored
    assert f"{meta}: column 'text', row 1 (0-based) is not valid UTF-8 (byte 0xe9" in line
