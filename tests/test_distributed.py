"""Several processes on one machine: torchrun ranks each score a shard and write their own part.

On CPU with the gloo backend and 2 ranks, launched from the Dagster step through dagster-pipes,
the published rows equal those of the single-process step.
"""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from vidscore_core.media.synth import make_demo_corpus
from vidscore_core.scoring import distributed
from vidscore_core.tables.store import TableStore
from vidscore_dagster.defs.resources import default_resources
from vidscore_dagster.runner import ingest_meta_file, materialize_batches

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


def _tables(store: TableStore) -> dict[str, pd.DataFrame]:
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

    single_home = tmp_path / "single"
    monkeypatch.setenv("VIDSCORE_HOME", str(single_home))
    single_store = TableStore(single_home / "tables")
    instance = dg.DagsterInstance.ephemeral()
    (key,), _ = ingest_meta_file(instance, meta, 5000)
    assert materialize_batches(instance, [key], ASSETS, resources=default_resources())[key]
    expected = _tables(single_store)

    monkeypatch.setenv("VIDSCORE_HOME", str(settings.home))
    monkeypatch.setenv("VIDSCORE_NUM_PROCESSES", "2")
    resources = default_resources()
    assert resources["scoring"].resolved()["num_processes"] == 2
    instance = dg.DagsterInstance.ephemeral()
    assert ingest_meta_file(instance, meta, 5000)[0] == [key]
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
        if e.user_message and e.step_key == "per_clip_scores"
    ]
    assert any(m.startswith("[rank 0/2]") for m in messages) and any(
        m.startswith("[rank 1/2]") for m in messages
    )
    assert any("all 2 ranks wrote 8 clips" in m for m in messages)
    # The parts were published as the batch's one file; no torchrun scratch is left behind.
    table_dir = settings.home / "tables/clip_embeddings"
    assert sorted(p.name for p in table_dir.iterdir()) == ["batch=!schema", f"batch={key}"]
    assert len(list((table_dir / f"batch={key}").iterdir())) == 1
    assert not [p for p in settings.work_dir.rglob("*") if p.is_file()]
