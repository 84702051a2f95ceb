"""`vidscore filter` technical limits (Open-Sora datautil's --fmin/--fmax/--fpsmax/--hwmax, plus aspect
ratio and duration) and --dedup: each keeps exactly the rows inside its bounds, from the meta's own
columns when it has them and from a probe of the file when it does not.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from vidscore_dagster.cli import main

# name: (num_frames, fps, width, height, duration_s); files that do not exist, so nothing can be probed.
COLUMNS = {
    "a": (10, 24.0, 640, 360, 0.4167),
    "b": (48, 30.0, 1280, 720, 1.6),
    "c": (120, 60.0, 1920, 1080, 2.0),
    "d": (300, 24.0, 360, 640, 12.5),
    "e": (48, 25.0, 512, 512, 1.92),
}

# (option, value, rows kept) over COLUMNS; every bound sits on some row's value (bounds are inclusive).
COLUMN_CASES = [
    ("--fmin", "48", "bcde"),
    ("--fmax", "48", "abe"),
    ("--fpsmax", "25", "ade"),
    ("--hwmax", "230400", "ad"),  # 640 x 360 = 360 x 640 = 230400; 512 x 512 = 262144
    ("--aspect-min", "1.0", "de"),  # height / width: 1.78 and 1.0
    ("--aspect-max", "0.5625", "abc"),  # 16:9 landscape is exactly 0.5625
    ("--duration-min", "1.92", "cde"),
    ("--duration-max", "1.6", "ab"),
]


def _invoke(*args: str):
    return CliRunner().invoke(main, ["filter", *args])


def _one_error(result) -> str:
    lines = result.output.strip().splitlines()
    assert result.exit_code != 0 and len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.fixture
def column_meta(tmp_path: Path) -> Path:
    meta = tmp_path / "meta.csv"
    rows = [
        {"path": f"clips/{name}.mp4", "text": f"caption {name}", "num_frames": f, "fps": fps, "width": w,
         "height": h, "duration_s": d, "aes": 5.0}
        for name, (f, fps, w, h, d) in COLUMNS.items()
    ]  # fmt: skip
    pd.DataFrame(rows).to_csv(meta, index=False)
    return meta


@pytest.mark.parametrize(("option", "value", "kept"), COLUMN_CASES)
def test_each_limit_keeps_exactly_the_rows_inside_it_from_the_columns(
    column_meta, option, value, kept
) -> None:
    result = _invoke(str(column_meta), option, value)
    assert result.exit_code == 0, result.output
    assert "probed" not in result.output  # the meta's columns were enough (the files do not exist)
    suffix = {"--fmin": "fmin", "--fmax": "fmax", "--hwmax": "hwmax"}.get(option)
    name = f"meta_{suffix}{value}.csv" if suffix else f"meta_{option[2:].replace('-', '_')}{float(value)}.csv"
    out = column_meta.with_name(name)
    assert result.output.strip().endswith(f"wrote {out}: kept {len(kept)} of 5 rows")
    written = pd.read_csv(column_meta)
    expected = written[[Path(p).stem in kept for p in written["path"]]].reset_index(drop=True)
    pd.testing.assert_frame_equal(pd.read_csv(out), expected)  # every column, as written


def test_limits_combine_and_name_the_output_like_open_sora(column_meta) -> None:
    result = _invoke(
        str(column_meta), "--aesmin", "5", "--fmin", "48", "--aspect-max", "0.6", "--fpsmax", "30"
    )
    assert result.exit_code == 0, result.output
    out = column_meta.with_name("meta_aesmin5.0_fmin48_fpsmax30.0_aspect_max0.6.csv")
    assert [Path(p).stem for p in pd.read_csv(out)["path"]] == ["b"]


def test_duration_comes_from_a_duration_column_or_frames_over_fps(tmp_path) -> None:
    meta = tmp_path / "meta.csv"
    pd.DataFrame(
        {"path": ["x.mp4", "y.mp4", "z.mp4"], "num_frames": [24, 48, 96], "fps": [24, 24, 24]}
    ).to_csv(meta, index=False)
    result = _invoke(str(meta), "--duration-max", "2")
    assert result.exit_code == 0 and "probed" not in result.output, result.output
    assert list(pd.read_csv(tmp_path / "meta_duration_max2.0.csv")["path"]) == ["x.mp4", "y.mp4"]

    pd.DataFrame({"path": ["x.mp4", "y.mp4"], "duration": [3.0, 1.0]}).to_csv(meta, index=False)
    result = _invoke(str(meta), "--duration-min", "2")
    assert result.exit_code == 0 and "probed" not in result.output, result.output
    assert list(pd.read_csv(tmp_path / "meta_duration_min2.0.csv")["path"]) == ["x.mp4"]


# The fixture media as `media.probe` reads them: (num_frames, fps, width, height, duration_s).
# The image has one frame and no fps or duration; the truncated file cannot be read at all.
PROBED = {
    "pan_hubble_right_5px.mp4": (48, 24.0, 640, 360, 2.0),
    "pan_retina_portrait_down_3px.mp4": (48, 24.0, 360, 640, 2.0),
    "pan_ihc_diag_25frames.mkv": (25, 24.0, 480, 270, 1.042),
    "image_colorwheel.jpg": (1, None, 371, 370, None),
    "bad_truncated.mp4": None,
}
PROBE_CASES = [
    (
        "--fmin",
        "25",
        {"pan_hubble_right_5px.mp4", "pan_retina_portrait_down_3px.mp4", "pan_ihc_diag_25frames.mkv"},
    ),
    ("--fmax", "25", {"pan_ihc_diag_25frames.mkv", "image_colorwheel.jpg"}),
    (
        "--fpsmax",
        "24",
        {"pan_hubble_right_5px.mp4", "pan_retina_portrait_down_3px.mp4", "pan_ihc_diag_25frames.mkv"},
    ),
    ("--hwmax", "137270", {"pan_ihc_diag_25frames.mkv", "image_colorwheel.jpg"}),  # 371 x 370
    ("--aspect-min", "0.99", {"pan_retina_portrait_down_3px.mp4", "image_colorwheel.jpg"}),
    ("--aspect-max", "0.5625", {"pan_hubble_right_5px.mp4", "pan_ihc_diag_25frames.mkv"}),
    ("--duration-min", "2", {"pan_hubble_right_5px.mp4", "pan_retina_portrait_down_3px.mp4"}),
    ("--duration-max", "1.5", {"pan_ihc_diag_25frames.mkv"}),
]


@pytest.fixture
def media_meta(tmp_path: Path, fixtures: Path) -> Path:
    """The fixture media with no metadata columns at all: every limit needs a probe."""
    meta = tmp_path / "media.csv"
    paths = [str(fixtures / "media" / name) for name in PROBED]
    pd.DataFrame({"path": paths, "text": [f"t{i}" for i in range(len(paths))]}).to_csv(meta, index=False)
    return meta


@pytest.mark.parametrize(("option", "value", "kept"), PROBE_CASES)
def test_each_limit_probes_files_when_the_meta_lacks_the_columns(media_meta, option, value, kept) -> None:
    result = _invoke(str(media_meta), option, value, "--output", str(media_meta.with_name("out.csv")))
    assert result.exit_code == 0, result.output
    assert "probed 5 file(s)" in result.output and "1 could not be read" in result.output
    out = pd.read_csv(media_meta.with_name("out.csv"))
    assert {Path(p).name for p in out["path"]} == kept
    assert list(out.columns) == ["path", "text"]


def test_only_rows_missing_a_value_are_probed_and_the_meta_wins(tmp_path, fixtures, monkeypatch) -> None:
    from vidscore_core.curation.filters import FilterSpec, filter_meta_file

    media = fixtures / "media"
    meta = tmp_path / "mixed.csv"
    pd.DataFrame(
        {
            "path": [str(media / n) for n in ("pan_hubble_right_5px.mp4", "pan_retina_portrait_down_3px.mp4",
                                              "pan_ihc_diag_25frames.mkv", "bad_truncated.mp4")],
            # The hubble clip has 48 frames; the meta says 10, and the meta is what counts.
            "num_frames": [10, 48, None, None],
            "height": [360, None, 270, None],  # a height without a width: hw needs the probe's pair
        }
    ).to_csv(meta, index=False)  # fmt: skip
    probe_module = importlib.import_module("vidscore_core.media.probe")  # the package exports probe()
    calls: list[str] = []
    real = probe_module.probe_many

    def counting(paths, **kwargs):  # the files handed to the (process-isolated) probe
        calls.extend(Path(p).name for p in paths)
        return real(paths, **kwargs)

    monkeypatch.setattr(probe_module, "probe_many", counting)
    notes: list[str] = []
    out, kept, total = filter_meta_file(meta, FilterSpec(fmin=30), notify=notes.append)
    assert sorted(calls) == ["bad_truncated.mp4", "pan_ihc_diag_25frames.mkv"]
    assert (kept, total) == (
        1,
        4,
    )  # retina (48 in the meta); hubble's 10 fails; ihc probed 25; bad unreadable
    assert [Path(p).name for p in pd.read_csv(out)["path"]] == ["pan_retina_portrait_down_3px.mp4"]
    assert notes == ["probed 2 file(s) for metadata the meta file does not give; 1 could not be read and "
                     "fail the technical limits", "removed by fmin 30: 3"]  # fmt: skip

    calls.clear()
    out, kept, _ = filter_meta_file(meta, FilterSpec(hwmax=200_000), output=tmp_path / "hw.csv")
    assert len(calls) == 4  # no row has both height and width
    assert [Path(p).name for p in pd.read_csv(out)["path"]] == ["pan_ihc_diag_25frames.mkv"]


def test_dedup_keeps_the_rows_marked_dup_keep(tmp_path) -> None:
    meta = tmp_path / "meta_dedup.csv"
    pd.DataFrame(
        {"path": ["a.mp4", "b.mp4", "c.mp4", "d.mp4"], "dup_group": ["b.mp4", "b.mp4", "c.mp4", None],
         "dup_keep": [False, True, True, True]}
    ).to_csv(meta, index=False)  # fmt: skip
    result = _invoke(str(meta), "--dedup", "--fmin", "1")
    assert result.exit_code == 0, result.output
    # The files do not exist: the frame limit fails them all, --dedup alone keeps b, c, d.
    assert "kept 0 of 4 rows" in result.output
    result = _invoke(str(meta), "--dedup")
    assert result.exit_code == 0 and "probed" not in result.output, result.output
    out = tmp_path / "meta_dedup_dedup.csv"
    assert list(pd.read_csv(out)["path"]) == ["b.mp4", "c.mp4", "d.mp4"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--fmin", "50", "--fmax", "10"], "fmin 50 is above fmax 10"),
        (["--aspect-min", "2", "--aspect-max", "1"], "aspect_min 2.0 is above aspect_max 1.0"),
        (["--fpsmax", "nan"], "'--fpsmax': 'nan' is not a finite number"),
        (["--duration-max", "inf"], "'--duration-max': 'inf' is not a finite number"),
        (["--dedup"], "has no 'dup_keep' column (needed by --dedup): run `vidscore dedup"),
    ],
)
def test_bad_limits_are_one_error_line_and_write_nothing(column_meta, args, expected) -> None:
    assert expected in _one_error(_invoke(str(column_meta), *args))
    assert [p.name for p in column_meta.parent.glob("*.csv")] == ["meta.csv"]


def test_the_console_script_reports_errors_in_one_line(column_meta, tmp_path) -> None:
    vidscore = Path(sys.executable).with_name("vidscore")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIDSCORE_", "DAGSTER_"))}
    env["VIDSCORE_HOME"] = str(tmp_path / "home")
    proc = subprocess.run([str(vidscore), "filter", str(column_meta), "--fmin", "1.5"], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: Invalid value for '--fmin': '1.5' is not a valid integer range. (see `vidscore filter --help`)"
    ]
    proc = subprocess.run([str(vidscore), "filter", str(column_meta), "--hwmax", "230400"], env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines() == [
        "removed by hwmax 230400: 3", f"wrote {column_meta.with_name('meta_hwmax230400.csv')}: kept 2 of 5 rows"
    ]


def test_a_decoder_that_aborts_costs_the_filter_one_file(tmp_path, fixtures, monkeypatch) -> None:
    """Probing for `vidscore filter` runs in supervised workers like ingestion's: a decoder that
    aborts on one file leaves that file unreadable (it fails the limits), the others are judged."""
    import os
    import shutil

    from vidscore_core.curation.filters import FilterSpec, filter_meta_file

    probe_module = importlib.import_module("vidscore_core.media.probe")
    real = probe_module.decode_video

    def aborting(path, *args, **kwargs):
        if "abort" in os.path.basename(path):
            os.abort()
        return real(path, *args, **kwargs)

    monkeypatch.setattr(probe_module, "decode_video", aborting)  # reaches the forked workers
    good = fixtures / "media" / "pan_hubble_right_5px.mp4"
    crashing = tmp_path / "abort_me.mp4"
    shutil.copyfile(good, crashing)
    meta = tmp_path / "meta.csv"
    pd.DataFrame({"path": [str(good), str(crashing)]}).to_csv(meta, index=False)
    notes: list[str] = []
    out, kept, total = filter_meta_file(meta, FilterSpec(fmin=30), notify=notes.append)
    assert (kept, total) == (1, 2)
    assert [Path(p).name for p in pd.read_csv(out)["path"]] == ["pan_hubble_right_5px.mp4"]
    assert "1 could not be read" in notes[0]
