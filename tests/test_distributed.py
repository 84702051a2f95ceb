"""Several processes on one machine: torchrun ranks each score a shard and stage their own part.

On CPU with the gloo backend and 2 ranks, launched from the Dagster step through dagster-pipes,
the committed rows equal those of the single-process step.
"""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from vidscore_core import distributed
from vidscore_core.ingest import stage_manifests
from vidscore_core.settings import Settings
from vidscore_core.store import Store
from vidscore_core.synth import make_demo_corpus
from vidscore_dagster.defs.resources import default_resources
from vidscore_dagster.runner import materialize_batches, register_batches

ASSETS = ["videos", "clip_embeddings", "aesthetic_scores", "matching_scores", "flow_scores"]


@pytest.mark.parametrize("n", [0, 1, 2, 7, 8, 5001])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shards_are_disjoint_contiguous_and_balanced(n, world):
    bounds = [distributed.shard_bounds(n, r, world) for r in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:], strict=False))
    sizes = [stop - start for start, stop in bounds]
    assert max(sizes) - min(sizes) <= 1
    frame = pd.DataFrame({"i": range(n)})
    assert pd.concat([distributed.shard(frame, r, world) for r in range(world)])["i"].tolist() == list(
        range(n)
    )
    with pytest.raises(ValueError):
        distributed.shard_bounds(n, world, world)


def test_leftover_rank_parts_are_found_in_rank_order_and_cleared(vidscore_env):
    settings, store = vidscore_env
    frame = pd.DataFrame({"video_id": ["a"], "num_frames": [3]})
    for rank in (10, 2, 0, 1):
        store.stage(frame, "flow_scores", "b-1", settings.staging_dir, part=distributed.part_name(rank))
    store.stage(frame, "flow_scores", "b-10", settings.staging_dir, part="rank0")  # another batch
    found = distributed.existing_parts(settings.staging_dir, "flow_scores", "b-1")
    assert [p.name for p in found] == [f"b-1@rank{r}.parquet" for r in (0, 1, 2, 10)]
    assert distributed.clear_parts(settings.staging_dir, "flow_scores", "b-1") == 4
    assert [p.name for p in (settings.staging_dir / "flow_scores").iterdir()] == ["b-10@rank0.parquet"]


def _tables(store: Store) -> dict[str, pd.DataFrame]:
    out = {}
    for table, cols in {
        "clip_embeddings": ["video_id", "frame_index", "embedding", "error"],
        "aesthetic_scores": ["video_id", "aes", "aes_frames", "error"],
        "matching_scores": ["video_id", "match", "error"],
        "flow_scores": ["video_id", "flow", "flow_pairs", "error", "backend", "code_version"],
    }.items():
        quoted = ", ".join(f'"{c}"' for c in cols)
        frame = store.query_df(f"SELECT {quoted} FROM {table}")
        out[table] = frame.sort_values(cols[:2], na_position="first").reset_index(drop=True)
    return out


def _close(a: object, b: object) -> bool:
    if isinstance(a, (list, np.ndarray)) or isinstance(b, (list, np.ndarray)):
        if not isinstance(a, (list, np.ndarray)) or not isinstance(b, (list, np.ndarray)):
            return False
        return np.allclose(np.asarray(a, dtype=float), np.asarray(b, dtype=float), rtol=1e-6, atol=1e-6)
    if pd.isna(a) or pd.isna(b):
        return bool(pd.isna(a) and pd.isna(b))
    if isinstance(a, (float, np.floating)):
        return bool(np.isclose(a, b, rtol=1e-6, atol=1e-6))
    return a == b


def test_two_gloo_ranks_give_the_single_process_scores(vidscore_env, tmp_path, monkeypatch):
    settings, store = vidscore_env
    monkeypatch.setenv("VIDSCORE_FLOW_BACKEND", "dis")
    meta = make_demo_corpus(tmp_path / "corpus")
    (key,) = stage_manifests(meta, settings)

    single_home = tmp_path / "single"
    monkeypatch.setenv("VIDSCORE_HOME", str(single_home))
    single_store = Store(single_home / "vidscore.duckdb")
    stage_manifests(meta, Settings.from_env())
    instance = dg.DagsterInstance.ephemeral()
    register_batches(instance, [key])
    assert materialize_batches(instance, [key], ASSETS, resources=default_resources())[key]
    expected = _tables(single_store)

    monkeypatch.setenv("VIDSCORE_HOME", str(settings.home))
    monkeypatch.setenv("VIDSCORE_NUM_PROCESSES", "2")
    resources = default_resources()
    assert resources["scoring"].num_processes == 2
    instance = dg.DagsterInstance.ephemeral()
    register_batches(instance, [key])
    assert materialize_batches(instance, [key], ASSETS, resources=resources)[key]
    got = _tables(store)

    for table, frame in expected.items():
        assert len(got[table]) == len(frame), table
        for column in frame.columns:
            pairs = zip(frame[column], got[table][column], strict=True)
            assert all(_close(a, b) for a, b in pairs), (table, column)
    # Each rank reported its progress through dagster-pipes into the step's log.
    messages = [
        e.user_message
        for e in instance.all_logs(instance.get_runs()[0].run_id)
        if e.user_message and e.step_key == "clip_embeddings.clip_embeddings_stage"
    ]
    assert any(m.startswith("[rank 0/2]") for m in messages) and any(
        m.startswith("[rank 1/2]") for m in messages
    )
    assert any("all 2 ranks staged 8 clips" in m for m in messages)
    # Parts were committed together and removed; no torchrun scratch is left behind.
    assert not list(settings.staging_dir.rglob("*@rank*.parquet"))
    assert not list((settings.staging_dir / "_torchrun").iterdir())


def test_rank_parts_left_by_a_crash_are_committed_together(vidscore_env, fixtures, monkeypatch):
    """torchrun finished staging, the step died before committing: the next run commits the parts."""
    from vidscore_core.scoring.jobs import FlowJob, clips_from_frame
    from vidscore_core.scoring.options import JobOptions

    settings, store = vidscore_env
    monkeypatch.setenv("VIDSCORE_FLOW_BACKEND", "dis")
    instance = dg.DagsterInstance.ephemeral()
    (key,) = stage_manifests(fixtures / "media/meta.csv", settings)
    register_batches(instance, [key])
    assert materialize_batches(instance, [key], ["videos"], resources=default_resources())[key]
    videos = store.query_df(
        "SELECT video_id, path, text FROM videos WHERE batch = ? ORDER BY meta_row", [key]
    )
    job = FlowJob(settings, JobOptions(device="cpu", num_workers=0), "dis")
    frame = job.rows(job.score(clips_from_frame(videos)), key)
    frame["flow"] = frame["flow"].where(frame["flow"].isna(), 7.0)  # a value recomputation would not give
    for rank in range(2):
        part = distributed.shard(frame, rank, 2)
        store.stage(part, "flow_scores", key, settings.staging_dir, part=distributed.part_name(rank))
    assert materialize_batches(instance, [key], ["flow_scores"], resources=default_resources())[key]
    committed = store.query_df("SELECT flow FROM flow_scores WHERE batch = ?", [key])
    assert len(committed) == len(videos) and set(committed["flow"].dropna()) == {7.0}
    assert not distributed.existing_parts(settings.staging_dir, "flow_scores", key)
