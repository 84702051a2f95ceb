"""Near-duplicate groups over clip embeddings, without the O(n^2) self-join at corpus scale.

Two clips are near-duplicates when the cosine of their embeddings is >= ``threshold`` (and, when
resolutions are given, they have the same resolution, as Open-Sora does). Groups are the connected
components of that graph, so chains (A~B, B~C, A!~C) form one group: a clip re-encoded twice drifts
a little each time and must still land with its original.

Every method is a *candidate* search followed by one exact re-check. The search runs on the rows
normalised and projected onto their first ``PROJECTED_DIM`` principal axes (fitted on the first
``PCA_SAMPLE`` rows): an orthonormal projection never lengthens a distance, and for unit vectors
cosine >= t is distance^2 <= 2 - 2t, so every true pair is within that radius in the projection
too. The projection is what makes 10 M clips fit: 256 bytes a row instead of 3 KiB, and rows can
arrive in chunks (``EmbeddingChunks``) that are read twice, never held whole. The re-check computes
the cosine in float64 from the original float32 rows for each candidate pair and keeps it only
when >= ``threshold``: all methods share one decision rule, and no method can ever report a pair
below the threshold; the approximate method can only miss pairs (recall), never invent them.

* ``"exact"``: blockwise distances over upper-triangle tiles (torch; one tile at a time): every
  pair within the radius, so complete by construction. Used for small corpora and whenever a
  CUDA device is given.
* ``"ivf"``: a faiss inverted-file index (k-means lists, L2) and a range search per row over
  ``nprobe`` lists. Pairs are searched from both ends, which raises recall further.
* ``"auto"``: exact when ``n <= EXACT_MAX_N`` or the device is CUDA; ivf otherwise. With
  ``resolution`` the choice is made per resolution, and ``method`` reports what ran (e.g.
  ``"exact+ivf"``).

Group ids: the smallest video id in the component when ``video_ids`` are given (stable across runs
and across row order), else the smallest row index.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DEFAULT_THRESHOLD = 0.98
# Largest partition searched exactly under method="auto" on CPU: exact grows as n^2, ivf as ~n^1.5
# (bench/results/dedup-cpu-2core.md).
EXACT_MAX_N = 20_000
# Dimensions the search runs in, and the rows the principal axes are fitted on. 64 keeps unrelated
# random 768-d rows far outside the radius (their projected distance^2 is ~ 2 * chi2_64 / 768) and
# real CLIP embeddings, whose variance sits in few axes, further still.
PROJECTED_DIM = 64
PCA_SAMPLE = 65_536
CHUNK_ROWS = 65_536
# Float32 rounding of the projected distances is far below this; candidates are re-checked exactly.
_SLACK = 1e-3


@dataclass(frozen=True)
class EmbeddingChunks:
    """n rows of embeddings too large to hold at once: ``read()`` yields ``(rows, x)`` chunks, rows
    the row numbers (0..n-1, each exactly once) and x their (k, d) float32 embeddings. It is called
    twice: once to project every row, once to fetch the rows of candidate pairs."""

    n: int
    read: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]]

    @classmethod
    def of(cls, x: np.ndarray, chunk: int = CHUNK_ROWS) -> EmbeddingChunks:
        def read() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for s in range(0, x.shape[0], chunk):
                yield np.arange(s, min(s + chunk, x.shape[0]), dtype=np.int64), x[s : s + chunk]

        return cls(int(x.shape[0]), read)


@dataclass
class DedupResult:
    """Groups for every input row plus what lineage needs to reproduce them."""

    group_id: np.ndarray  # (n,) smallest video id (or row index) of each row's component
    component: np.ndarray  # (n,) int64 dense component label, 0..n_groups-1 (order of group_id)
    edges: np.ndarray  # (m, 2) int64 row-index pairs i < j with cosine >= threshold
    cosine: np.ndarray  # (m,) float64 exact cosine of each edge
    n_groups: int
    method: str  # method actually used: "exact", "ivf", or "exact+ivf" (per resolution partition)
    threshold: float
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def n_edges(self) -> int:
        return int(self.edges.shape[0])


def near_duplicate_groups(
    embeddings: np.ndarray | EmbeddingChunks,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    resolution: Sequence[Hashable] | np.ndarray | None = None,
    video_ids: Sequence[Any] | np.ndarray | None = None,
    method: str = "auto",
    device: str | None = None,
    block_size: int | None = None,
    nlist: int | None = None,
    nprobe: int | None = None,
    seed: int = 0,
) -> DedupResult:
    """Connected components of the graph {cosine >= threshold [and same resolution]}.

    ``embeddings`` is an (n, d) array or ``EmbeddingChunks`` (rows need not be normalised: the
    search normalises them, the re-check uses the true cosine, and zero rows never match).
    ``resolution`` restricts edges to rows with equal values (e.g. "1280x720"); each resolution is
    searched on its own, which is both exact for the restriction and cheaper (a missing resolution,
    None, is a value of its own: such clips only match each other). ``device="cuda"`` runs the
    exact search on that GPU. ``block_size`` is the exact-search tile edge (default 4096 on CPU,
    16384 on CUDA). ``nlist``/``nprobe`` override the ivf defaults.
    """
    if isinstance(embeddings, np.ndarray) or not isinstance(embeddings, EmbeddingChunks):
        x = np.asarray(embeddings)
        if x.ndim != 2:
            raise ValueError(f"embeddings must be (n, d), got shape {x.shape}")
        source = EmbeddingChunks.of(x)
    else:
        x, source = None, embeddings
    if method not in ("auto", "exact", "ivf"):
        raise ValueError(f"method must be 'auto', 'exact' or 'ivf', got {method!r}")
    if not -1.0 <= threshold <= 1.0:
        raise ValueError(f"threshold must be a cosine in [-1, 1], got {threshold}")
    n = source.n
    y = project(source, seed=seed)
    cut = float(2.0 - 2.0 * threshold + _SLACK)  # squared distance of unit rows at the threshold

    if resolution is None:
        partitions = [np.arange(n, dtype=np.int64)]
    else:
        res = np.asarray(resolution, dtype=object)
        if res.shape != (n,):
            raise ValueError(f"resolution must have one value per row ({n}), got shape {res.shape}")
        _, res_code = np.unique(res.astype(str), return_inverse=True)
        order = np.argsort(res_code, kind="stable")
        bounds = np.flatnonzero(np.diff(res_code[order])) + 1
        partitions = np.split(order.astype(np.int64), bounds) if n else []

    used: set[str] = set()
    params: dict[str, Any] = {"same_resolution": resolution is not None, "projected_dim": int(y.shape[1])}
    pair_chunks: list[np.ndarray] = []
    for rows in partitions:
        if rows.size < 2:
            continue
        part_method = _resolve_method(method, rows.size, device)
        used.add(part_method)
        sub = y[rows] if rows.size != n else y
        if part_method == "exact":
            cand = _exact_candidates(sub, cut, device=device, block_size=block_size)
            params.setdefault("device", str(device or "cpu"))
            params.setdefault("block_size", block_size or (16384 if _is_cuda(device) else 4096))
        else:
            cand, ivf_params = _ivf_candidates(sub, cut, nlist=nlist, nprobe=nprobe, seed=seed)
            params.setdefault("ivf", []).append(ivf_params)
        del sub
        if cand.size:
            pair_chunks.append(rows[cand])
    del y

    cand_pairs = np.concatenate(pair_chunks) if pair_chunks else np.empty((0, 2), np.int64)
    cos = pair_cosine(x, cand_pairs) if x is not None else _chunked_pair_cosine(source, cand_pairs)
    keep = cos >= threshold
    edges, cos = cand_pairs[keep], cos[keep]
    params["n_candidates"] = int(cand_pairs.shape[0])

    component, n_groups = connected_components(n, edges)
    group_id = _group_ids(component, n_groups, video_ids)
    return DedupResult(
        group_id=group_id,
        component=component,
        edges=edges,
        cosine=cos,
        n_groups=n_groups,
        method="+".join(sorted(used)) if used else _resolve_method(method, n, device),
        threshold=float(threshold),
        params=params,
    )


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1 (float32); zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    return (x / np.where(norms > 0, norms, 1.0)[:, None]).astype(np.float32, copy=False)


def project(source: EmbeddingChunks, *, seed: int = 0) -> np.ndarray:
    """(n, PROJECTED_DIM) float32: every row normalised, then projected onto the principal axes of
    the first PCA_SAMPLE rows (rows of at most PROJECTED_DIM dimensions are only normalised).
    One pass over the chunks; only the sample and the projection are held."""
    y: np.ndarray | None = None
    axes: np.ndarray | None = None
    waiting: list[tuple[np.ndarray, np.ndarray]] = []  # rows read before the axes are fitted
    held = 0

    def place(rows: np.ndarray, unit: np.ndarray) -> None:
        nonlocal y
        out = unit if axes is None else unit @ axes
        if y is None:
            y = np.zeros((source.n, out.shape[1]), dtype=np.float32)
        y[rows] = out

    for rows, x in source.read():
        if x.shape[0] == 0:
            continue
        unit = _unit_rows(x)
        if axes is None and unit.shape[1] > PROJECTED_DIM:
            waiting.append((np.asarray(rows, dtype=np.int64), unit))
            held += unit.shape[0]
            if held < min(PCA_SAMPLE, source.n):
                continue
            axes = principal_axes(np.concatenate([u for _, u in waiting])[:PCA_SAMPLE], PROJECTED_DIM)
            for r, u in waiting:
                place(r, u)
            waiting = []
        else:
            place(np.asarray(rows, dtype=np.int64), unit)
    if waiting:  # fewer rows than the sample: fit on all of them
        axes = principal_axes(np.concatenate([u for _, u in waiting]), PROJECTED_DIM)
        for r, u in waiting:
            place(r, u)
    return y if y is not None else np.zeros((source.n, 1), dtype=np.float32)


def principal_axes(sample: np.ndarray, k: int) -> np.ndarray:
    """(d, k) orthonormal columns: the k directions of largest variance of the sample."""
    centred = sample.astype(np.float64) - sample.mean(axis=0, dtype=np.float64)
    _, vectors = np.linalg.eigh(centred.T @ centred)
    return np.ascontiguousarray(vectors[:, ::-1][:, :k], dtype=np.float32)


def _chunked_pair_cosine(source: EmbeddingChunks, pairs: np.ndarray) -> np.ndarray:
    """`pair_cosine` for rows that come in chunks: one pass keeps only the rows of the pairs."""
    needed = np.unique(pairs)
    if needed.size == 0:
        return np.empty(0, dtype=np.float64)
    held: np.ndarray | None = None
    for rows, x in source.read():
        rows = np.asarray(rows, dtype=np.int64)
        pos = np.searchsorted(needed, rows)
        hit = (pos < needed.size) & (needed[np.minimum(pos, needed.size - 1)] == rows)
        if hit.any():
            if held is None:
                held = np.zeros((needed.size, x.shape[1]), dtype=np.float32)
            held[pos[hit]] = x[hit]
    assert held is not None
    return pair_cosine(held, np.searchsorted(needed, pairs))


def choose_keep(
    group_ids: Sequence[Any] | np.ndarray,
    aes: Sequence[Any] | np.ndarray,
    video_ids: Sequence[Any] | np.ndarray,
) -> np.ndarray:
    """One ``True`` per group: the highest ``aes`` (NULL/NaN counts as lowest), ties broken by the
    smallest ``video_id``, so the kept clip is the best-looking one and the choice is stable."""
    groups = np.asarray(group_ids, dtype=object) if not isinstance(group_ids, np.ndarray) else group_ids
    n = len(groups)
    if len(aes) != n or len(video_ids) != n:
        raise ValueError("group_ids, aes and video_ids must have the same length")
    if n == 0:
        return np.zeros(0, dtype=bool)
    score = _as_float(aes)
    neg = np.where(np.isnan(score), np.inf, -score)  # NaN sorts after every real score
    _, grp_rank = np.unique(_sortable(groups), return_inverse=True)
    _, vid_rank = np.unique(_sortable(video_ids), return_inverse=True)
    order = np.lexsort((vid_rank.ravel(), neg, grp_rank.ravel()))
    g_sorted = grp_rank.ravel()[order]
    first = np.ones(n, dtype=bool)
    first[1:] = g_sorted[1:] != g_sorted[:-1]
    keep = np.zeros(n, dtype=bool)
    keep[order[first]] = True
    return keep


def pair_cosine(
    x: np.ndarray, pairs: np.ndarray, *, norms: np.ndarray | None = None, chunk: int = 65536
) -> np.ndarray:
    """Exact cosine (float64 arithmetic on the given rows) for each (i, j) row pair.

    This is the single decision rule behind every method; zero rows give cosine 0.
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    out = np.empty(pairs.shape[0], dtype=np.float64)
    if norms is None:
        norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    for s in range(0, pairs.shape[0], chunk):
        i, j = pairs[s : s + chunk, 0], pairs[s : s + chunk, 1]
        dots = np.einsum("ij,ij->i", x[i].astype(np.float64), x[j].astype(np.float64))
        den = norms[i] * norms[j]
        out[s : s + chunk] = np.divide(dots, den, out=np.zeros_like(dots), where=den > 0)
    return out


def connected_components(n: int, edges: np.ndarray) -> tuple[np.ndarray, int]:
    """Dense component labels (numbered by smallest member row) and the number of components."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as _cc

    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    graph = coo_matrix((np.ones(edges.shape[0], dtype=np.int8), (edges[:, 0], edges[:, 1])), shape=(n, n))
    n_comp, labels = _cc(graph, directed=False)
    # Renumber so label order follows each component's smallest row: independent of scipy internals.
    first_row = np.full(n_comp, n, dtype=np.int64)
    np.minimum.at(first_row, labels, np.arange(n, dtype=np.int64))
    rank = np.empty(n_comp, dtype=np.int64)
    rank[np.argsort(first_row, kind="stable")] = np.arange(n_comp)
    return rank[labels].astype(np.int64), int(n_comp)


def _resolve_method(method: str, n: int, device: str | None) -> str:
    if method != "auto":
        return method
    if _is_cuda(device) or n <= EXACT_MAX_N:
        return "exact"
    return "ivf"


def _is_cuda(device: Any) -> bool:
    return device is not None and str(device).startswith("cuda")


def _exact_candidates(y: np.ndarray, cut: float, *, device: str | None, block_size: int | None) -> np.ndarray:
    """All pairs i < j whose squared distance is <= cut, over upper-triangle tiles of
    block_size^2 (memory: one tile at a time; torch uses every CPU thread)."""
    import torch

    n = y.shape[0]
    block_size = block_size or (16384 if _is_cuda(device) else 4096)
    dev = torch.device(device if device is not None else "cpu")
    yt = torch.from_numpy(np.ascontiguousarray(y)).to(dev)
    sq = (yt * yt).sum(dim=1)
    found: list[torch.Tensor] = []
    with torch.inference_mode():
        for a in range(0, n, block_size):
            ya, sa = yt[a : a + block_size], sq[a : a + block_size]
            for b in range(a, n, block_size):
                dist = sa[:, None] + sq[b : b + block_size][None, :] - 2.0 * (ya @ yt[b : b + block_size].T)
                hit = dist <= cut
                if a == b:
                    hit = torch.triu(hit, diagonal=1)
                idx = hit.nonzero()
                if idx.numel():
                    idx[:, 0] += a
                    idx[:, 1] += b
                    found.append(idx.cpu())
    if not found:
        return np.empty((0, 2), np.int64)
    return torch.cat(found).numpy().astype(np.int64)


def default_nlist(n: int) -> int:
    """About 4 sqrt(n) lists (faiss guidance), never fewer than 39 training rows per list."""
    return max(1, min(int(round(4 * math.sqrt(n))), n // 39))


def default_nprobe(nlist: int) -> int:
    """Lists probed per row; both ends of every pair are searched (bench/results/dedup-*.md)."""
    return max(1, min(nlist, 8))


def _ivf_candidates(
    y: np.ndarray, cut: float, *, nlist: int | None, nprobe: int | None, seed: int
) -> tuple[np.ndarray, dict[str, Any]]:
    """Candidate pairs (i < j, each once) from a faiss IVF-Flat L2 range search at radius^2 cut."""
    import faiss

    y = np.ascontiguousarray(y, dtype=np.float32)
    n, d = y.shape
    nl = max(1, min(nlist or default_nlist(n), n))
    npb = max(1, min(nprobe or default_nprobe(nl), nl))
    quantizer = faiss.IndexFlatL2(d)
    index = faiss.IndexIVFFlat(quantizer, d, nl, faiss.METRIC_L2)
    index.cp.niter = 10
    index.cp.seed = seed
    train_n = min(n, 40 * nl)
    rng = np.random.default_rng(seed)
    sample = y if train_n == n else y[np.sort(rng.choice(n, size=train_n, replace=False))]
    index.train(sample)
    del sample
    # One coarse-quantizer pass per chunk serves both the add (nearest list) and the search
    # (nprobe nearest lists): the queries are the corpus itself.
    step = CHUNK_ROWS
    probe_d = np.empty((n, npb), dtype=np.float32)
    probe_i = np.empty((n, npb), dtype=np.int64)
    for s in range(0, n, step):
        probe_d[s : s + step], probe_i[s : s + step] = quantizer.search(y[s : s + step], npb)
        ys = y[s : s + step]
        assign = np.ascontiguousarray(probe_i[s : s + step, 0])
        ids = np.arange(s, s + ys.shape[0], dtype=np.int64)
        index.add_core(ys.shape[0], faiss.swig_ptr(ys), faiss.swig_ptr(ids), faiss.swig_ptr(assign))
    if index.ntotal != n:
        raise RuntimeError(f"faiss index holds {index.ntotal} rows, expected {n}")
    index.nprobe = npb
    chunks: list[np.ndarray] = []
    for s in range(0, n, step):
        lims, _, labels = index.range_search_preassigned(y[s : s + step], cut, probe_i[s : s + step], probe_d[s : s + step])
        counts = np.diff(lims).astype(np.int64)
        qi = np.repeat(np.arange(s, s + counts.size, dtype=np.int64), counts)
        lj = labels.astype(np.int64)
        other = qi != lj
        if other.any():
            a, b = qi[other], lj[other]
            chunks.append(np.unique(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1), axis=0))
    params = {"nlist": nl, "nprobe": npb, "train_rows": int(train_n), "niter": 10, "radius2": cut}
    if not chunks:
        return np.empty((0, 2), np.int64), params
    return np.unique(np.concatenate(chunks), axis=0), params  # found from both ends: each pair once


def _group_ids(
    component: np.ndarray, n_groups: int, video_ids: Sequence[Any] | np.ndarray | None
) -> np.ndarray:
    n = component.shape[0]
    if video_ids is None:
        first_row = np.full(n_groups, n, dtype=np.int64)
        np.minimum.at(first_row, component, np.arange(n, dtype=np.int64))
        return first_row[component]
    vids = np.asarray(video_ids) if not isinstance(video_ids, np.ndarray) else video_ids
    if vids.shape[0] != n:
        raise ValueError(f"video_ids must have one value per row ({n}), got {vids.shape[0]}")
    _, vid_rank = np.unique(_sortable(vids), return_inverse=True)
    order = np.lexsort((vid_rank.ravel(), component))
    c_sorted = component[order]
    first = np.ones(n, dtype=bool)
    first[1:] = c_sorted[1:] != c_sorted[:-1]
    smallest = np.empty(n_groups, dtype=np.int64)
    smallest[c_sorted[first]] = order[first]
    return vids[smallest[component]]


def _sortable(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    """An array np.unique can sort: numbers stay numbers, anything else compares as str."""
    arr = np.asarray(values)
    if arr.dtype.kind in "biufUS":
        return arr
    flat = list(arr.ravel())
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in flat):
        return np.asarray(flat, dtype=np.int64)
    return np.asarray([str(v) for v in flat], dtype=str)


def _as_float(values: Sequence[Any] | np.ndarray) -> np.ndarray:
    try:
        return np.asarray(values, dtype=np.float64).ravel()
    except (TypeError, ValueError):
        import pandas as pd

        return pd.to_numeric(pd.Series(list(values), dtype=object), errors="coerce").to_numpy(np.float64)
