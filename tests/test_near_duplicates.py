"""near_duplicates through Dagster: planted copies group with their original, groups equal brute force,
filtered_videos drops the duplicates and keeps exactly the clips inside the technical limits."""

from __future__ import annotations

from collections import deque
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
from dup_corpus import make_duplicate_corpus

from vidscore_dagster.definitions import defs
from vidscore_dagster.runner import ingest_meta_file, materialize_batches

# With the random-weight fixture CLIP every clip looks alike (unrelated clips reach cosine 0.996),
# but copies are closer still: original/exact copy/re-encode >= 0.99997, the resized copy 0.99957,
# unrelated clips <= 0.99603 (measured on this corpus). 0.9993 separates them; the real ViT-L/14
# uses the default 0.98.
THRESHOLD = 0.9993


def _asset(name: str):
    key = dg.AssetKey(name)
    return [a for a in defs.assets if key in a.keys], [
        c for c in defs.asset_checks if any(k.asset_key == key for k in c.check_keys)
    ]


def _materialize(instance, name: str, config: dict) -> dg.ExecuteInProcessResult:
    assets, checks = _asset(name)
    return dg.materialize([*assets, *checks], instance=instance, resources=defs.resources,
                          run_config={"ops": {name: {"config": config}}})  # fmt: skip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return make_duplicate_corpus(tmp_path_factory.mktemp("dups"))


@pytest.fixture
def scored(vidscore_env, corpus, monkeypatch):
    monkeypatch.setenv("VIDSCORE_FLOW_BACKEND", "dis")
    settings, store = vidscore_env
    instance = dg.DagsterInstance.ephemeral()
    keys, reason = ingest_meta_file(instance, corpus, 3)  # two batches: groups span batches
    assert not reason
    assert all(materialize_batches(instance, keys, ["videos", "clip_embeddings", "aesthetic_scores",
                                                    "flow_scores", "matching_scores"]).values())  # fmt: skip
    return store, instance


def _groups(store) -> dict[str, str]:
    rows = store.query_df("SELECT v.path_original AS name, n.group_id FROM near_duplicates n JOIN videos v USING (video_id, batch)")
    return dict(zip(rows["name"], rows["group_id"], strict=True))


def _brute_force_components(store, same_resolution: bool) -> set[frozenset[str]]:
    """Connected components from the full cosine matrix and a breadth-first search (independent code)."""
    rows = store.query_df(
        "SELECT v.path_original AS name, v.width, v.height, e.embedding FROM clip_embeddings e "
        "JOIN videos v USING (video_id, batch) WHERE e.frame_point = 0.5 AND e.embedding IS NOT NULL"
    )
    x = np.stack([np.asarray(e, dtype=np.float64) for e in rows["embedding"]])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    linked = x @ x.T >= THRESHOLD
    if same_resolution:
        res = (rows["width"].astype(str) + "x" + rows["height"].astype(str)).to_numpy()
        linked &= res[:, None] == res[None, :]
    seen, components = set(), set()
    for start in range(len(rows)):
        if start in seen:
            continue
        queue, members = deque([start]), set()
        seen.add(start)
        while queue:
            i = queue.popleft()
            members.add(rows["name"][i])
            for j in np.flatnonzero(linked[i]):
                if j not in seen:
                    seen.add(j)
                    queue.append(j)
        components.add(frozenset(members))
    return components


def test_copies_group_with_their_original_and_one_is_kept(scored):
    store, instance = scored
    result = _materialize(instance, "near_duplicates", {"threshold": THRESHOLD})
    assert result.success
    checks = {e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
              for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"}  # fmt: skip
    assert checks == {"near_duplicates_one_row_per_clip": True, "near_duplicates_one_keep_per_group": True}
    groups = _groups(store)
    assert groups["original.mp4"] == groups["exact_copy.mp4"] == groups["reencoded.mp4"]
    assert groups["resized.mp4"] != groups["original.mp4"]  # another resolution (default rule)
    assert len({groups["original.mp4"], groups["different_0.mp4"], groups["different_1.mp4"]}) == 3
    # The kept clip of the copies' group is the one with the highest aes (ties: smallest video_id).
    rows = store.query_df(
        "SELECT v.path_original AS name, n.video_id, n.keep, a.aes FROM near_duplicates n "
        "JOIN videos v USING (video_id, batch) JOIN aesthetic_scores a USING (video_id, batch) "
        "WHERE n.group_id = ?", [groups["original.mp4"]],
    )  # fmt: skip
    expected = rows.sort_values(["aes", "video_id"], ascending=[False, True]).iloc[0]["name"]
    assert rows.loc[rows["keep"], "name"].tolist() == [expected]
    assert _brute_force_components(store, True) == {
        frozenset(n for n, g in groups.items() if g == group) for group in set(groups.values())
    }
    lineage = store.query_df("SELECT DISTINCT threshold, same_resolution, method, model FROM near_duplicates")
    assert lineage.to_dict("records") == [{"threshold": THRESHOLD, "same_resolution": True, "method": "exact",
                                           "model": "clip:clip_tiny_openai.pt"}]  # fmt: skip


def test_a_resized_copy_joins_only_across_resolutions(scored):
    store, instance = scored
    assert _materialize(instance, "near_duplicates", {"threshold": THRESHOLD, "same_resolution": False}).success
    groups = _groups(store)
    assert groups["resized.mp4"] == groups["original.mp4"] == groups["reencoded.mp4"]
    assert groups["different_0.mp4"] != groups["original.mp4"] != groups["different_1.mp4"]
    assert _brute_force_components(store, False) == {
        frozenset(n for n, g in groups.items() if g == group) for group in set(groups.values())
    }


def test_filtered_videos_drops_duplicates_and_applies_technical_limits(scored):
    store, instance = scored
    assert _materialize(instance, "near_duplicates", {"threshold": THRESHOLD}).success
    assert _materialize(instance, "filtered_videos", {"preset": "unique", "dedup": True, "keep_unscored": True}).success
    kept = set(store.query_df("SELECT video_id FROM filtered_videos WHERE preset = 'unique'")["video_id"])
    keepers = store.query_df("SELECT video_id, keep FROM near_duplicates")
    assert kept == set(keepers.loc[keepers["keep"], "video_id"])  # 6 clips, 2 duplicates dropped
    assert len(kept) == 4

    limits = {"hwmax": 256 * 160, "aspect_min": 0.6, "fmin": 24, "duration_max": 3.0}
    assert _materialize(instance, "filtered_videos", {"preset": "small", **limits}).success
    videos = store.read("videos")
    inside = videos[(videos["height"] * videos["width"] <= limits["hwmax"])
                    & (videos["height"] / videos["width"] >= limits["aspect_min"])
                    & (videos["num_frames"] >= limits["fmin"]) & (videos["duration_s"] <= limits["duration_max"])]  # fmt: skip
    got = store.query_df("SELECT video_id FROM filtered_videos WHERE preset = 'small'")["video_id"]
    assert sorted(got) == sorted(inside["video_id"]) and list(inside["path_original"]) == ["resized.mp4"]
    with pytest.raises(Exception, match="above"):
        _materialize(instance, "filtered_videos", {"preset": "bad", "fmin": 30, "fmax": 10})
    assert pd.isna(store.query_df("SELECT max(video_id) AS m FROM filtered_videos WHERE preset = 'bad'")["m"][0])
