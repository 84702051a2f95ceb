"""`bench/gpu_check.py --dry-run`: the GPU readiness check runs end to end on CPU, with fp32 parity."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SECTIONS = ("environment", "parity", "clip_throughput", "unimatch_throughput", "end_to_end", "text_and_shots")
HEADINGS = (
    "## 1. Parity",
    "## 2. CLIP ViT-L/14 throughput",
    "## 3. UniMatch throughput",
    "## 4. End to end",
    "## 5. Targets",
    "## 6. Text and shots",
)


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory, fixtures):
    out = tmp_path_factory.mktemp("gpu-check")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "VIDSCORE_FIXTURES": str(fixtures)}
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "gpu_check.py"), "--dry-run", "--out", str(out),
         "--fixtures", str(fixtures)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1100,
    )  # fmt: skip
    return proc, out


def _report(dry_run) -> dict:
    """The dry run's JSON report, once the run is known to have passed."""
    proc, out = dry_run
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return json.loads(next(out.glob("gpu_check-*.json")).read_text())


@pytest.mark.timeout(1200)
def test_dry_run_writes_both_reports_with_every_section(dry_run):
    proc, out = dry_run
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    reports = sorted(out.glob("gpu_check-*.json"))
    pages = sorted(out.glob("gpu_check-*.md"))
    assert len(reports) == 1 and len(pages) == 1, list(out.iterdir())
    report = json.loads(reports[0].read_text())
    for name in SECTIONS:
        assert report[name]["status"] == "ok", (name, report[name].get("traceback"))
    assert report["verdict"] == "pass" and report["failed_sections"] == []
    env = report["environment"]
    assert env["dry_run"] is True and env["device"] == "cpu" and env["torch"]
    page = pages[0].read_text()
    for heading in HEADINGS:
        assert heading in page, heading
    assert "DRY RUN" in page


@pytest.mark.timeout(1200)
def test_dry_run_parity_passes_in_fp32_through_the_production_path(dry_run):
    parity = _report(dry_run)["parity"]
    assert parity["pass"] is True
    fp32 = parity["precisions"]["fp32"]
    assert fp32["pass"] is True
    assert fp32["effective"].get("clip_dtype") == "float32"
    counts = {"aes": 4, "match": 4, "flow": 1}
    for column, count in counts.items():
        score = fp32["scores"][column]
        assert score["status"] == "ok" and score["pass"] is True, score
        assert len(score["items"]) == count
        assert all(item["ok"] and item["got"] is not None for item in score["items"])
        assert score["bad_file_gets_error"] is True
    assert fp32["scores"]["aes"]["max_abs_delta"] <= 2e-4
    assert fp32["scores"]["match"]["max_abs_delta"] <= 1e-3
    assert fp32["scores"]["flow"]["max_rel_delta"] <= 1e-3


@pytest.mark.timeout(1200)
def test_dry_run_throughput_and_end_to_end_figures(dry_run):
    report = _report(dry_run)

    clip = report["clip_throughput"]
    assert clip["manifest_check"]["ok"] is True
    assert clip["manifest_check"]["parameters"] == 427_616_513  # the full ViT-L/14 layout
    measured = [e for e in clip["precisions"].values() if "batches" in e]
    assert measured
    for entry in measured:
        for row in entry["batches"].values():
            assert row["tower_images_per_s"] > 0 and row["aesthetic_clips_per_s"] > 0
            assert row["aes_plus_match_over_aes"] >= 1.0

    flow = report["unimatch_throughput"]
    assert flow["manifest_check"]["ok"] is True
    assert flow["manifest_check"]["parameters"] == 7_360_688
    rows = [r for e in flow["precisions"].values() for r in e.get("batches", {}).values()]
    assert rows and all(r["pairs_per_s"] > 0 for r in rows)

    e2e = report["end_to_end"]
    assert e2e["errors"] == 0
    assert e2e["clip_embeddings"]["clips"] == 2 and e2e["clip_embeddings"]["scored"] == 2
    assert e2e["flow_scores"]["clips"] == 2 and e2e["flow_scores"]["scored"] == 2
    assert e2e["flow_size_applied"] is True

    targets = report["targets"]
    for key in ("aesthetic_model_side", "aes_plus_match", "unimatch_vs_reference"):
        assert targets[key]["target"]
    assert targets["unimatch_vs_reference"]["met"] is None  # needs the reference run


@pytest.mark.timeout(1200)
def test_dry_run_compares_the_text_and_shot_models_on_the_device_with_the_cpu(dry_run):
    report = _report(dry_run)["text_and_shots"]
    assert report["pass"] is True
    frames = report["ocr"]["frames"]
    assert [f["cpu_boxes"] > 0 for f in frames] == [False, True]  # a fixture frame, then with drawn words
    assert all(f["ok"] for f in frames) and all(b["frames_per_s"] > 0 for b in report["ocr"]["batches"].values())
    shots = report["shots"]
    assert shots["same_shots"] and len(shots["shots"]) == 2 and abs(shots["shots"][1][0] - shots["join_frame"]) <= 2
    assert report["decode"]["every_frame_48x27_s"] > 0
