"""vidscore_core.curation.dedup: groups equal brute-force connected components, for every method.

The reference here shares no code with the library: a full n x n float64 cosine matrix and a
plain breadth-first search.
"""

from __future__ import annotations

import subprocess
import sys
from collections import deque

import numpy as np
import pytest

from vidscore_core.curation.dedup import DedupResult, choose_keep, near_duplicate_groups

THR = 0.98
D = 48


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _copy_at(base: np.ndarray, cos: float, rng: np.random.Generator) -> np.ndarray:
    """A unit vector whose cosine with the unit vector `base` is exactly `cos` (up to rounding)."""
    u = rng.standard_normal(base.shape[0])
    u -= (u @ base) * base
    u /= np.linalg.norm(u)
    return cos * base + np.sqrt(1 - cos * cos) * u


def _corpus(seed: int = 0, n_random: int = 1500) -> np.ndarray:
    """Random unit vectors plus planted groups of 2-5, chains and pairs just below the threshold,
    shuffled."""
    rng = np.random.default_rng(seed)
    rows = list(_unit(rng.standard_normal((n_random, D))))
    for _ in range(40):  # star groups: copies at 0.985-0.999 of an original
        base = _unit(rng.standard_normal(D))
        rows.append(base)
        rows.extend(_copy_at(base, rng.uniform(0.985, 0.999), rng) for _ in range(rng.integers(1, 5)))
    for _ in range(15):  # chains A~B~C~D with consecutive cosine 0.985, A and C at cos(2t) < 0.98
        a = _unit(rng.standard_normal(D))
        u = _unit(rng.standard_normal(D) - (rng.standard_normal(D) @ a) * a)
        u = _unit(u - (u @ a) * a)
        t = np.arccos(0.985)
        rows.extend(np.cos(k * t) * a + np.sin(k * t) * u for k in range(4))
    for _ in range(15):  # near misses: 0.97-0.978 must stay apart
        base = _unit(rng.standard_normal(D))
        rows.extend([base, _copy_at(base, rng.uniform(0.97, 0.978), rng)])
    x = np.asarray(rows, dtype=np.float32)
    return x[rng.permutation(len(x))]


def _brute_components(x: np.ndarray, thr: float, resolution=None) -> tuple[np.ndarray, set]:
    """Smallest-row label of each row's component, and the edge set, from the full cosine matrix."""
    x64 = x.astype(np.float64)
    x64 /= np.linalg.norm(x64, axis=1, keepdims=True)
    adj = (x64 @ x64.T) >= thr
    np.fill_diagonal(adj, False)
    if resolution is not None:
        res = np.asarray(resolution)
        adj &= res[:, None] == res[None, :]
    n = len(x)
    label = np.full(n, -1)
    for start in range(n):
        if label[start] >= 0:
            continue
        label[start] = start  # rows are visited in order, so `start` is the smallest member
        queue = deque([start])
        while queue:
            i = queue.popleft()
            for j in np.flatnonzero(adj[i]):
                if label[j] < 0:
                    label[j] = start
                    queue.append(j)
    edges = {(int(i), int(j)) for i, j in zip(*np.nonzero(np.triu(adj, 1)), strict=True)}
    return label, edges


def _edge_set(res: DedupResult) -> set:
    return {(int(i), int(j)) for i, j in res.edges}


@pytest.fixture(scope="module")
def corpus() -> np.ndarray:
    return _corpus()


@pytest.fixture(scope="module")
def brute(corpus):
    return _brute_components(corpus, THR)


@pytest.mark.parametrize("method", ["exact", "ivf", "auto"])
def test_groups_equal_brute_force_components(corpus, brute, method):
    label, edges = brute
    res = near_duplicate_groups(corpus, threshold=THR, method=method)
    np.testing.assert_array_equal(res.group_id, label)
    assert res.method == ("exact" if method == "auto" else method)  # small n: auto is exact
    assert res.n_groups == len(np.unique(label))
    assert res.n_edges == len(res.cosine)
    # The planted structure is really there: chains of 4 and groups up to 5.
    assert np.bincount(np.unique(label, return_inverse=True)[1]).max() >= 4
    if method == "ivf":
        assert _edge_set(res) <= edges
    else:
        assert _edge_set(res) == edges


@pytest.mark.parametrize("method", ["exact", "ivf"])
def test_chain_is_one_group(method):
    rng = np.random.default_rng(3)
    noise = _unit(rng.standard_normal((300, D)))
    a = _unit(rng.standard_normal(D))
    u = _unit(rng.standard_normal(D))
    u = _unit(u - (u @ a) * a)
    t = np.arccos(0.99)
    chain = np.stack([np.cos(k * t) * a + np.sin(k * t) * u for k in range(3)])  # A~B, B~C, A!~C
    assert chain[0] @ chain[2] < THR
    x = np.concatenate([chain, noise]).astype(np.float32)
    res = near_duplicate_groups(x, threshold=THR, method=method)
    assert res.group_id[0] == res.group_id[1] == res.group_id[2] == 0
    assert _edge_set(res) == {(0, 1), (1, 2)}
    assert len(np.unique(res.group_id)) == len(x) - 2


@pytest.mark.parametrize("method", ["exact", "ivf"])
def test_no_reported_edge_below_threshold(corpus, method):
    res = near_duplicate_groups(corpus, threshold=THR, method=method)
    x64 = corpus.astype(np.float64)
    a, b = x64[res.edges[:, 0]], x64[res.edges[:, 1]]
    cos = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert res.n_edges > 0
    assert (cos >= THR).all()
    np.testing.assert_allclose(res.cosine, cos, atol=1e-12)
    assert (res.edges[:, 0] < res.edges[:, 1]).all()


@pytest.mark.parametrize("method", ["exact", "ivf"])
def test_same_resolution_splits_groups(corpus, method):
    rng = np.random.default_rng(7)
    resolution = rng.choice(["1280x720", "640x360"], size=len(corpus))
    label, edges = _brute_components(corpus, THR, resolution)
    res = near_duplicate_groups(corpus, threshold=THR, resolution=list(resolution), method=method)
    np.testing.assert_array_equal(res.group_id, label)
    assert res.params["same_resolution"] is True
    # The restriction really removed cross-resolution edges.
    any_res = near_duplicate_groups(corpus, threshold=THR, method=method)
    assert res.n_groups > any_res.n_groups
    assert all(resolution[i] == resolution[j] for i, j in res.edges)
    if method == "exact":
        assert _edge_set(res) == edges


def test_auto_chooses_per_resolution_and_reports_it(corpus, brute, monkeypatch):
    import vidscore_core.curation.dedup as dedup

    monkeypatch.setattr(dedup, "EXACT_MAX_N", 1000)
    resolution = np.where(np.arange(len(corpus)) < 300, "640x360", "1280x720")
    label, _ = _brute_components(corpus, THR, resolution)
    res = near_duplicate_groups(corpus, resolution=resolution)
    assert res.method == "exact+ivf"
    np.testing.assert_array_equal(res.group_id, label)


def test_resized_copy_joins_only_without_resolution():
    rng = np.random.default_rng(11)
    base = _unit(rng.standard_normal(D))
    x = np.stack(
        [base, base, _copy_at(base, 0.99, rng), _copy_at(base, 0.995, rng), _unit(rng.standard_normal(D))]
    )
    res_ids = ["1280x720", "1280x720", "1280x720", "640x360", "1280x720"]
    vids = ["v3", "v1", "v2", "v0", "v4"]
    same = near_duplicate_groups(x.astype(np.float32), resolution=res_ids, video_ids=vids)
    assert list(same.group_id) == ["v1", "v1", "v1", "v0", "v4"]
    anyres = near_duplicate_groups(x.astype(np.float32), video_ids=vids)
    assert list(anyres.group_id) == ["v0", "v0", "v0", "v0", "v4"]


def test_group_id_is_smallest_video_id_and_order_independent(corpus, brute):
    label, _ = brute
    vids = np.array([f"clip{i:05d}" for i in np.random.default_rng(5).permutation(len(corpus))])
    res = near_duplicate_groups(corpus, video_ids=vids)
    for lab in np.unique(label):
        members = label == lab
        assert set(res.group_id[members]) == {min(vids[members])}
    perm = np.random.default_rng(6).permutation(len(corpus))
    shuffled = near_duplicate_groups(corpus[perm], video_ids=vids[perm])
    np.testing.assert_array_equal(shuffled.group_id, res.group_id[perm])
    ints = near_duplicate_groups(corpus[:50], video_ids=list(range(100, 50, -1)))
    assert ints.group_id.dtype.kind == "i"


def test_exact_tiles_and_unnormalised_input(corpus, brute):
    label, edges = brute
    scale = np.random.default_rng(9).uniform(0.5, 3.0, size=(len(corpus), 1)).astype(np.float32)
    res = near_duplicate_groups(corpus * scale, method="exact", block_size=97)
    np.testing.assert_array_equal(res.group_id, label)
    assert _edge_set(res) == edges


def test_zero_rows_and_tiny_inputs():
    x = np.zeros((3, D), dtype=np.float32)
    res = near_duplicate_groups(x)
    assert list(res.group_id) == [0, 1, 2] and res.n_edges == 0
    empty = near_duplicate_groups(np.zeros((0, D), dtype=np.float32))
    assert empty.group_id.shape == (0,) and empty.n_groups == 0
    one = near_duplicate_groups(np.ones((1, D), dtype=np.float32), video_ids=["a"], method="ivf")
    assert list(one.group_id) == ["a"]
    with pytest.raises(ValueError):
        near_duplicate_groups(x, method="lsh")


@pytest.mark.skipif(
    not __import__("torch").cuda.is_available(),
    reason="no CUDA device",  # checked on GPU machines
)
def test_exact_on_cuda_matches_cpu(corpus, brute):
    label, edges = brute
    res = near_duplicate_groups(corpus, method="exact", device="cuda")
    np.testing.assert_array_equal(res.group_id, label)
    assert _edge_set(res) == edges


def test_choose_keep_highest_aes_nan_lowest_ties_by_video_id():
    groups = ["g1", "g1", "g1", "g2", "g2", "g3", "g4", "g4", "g5", "g5"]
    aes = [5.0, 6.5, 6.5, None, 4.0, np.nan, np.nan, np.nan, 3.0, 3.0]
    vids = ["a", "c", "b", "d", "e", "f", "h", "g", "j", "i"]
    keep = choose_keep(groups, aes, vids)
    assert keep.dtype == bool
    # g1: tie at 6.5 -> "b"; g2: NULL loses to 4.0; g3: singleton; g4: all NaN -> smallest id; g5: tie
    assert [v for v, k in zip(vids, keep, strict=True) if k] == ["b", "e", "f", "g", "i"]


def test_choose_keep_exactly_one_per_group(corpus):
    res = near_duplicate_groups(corpus)
    rng = np.random.default_rng(2)
    aes = np.round(rng.uniform(3, 7, len(corpus)), 1)
    aes[rng.random(len(corpus)) < 0.1] = np.nan
    vids = np.arange(len(corpus))[::-1]
    keep = choose_keep(res.group_id, aes, vids)
    kept_groups = res.group_id[keep]
    assert len(kept_groups) == res.n_groups == len(set(kept_groups.tolist()))
    for g in np.unique(res.group_id):
        members = np.flatnonzero(res.group_id == g)
        scores = np.where(np.isnan(aes[members]), -np.inf, aes[members])
        best = members[scores == scores.max()]
        assert keep[members].sum() == 1
        assert members[keep[members]][0] == best[np.argmin(vids[best])]


def test_library_does_not_import_dagster():
    code = "import sys, vidscore_core.curation.dedup; assert 'dagster' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
