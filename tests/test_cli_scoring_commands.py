"""`vidscore score|filter|weights` as a user runs them: real subprocesses of the installed console script.

Every failure is one `error: …` line on stderr with a non-zero exit, never a traceback.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from fixture_env import fixture_model_env

AESTHETIC_FILE = "aesthetic.pth"  # the contract's file name below $VIDSCORE_MODELS_DIR

VIDSCORE = Path(sys.executable).with_name("vidscore")
TOLERANCE = {"aes": 2e-4, "match": 1e-3}


def run(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    """`.venv/bin/vidscore ARGS` without an activated venv, in a fresh home with no model files."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("VIDSCORE_", "DAGSTER_"))}
    bin_dir = str(VIDSCORE.parent)
    base["PATH"] = os.pathsep.join(p for p in base.get("PATH", "").split(os.pathsep) if p != bin_dir)
    base.update(
        HOME=str(tmp_path / "userhome"),
        VIDSCORE_HOME=str(tmp_path / "home"),
        VIDSCORE_MODELS_DIR=str(tmp_path / "models"),
    )
    base.update(env)
    return subprocess.run(
        [str(VIDSCORE), *args], cwd=tmp_path, env=base, capture_output=True, text=True, timeout=600
    )


def one_error_line(proc: subprocess.CompletedProcess[str], exit_code: int | None = None) -> str:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    if exit_code is not None:
        assert proc.returncode == exit_code, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


@pytest.fixture
def scored_meta(tmp_path: Path) -> Path:
    meta = tmp_path / "meta_scores.csv"
    pd.DataFrame(
        {
            "path": ["a.mp4", "b.mp4", "c.mp4"],
            "text": ["x", "y", "z"],
            "aes": [4.0, 5.5, 6.0],
            "flow": [0.2, 2.0, 50.0],
            "match": [18.0, 25.0, 30.0],
        }  # fmt: skip
    ).to_csv(meta, index=False)
    return meta


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--aesmin", "nan"], "'--aesmin': 'nan' is not a finite number"),
        (["--aesmin", "inf"], "'--aesmin': 'inf' is not a finite number"),
        (["--flowmax", "-inf"], "'--flowmax': '-inf' is not a finite number"),
        (["--matchmin", "NaN"], "'--matchmin': 'NaN' is not a finite number"),
        (["--flowmin", "5", "--flowmax", "1"], "flowmin 5.0 is above flowmax 1.0"),
        ([], "give at least one of"),
    ],
)
def test_filter_rejects_bad_thresholds(scored_meta: Path, tmp_path: Path, options, expected) -> None:
    line = one_error_line(run(["filter", str(scored_meta), *options], tmp_path), 2)  # usage errors
    assert expected in line
    assert sorted(p.name for p in tmp_path.glob("*.csv")) == ["meta_scores.csv"]  # nothing written


def test_filter_on_a_missing_file_or_column(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    assert f"meta file not found: {missing}" in one_error_line(
        run(["filter", str(missing), "--aesmin", "5"], tmp_path), 1
    )
    aes_only = tmp_path / "meta_aes.csv"
    pd.DataFrame({"path": ["a.mp4"], "aes": [5.0]}).to_csv(aes_only, index=False)
    line = one_error_line(run(["filter", str(aes_only), "--aesmin", "5", "--matchmin", "20"], tmp_path), 1)
    assert "no 'match' column" in line and "--matchmin" in line
    assert f"vidscore score all {aes_only}" in line


def test_usage_errors_are_one_line_too(tmp_path: Path, scored_meta: Path) -> None:
    line = one_error_line(run(["score", "aesthetics", str(scored_meta)], tmp_path), 2)
    assert "'aesthetics' is not one of 'all', 'aesthetic', 'matching', 'flow'" in line
    assert "vidscore score --help" in line
    line = one_error_line(run(["filter", str(scored_meta), "--aesmin", "five"], tmp_path), 2)
    assert "'five' is not a valid float" in line
    assert "No such command 'scroe'" in one_error_line(run(["scroe"], tmp_path), 2)
    line = one_error_line(run(["weights", "download", "vae"], tmp_path), 2)
    assert "unknown model file vae" in line and "clip, aesthetic, unimatch" in line


def test_filter_keeps_rows_within_the_bounds(scored_meta: Path, tmp_path: Path) -> None:
    proc = run(["filter", str(scored_meta), "--aesmin", "5", "--flowmin", "0.5", "--flowmax", "20",
                "--matchmin", "20"], tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "meta_scores_aesmin5.0_matchmin20.0_flowmin0.5_flowmax20.0.csv"
    assert f"wrote {out}: kept 1 of 3 rows" in proc.stdout
    assert list(pd.read_csv(out)["path"]) == ["b.mp4"]


def test_score_names_every_missing_file_at_once(tmp_path: Path, fixtures: Path) -> None:
    meta = str(fixtures / "media/meta.csv")
    line = one_error_line(run(["score", "aesthetic", meta], tmp_path), 1)
    for name, relative in (("clip", "clip/ViT-L-14.pt"), ("aesthetic", AESTHETIC_FILE)):
        assert str(tmp_path / "models" / relative) in line
        assert f"VIDSCORE_{name.upper()}_WEIGHTS" in line
        assert f"`vidscore weights download {name}`" in line
    assert "unimatch" not in line  # aesthetic scores do not need it

    # `score all` computes what needs no model files (brightness, blur) and names every missing one.
    out = tmp_path / "scores.csv"
    proc = run(["score", "all", meta, "--output", str(out)], tmp_path)
    assert proc.returncode == 0, proc.stderr
    skipped = [line for line in proc.stdout.splitlines() if ": skipped: " in line]
    assert [line.split(":")[0] for line in skipped] == ["aesthetic", "matching", "flow", "camera_motion"]
    for name in ("clip", "aesthetic", "unimatch"):
        assert f"`vidscore weights download {name}`" in proc.stdout and f"VIDSCORE_{name.upper()}_WEIGHTS" in proc.stdout
    assert all("--backend dis" in line for line in skipped[2:])
    assert f"wrote {out}: 5 rows with lum, blur" in proc.stdout
    assert not (fixtures / "media/meta_scores.csv").exists()


def test_score_all_then_the_readme_filter(tmp_path: Path, fixtures: Path) -> None:
    """Every score the present weights allow, in one file that `vidscore filter` takes as it is."""
    meta = tmp_path / "meta.csv"
    source = pd.read_csv(fixtures / "media/meta.csv")
    source.assign(path=[str(fixtures / p) for p in source["path"]]).to_csv(meta, index=False)
    weights = fixture_model_env(fixtures)
    weights.pop("VIDSCORE_UNIMATCH_WEIGHTS", None)
    common = ["--device", "cpu", "--num-workers", "0", "--bs", "2"]

    # No UniMatch weights: flow is skipped (and says why), the CLIP scores run.
    proc = run(["score", "all", str(meta), *common], tmp_path, **weights)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "meta_scores.csv"
    assert "flow: skipped: unimatch weights not found" in proc.stdout
    assert "`vidscore weights download unimatch`" in proc.stdout and "--backend dis" in proc.stdout
    # ocr and shots run too: their models ship in installed packages.
    assert f"wrote {out}: 5 rows with aes, match, lum, blur, ocr, shots" in proc.stdout
    scored = pd.read_csv(out)
    assert list(scored.columns) == [*source.columns, "aes", "aes_error", "match", "match_error",
                                    "lum", "lum_error", "blur", "blur_error",
                                    "ocr", "ocr_area", "ocr_error", "shots", "shots_error"]  # fmt: skip
    line = one_error_line(run(["filter", str(out), "--aesmin", "4.9", "--flowmin", "0.5"], tmp_path), 1)
    assert "no 'flow' column" in line

    # Asked for, the weight-free flow backend fills in flow: the README's filter runs as written.
    proc = run(["score", "all", str(meta), "--backend", "dis", *common], tmp_path, **weights)
    assert proc.returncode == 0, proc.stderr
    assert "skipped" not in proc.stdout
    assert f"wrote {out}: 5 rows with aes, match, flow, cmotion, lum, blur, ocr, shots" in proc.stdout
    scored = pd.read_csv(out)
    assert list(scored.columns) == [
        *source.columns, "aes", "aes_error", "match", "match_error", "flow", "flow_error",
        "cmotion", "object_motion", "cmotion_error", "lum", "lum_error", "blur", "blur_error",
        "ocr", "ocr_area", "ocr_error", "shots", "shots_error",
    ]  # fmt: skip
    by_path = scored.assign(path=source["path"]).set_index("path")
    for column in ("aes", "match"):  # the same numbers as `vidscore score aesthetic|matching`
        reference = pd.read_csv(fixtures / f"reference/{column}.csv").set_index("path")[column]
        for path, expected in reference.items():
            assert abs(by_path.loc[path, column] - expected) <= TOLERANCE[column], (column, path)
    assert pd.isna(by_path.loc["media/bad_truncated.mp4", "aes"])
    assert by_path.loc["media/pan_hubble_right_5px.mp4", "flow"] > 1

    proc = run(["filter", str(out), "--aesmin", "4.9", "--flowmin", "0.5", "--flowmax", "100",
                "--matchmin", "0.2"], tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    kept = pd.read_csv(tmp_path / "meta_scores_aesmin4.9_matchmin0.2_flowmin0.5_flowmax100.0.csv")
    assert [Path(p).name for p in kept["path"]] == ["pan_hubble_right_5px.mp4"]


def test_weights_download_verifies_every_file_url(tmp_path: Path) -> None:
    target = tmp_path / "models" / AESTHETIC_FILE
    line = one_error_line(
        run(["weights", "download", "aesthetic", "--url", "file:///etc/hostname"], tmp_path)
    )
    assert "sha256 mismatch" in line and "left unchanged" in line
    assert not target.exists()

    other = tmp_path / "other.pth"
    other.write_bytes(b"some other checkpoint")
    line = one_error_line(
        run(["weights", "download", "aesthetic", "--url", other.as_uri(), "--sha256", "ab" * 32], tmp_path)
    )
    assert "is not the official aesthetic file" in line and "VIDSCORE_AESTHETIC_WEIGHTS" in line
    line = one_error_line(run(["weights", "download", "clip", "--sha256", "4e7b215d"], tmp_path))
    assert "64 hex digits" in line
    models = tmp_path / "models"
    assert not models.exists() or [p for p in models.rglob("*") if p.is_file()] == []  # nothing installed


def test_an_unexpected_exception_is_one_line_unless_debugging(
    tmp_path: Path, scored_meta: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from vidscore_core.curation import filters as filtering
    from vidscore_dagster.cli import main

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(filtering, "filter_meta_file", broken)
    monkeypatch.delenv("VIDSCORE_DEBUG", raising=False)
    result = CliRunner().invoke(main, ["filter", str(scored_meta), "--aesmin", "5"])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "error: RuntimeError: a bug (unexpected; rerun with VIDSCORE_DEBUG=1 for the traceback)"
    ]
    monkeypatch.setenv("VIDSCORE_DEBUG", "1")
    result = CliRunner().invoke(main, ["filter", str(scored_meta), "--aesmin", "5"])
    assert isinstance(result.exception, RuntimeError)  # the traceback is there for whoever asks
