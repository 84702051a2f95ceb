"""Every preset the README documents builds from the CLI on a fresh home, and custom presets take bounds.

Real subprocesses of the console script, with the fixtures' random-weight checkpoints and DIS flow.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
from fixture_env import fixture_model_env
from test_cli_scoring_commands import one_error_line, run

from vidscore_core.curation.filtered_dataset import PRESETS


def test_every_preset_builds_on_a_fresh_home(tmp_path: Path, fixtures: Path) -> None:
    env = {**fixture_model_env(fixtures), "VIDSCORE_FLOW_BACKEND": "dis"}
    meta = str(fixtures / "media/meta.csv")
    exports = tmp_path / "home" / "exports"
    # `curated` has score bounds and dedup together: it needs near_duplicates, built on the way.
    proc = run(["ingest", meta, "--materialize", "--preset", "curated"], tmp_path, **env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "near_duplicates: ok" in proc.stdout
    line = next(line for line in proc.stdout.splitlines() if "filtered_videos[curated]" in line)
    assert re.search(r"filtered_videos\[curated\]: ok: kept \d+ of 5 clips; removed by aesmin 5\.0: \d+, "
                     r"matchmin 20\.0: \d+, flowmin 0\.5: \d+, flowmax 100\.0: \d+, fmin 16: \d+, dedup: \d+", line), line  # fmt: skip
    assert f"filtered: {exports / 'filtered_curated.csv'}" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    # The other presets, and a preset of one's own with score bounds and dedup, on the scored batches.
    for args in (["--preset", "fair"], ["--preset", "good"], ["--preset", "mine", "--aesmin", "-100", "--dedup"]):
        proc = run(["ingest", meta, "--materialize", "--assets", "filtered_videos", *args], tmp_path, **env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert f"filtered_videos[{args[1]}]: ok: kept" in proc.stdout
        assert (exports / f"filtered_{args[1]}.csv").is_file()
    assert set(PRESETS) <= {p.stem.removeprefix("filtered_") for p in exports.glob("*.csv")}
    # -100 keeps every scored clip; dedup then keeps one per group (the fixtures' clips are all distinct).
    mine = pd.read_csv(exports / "filtered_mine.csv")
    assert len(mine) == 4 and mine["aes"].notna().all()


def test_unknown_preset_is_a_usage_error_listing_the_presets(tmp_path: Path, fixtures: Path) -> None:
    meta = str(fixtures / "media/meta.csv")
    line = one_error_line(run(["ingest", meta, "--materialize", "--preset", "fiar"], tmp_path), 2)
    assert "unknown preset 'fiar'" in line and all(name in line for name in PRESETS)
    line = one_error_line(run(["ingest", meta, "--materialize", "--assets", "near_dups"], tmp_path), 2)
    assert "unknown asset(s) near_dups" in line and "near_duplicates" in line
    assert not (tmp_path / "home").exists()  # nothing was started


def test_filter_reports_rows_removed_per_bound(tmp_path: Path) -> None:
    meta = tmp_path / "meta.csv"
    pd.DataFrame({"path": ["a.mp4", "b.mp4", "c.mp4", "d.mp4"], "aes": [4.0, 5.5, 6.0, None],
                  "flow": [0.2, 2.0, 50.0, 1.0]}).to_csv(meta, index=False)  # fmt: skip
    proc = run(["filter", str(meta), "--aesmin", "5", "--flowmax", "10"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "removed by aesmin 5.0: 2, flowmax 10.0: 1" in proc.stdout
    assert "kept 1 of 4 rows" in proc.stdout
