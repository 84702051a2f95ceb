"""A model that outputs NaN or inf gives a row error, never a NULL score without one, for every score.

The error is retryable: the backfill schedule retries the batch once, and when the retry leaves it
unchanged, reports it instead of retrying it every day.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import torch
from fixture_env import fixture_model_env
from test_cli_scoring_commands import run

from vidscore_core.scoring.engine import Item, ItemResult
from vidscore_core.scoring.finite import NON_FINITE
from vidscore_core.scoring.options import JobOptions
from vidscore_core.scoring.score_jobs import FlowJob
from vidscore_dagster.definitions import defs
from vidscore_dagster.defs.automation.schedules import score_backfill_schedule
from vidscore_dagster.defs.resources import ScoringOptions, VidscoreSettings, default_resources
from vidscore_dagster.runner import ingest_meta_file, materialize_batches

CLIPS = ("media/pan_hubble_right_5px.mp4", "media/image_colorwheel.jpg")
BATCH_ASSETS = ["videos", "clip_embeddings", "aesthetic_scores", "matching_scores", "flow_scores"]


def nan_weights(source: Path, target: Path, *keys: str) -> Path:
    """A copy of a fixture checkpoint (a plain state dict) with NaN in `keys` (all float tensors if none)."""
    state = torch.load(source, weights_only=True)
    for key, tensor in state.items():
        if tensor.is_floating_point() and (not keys or key in keys):
            tensor.fill_(float("nan"))
    torch.save(state, target)
    return target


@pytest.fixture
def meta(tmp_path: Path, fixtures: Path) -> Path:
    path = tmp_path / "meta.csv"
    pd.DataFrame({"path": [str(fixtures / c) for c in CLIPS], "text": ["a pan", "a wheel"]}).to_csv(path, index=False)
    return path


def test_nan_weights_give_row_errors_in_every_csv_score(meta: Path, tmp_path: Path, fixtures: Path) -> None:
    weights = fixtures / "weights"
    env = fixture_model_env(fixtures)
    common = ["score", "all", str(meta), "--backend", "dis", "--device", "cpu", "--num-workers", "0"]
    # The aesthetic head and CLIP's text projection give NaN: aes and match are errors, flow is scored.
    env["VIDSCORE_AESTHETIC_WEIGHTS"] = str(nan_weights(weights / "aesthetic_random_scaled.pth", tmp_path / "a.pth"))
    env["VIDSCORE_CLIP_WEIGHTS"] = str(nan_weights(weights / "clip_tiny_openai.pt", tmp_path / "t.pt", "text_projection"))
    proc = run(common, tmp_path, **env)
    assert proc.returncode == 0, proc.stderr
    scored = pd.read_csv(tmp_path / "meta_scores.csv")
    for column in ("aes", "match"):
        assert scored[column].isna().all(), column
        assert scored[f"{column}_error"].str.startswith(NON_FINITE).all(), column
        assert f"in {column}" in scored[f"{column}_error"].iloc[0]
    assert scored["flow"].iloc[0] > 0 and pd.isna(scored["flow_error"].iloc[0])
    assert "aesthetic: 0 scored, 2 with errors" in proc.stdout

    # The image tower gives NaN: the embeddings are errors, and so is every score derived from them.
    env["VIDSCORE_AESTHETIC_WEIGHTS"] = str(weights / "aesthetic_random_scaled.pth")
    env["VIDSCORE_CLIP_WEIGHTS"] = str(nan_weights(weights / "clip_tiny_openai.pt", tmp_path / "v.pt", "visual.proj"))
    proc = run(common, tmp_path, **env)
    assert proc.returncode == 0, proc.stderr
    scored = pd.read_csv(tmp_path / "meta_scores.csv")
    for column in ("aes", "match"):
        assert scored[column].isna().all() and scored[f"{column}_error"].str.contains("in embedding").all(), column


def test_a_non_finite_flow_is_a_row_error(fixtures: Path, vidscore_env) -> None:
    """Flow's rows pass the same check (a NaN UniMatch takes minutes on a CPU: its rows are built here)."""
    settings, _ = vidscore_env
    job = FlowJob(settings, JobOptions(device="cpu"), backend="dis")
    clips = [Item(0, "nan", "a.mp4"), Item(1, "inf", "b.mp4"), Item(2, "ok", "c.mp4")]
    values = [(float("nan"), [float("nan")] * 3), (1.0, [1.0, float("inf"), 2.0]), (1.5, [1.0, 1.5, 2.0])]
    results = [ItemResult(c, {"flow": f, "flow_pairs": p, "indices": [0, 10, 20, 30], "num_frames": 40})
               for c, (f, p) in zip(clips, values, strict=True)]  # fmt: skip
    rows = job.rows(results, "b").set_index("video_id")
    assert rows.loc[["nan", "inf"], "flow"].isna().all() and rows.loc[["nan", "inf"], "flow_pairs"].isna().all()
    assert rows.loc["nan", "error"] == f"{NON_FINITE} (NaN or inf) in flow, flow_pairs"
    assert rows.loc["inf", "error"] == f"{NON_FINITE} (NaN or inf) in flow_pairs"
    assert rows.loc["ok", "flow"] == 1.5 and pd.isna(rows.loc["ok", "error"])
    assert rows.loc["nan", "frame_indices"] == [0, 10, 20, 30]  # what is not a model output stays


def test_the_schedule_retries_a_non_finite_batch_once_then_reports_it(meta, vidscore_env, fixtures, tmp_path,
                                                                     monkeypatch) -> None:  # fmt: skip
    settings, store = vidscore_env
    aesthetic = nan_weights(fixtures / "weights/aesthetic_random_scaled.pth", tmp_path / "a.pth")
    monkeypatch.setenv("VIDSCORE_AESTHETIC_WEIGHTS", str(aesthetic))
    monkeypatch.setenv("VIDSCORE_FLOW_BACKEND", "dis")
    resources = {"vidscore": VidscoreSettings(home=str(settings.home), weights={"aesthetic": str(aesthetic)}),
                 "scoring": ScoringOptions(score_options={"flow": {"backend": "dis"}})}  # fmt: skip
    with dg.instance_for_test() as instance:
        (key,) = (keys := ingest_meta_file(instance, meta, 100)[0])
        assert materialize_batches(instance, keys, BATCH_ASSETS, resources=default_resources())[key]
        rows = store.query_df("SELECT aes, error FROM aesthetic_scores")
        assert rows["aes"].isna().all() and rows["error"].str.startswith(NON_FINITE).all()

        def tick(day: int):
            at = datetime(2026, 1, day, 3, 0, tzinfo=timezone.utc)
            with dg.build_schedule_context(instance=instance, scheduled_execution_time=at, resources=resources) as ctx:
                return score_backfill_schedule(ctx)

        (request,) = tick(2)
        assert request.partition_key == key
        selected = {k.to_user_string() for k in request.asset_selection}
        # The NaN tables are retried; flow, scored cleanly, is not (scores this test never seeded are
        # requested as missing, which is the schedule's other rule).
        assert {"clip_embeddings", "aesthetic_scores", "matching_scores"} <= selected and "flow_scores" not in selected
        assert "retryable errors in 2 rows" in request.tags["vidscore/backfill_reason"]
        # The daemon runs the request; the weights are still NaN, so the rows come back the same.
        retry = defs.resolve_job_def(request.job_name or "score_batch").execute_in_process(
            instance=instance, partition_key=key, tags=request.tags, asset_selection=request.asset_selection
        )
        assert retry.success
        assert store.query_df("SELECT error FROM aesthetic_scores")["error"].str.startswith(NON_FINITE).all()
        skipped = tick(3)  # reported, not retried every day
        assert isinstance(skipped, dg.SkipReason)
        assert f"1 batches keep their errors after a retry (see their rows' `error`): {key}" in skipped.skip_message
