"""Near-duplicate search at corpus scale: recall, exactness, wall time and peak memory.

    .venv/bin/python bench/bench_dedup.py --n 1000000 --json bench/results/dedup-cpu-2core.json
    .venv/bin/python bench/bench_dedup.py --n 20000            # quick run
    .venv/bin/python bench/bench_dedup.py --sweep 10000,20000,40000  # exact vs ivf cross-over

Synthetic corpus: n random 768-d unit vectors; ``--dup-frac`` of the rows belong to planted groups
of 2-5 rows: one original (a random vector) plus copies whose cosine with the original is drawn
uniformly from [0.985, 0.999] (x = c*b + sqrt(1-c^2)*u, u a random unit vector orthogonal to b).
Copies of one original may be below 0.98 with each other (c1*c2 ~ 0.97); they are connected through
the original, so every planted group must come out as one component (the chain case).

Figures reported:
* recall of planted pairs: (original, copy) pairs, and every planted pair whose exact cosine is
  >= threshold, found as edges by the run over all n rows;
* false pairs: reported edges whose independently recomputed cosine is below the threshold (must
  be 0) and reported edges that are not planted (random 768-d vectors never reach 0.98);
* exactness on a subset of whole groups (``--subset``, default 50k rows): exact blockwise search on
  the subset versus the ivf run on the subset, and versus the full run's edges inside the subset:
  missing edges, extra edges, equal components;
* wall time and peak RSS (resource.getrusage ru_maxrss) before and after the search.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vidscore_core.curation import dedup  # noqa: E402

LAST_CPU_S = 0.0


def maxrss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


class PlantedCorpus:
    """n random d-dim unit vectors made chunk by chunk (``CHUNK`` rows), never held whole: chunk k
    is the same every time it is read (seeded by (seed, k)), so the search can read it twice and
    the figures a third time. ``dup_frac`` of each chunk's rows form planted groups of size_min to
    size_max rows: one original plus copies whose cosine with it is uniform in [cos_min, cos_max]
    (x = c*b + sqrt(1-c^2)*u, u a random unit vector orthogonal to b), at shuffled rows of the chunk."""

    CHUNK = 65_536

    def __init__(self, n: int, d: int, *, dup_frac: float, size_min: int, size_max: int, cos_min: float,
                 cos_max: float, seed: int) -> None:  # fmt: skip
        self.n, self.d, self.seed = n, d, seed
        self.dup_frac, self.size_min, self.size_max = dup_frac, size_min, size_max
        self.cos_min, self.cos_max = cos_min, cos_max

    def groups(self, k: int) -> list[np.ndarray]:
        """Chunk k's planted groups as global row numbers, original first."""
        start = k * self.CHUNK
        m = min(self.CHUNK, self.n - start)
        rng = np.random.default_rng([self.seed, k, 1])
        sizes, budget = [], int(round(self.dup_frac * m))
        while budget >= self.size_min:
            size = min(int(rng.integers(self.size_min, self.size_max + 1)), budget)
            sizes.append(size)
            budget -= size
        perm = rng.permutation(m) + start
        bounds = np.cumsum(sizes)
        return [perm[b - s : b] for s, b in zip(sizes, bounds, strict=True)]

    def chunk(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        start = k * self.CHUNK
        m = min(self.CHUNK, self.n - start)
        rng = np.random.default_rng([self.seed, k, 0])
        x = rng.standard_normal((m, self.d), dtype=np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        for rows in self.groups(k):
            base = x[rows[0] - start].astype(np.float64)
            for r in rows[1:]:
                c = rng.uniform(self.cos_min, self.cos_max)
                u = rng.standard_normal(self.d)
                u -= (u @ base) * base
                u /= np.linalg.norm(u)
                x[r - start] = (c * base + np.sqrt(1 - c * c) * u).astype(np.float32)
        return np.arange(start, start + m, dtype=np.int64), x

    def read(self):
        for k in range((self.n + self.CHUNK - 1) // self.CHUNK):
            yield self.chunk(k)

    def source(self) -> dedup.EmbeddingChunks:
        return dedup.EmbeddingChunks(self.n, self.read)

    def truth(self, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
        """(star pairs, every in-group pair, those with exact cosine >= threshold, the groups)."""
        star, pairs, cos, groups = [], [], [], []
        for k in range((self.n + self.CHUNK - 1) // self.CHUNK):
            rows, x = self.chunk(k)
            chunk_pairs = []
            for g in self.groups(k):
                groups.append(g)
                star += [(min(g[0], r), max(g[0], r)) for r in g[1:]]
                chunk_pairs += [(min(g[a], g[b]), max(g[a], g[b])) for a in range(g.size) for b in range(a + 1, g.size)]
            local = np.asarray(chunk_pairs, dtype=np.int64).reshape(-1, 2)
            pairs.append(local)
            cos.append(dedup.pair_cosine(x, local - rows[0]))
        pairs_arr = np.concatenate(pairs)
        true = pairs_arr[np.concatenate(cos) >= threshold]
        return np.asarray(star, dtype=np.int64).reshape(-1, 2), pairs_arr, true, groups

    def rows(self, wanted: np.ndarray) -> np.ndarray:
        """The vectors of the (sorted) rows `wanted`, in that order."""
        out = np.empty((wanted.size, self.d), dtype=np.float32)
        for rows, x in self.read():
            pos = np.searchsorted(wanted, rows)
            hit = (pos < wanted.size) & (wanted[np.minimum(pos, wanted.size - 1)] == rows)
            out[pos[hit]] = x[hit]
        return out


def planted_corpus(n: int, d: int, **kw) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The whole corpus in memory (the sweep): (x, unit labels, star pairs)."""
    corpus = PlantedCorpus(n, d, **kw)
    x = np.concatenate([c for _, c in corpus.read()])
    star, _, _, groups = corpus.truth(0.0)
    unit = np.arange(n, dtype=np.int64) + len(groups)
    for g, rows in enumerate(groups):
        unit[rows] = g
    return x, unit, star


def group_pairs(unit: np.ndarray, n_planted_units: int) -> np.ndarray:
    """Every (i < j) pair inside a planted group."""
    rows = np.flatnonzero(unit < n_planted_units)
    rows = rows[np.argsort(unit[rows], kind="stable")]
    u = unit[rows]
    bounds = np.flatnonzero(np.diff(u)) + 1
    out = []
    for members in np.split(rows, bounds):
        for a in range(members.size):
            for b in range(a + 1, members.size):
                i, j = members[a], members[b]
                out.append((min(i, j), max(i, j)))
    return np.asarray(out, dtype=np.int64).reshape(-1, 2)


def pair_set(pairs: np.ndarray) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in pairs}


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """Two labelings describe the same partition of the rows."""
    pairs = np.unique(np.stack([a, b], axis=1), axis=0)
    return len(np.unique(pairs[:, 0])) == len(pairs) == len(np.unique(pairs[:, 1]))


def cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def timed_run(x: np.ndarray, **kw) -> tuple[dedup.DedupResult, float]:
    """Result and wall seconds; the process CPU seconds of the call go to LAST_CPU_S (the steadier
    figure when other work shares the machine)."""
    global LAST_CPU_S
    t, c = time.perf_counter(), cpu_s()
    res = dedup.near_duplicate_groups(x, **kw)
    LAST_CPU_S = cpu_s() - c
    return res, time.perf_counter() - t


def sweep(ns: list[int], args: argparse.Namespace) -> list[dict]:
    rows = []
    for n in ns:
        x, _, _ = planted_corpus(
            n,
            args.d,
            dup_frac=args.dup_frac,
            size_min=2,
            size_max=5,
            cos_min=args.cos_min,
            cos_max=args.cos_max,
            seed=args.seed,
        )
        r_ex, t_ex = timed_run(x, threshold=args.threshold, method="exact")
        c_ex = LAST_CPU_S
        r_iv, t_iv = timed_run(x, threshold=args.threshold, method="ivf", nprobe=args.nprobe, seed=args.seed)
        row = {
            "n": n,
            "exact_s": round(t_ex, 2),
            "ivf_s": round(t_iv, 2),
            "exact_cpu_s": round(c_ex, 2),
            "ivf_cpu_s": round(LAST_CPU_S, 2),
            "loadavg_1m": os.getloadavg()[0],
            "ivf_missing_edges": len(pair_set(r_ex.edges) - pair_set(r_iv.edges)),
            "ivf_extra_edges": len(pair_set(r_iv.edges) - pair_set(r_ex.edges)),
            "ivf_params": r_iv.params.get("ivf"),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--dup-frac", type=float, default=0.02)
    ap.add_argument("--cos-min", type=float, default=0.985)
    ap.add_argument("--cos-max", type=float, default=0.999)
    ap.add_argument("--threshold", type=float, default=0.98)
    ap.add_argument("--method", default="ivf", choices=["auto", "exact", "ivf"])
    ap.add_argument("--device", default=None, help="e.g. cuda (exact search on the GPU)")
    ap.add_argument("--nlist", type=int, default=None)
    ap.add_argument("--nprobe", type=int, default=None)
    ap.add_argument("--subset", type=int, default=50_000, help="rows for the exact comparison (0: skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sweep", default=None, help="comma-separated n: time exact vs ivf, then exit")
    ap.add_argument("--json", type=Path, default=None, help="write the figures here")
    args = ap.parse_args()

    env = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "loadavg_1m_start": os.getloadavg()[0],
    }
    try:
        import faiss
        import torch

        env.update(
            faiss=faiss.__version__,
            torch=torch.__version__,
            torch_threads=torch.get_num_threads(),
            faiss_threads=faiss.omp_get_max_threads(),
        )
    except ImportError:
        pass

    if args.sweep:
        out = {"env": env, "sweep": sweep([int(v) for v in args.sweep.split(",")], args)}
        if args.json:
            args.json.write_text(json.dumps(out, indent=2) + "\n")
        return

    corpus = PlantedCorpus(args.n, args.d, dup_frac=args.dup_frac, size_min=2, size_max=5,
                           cos_min=args.cos_min, cos_max=args.cos_max, seed=args.seed)  # fmt: skip
    rss_before = maxrss_gib()
    res, t_run = timed_run(
        corpus.source(),
        threshold=args.threshold,
        method=args.method,
        device=args.device,
        nlist=args.nlist,
        nprobe=args.nprobe,
        seed=args.seed,
    )
    rss_after = maxrss_gib()
    print(
        f"{res.method}: {t_run:.1f}s edges={res.n_edges} groups={res.n_groups} params={res.params}; "
        f"peak rss={rss_after:.2f} GiB",
        flush=True,
    )
    search_cpu = LAST_CPU_S

    # The figures, from a third pass over the corpus (after the peak above was taken).
    t0 = time.perf_counter()
    star, in_group, true_group_pairs, groups = corpus.truth(args.threshold)
    # Independent re-check of every reported edge (plain float64 dot of normalised rows).
    edge_rows = np.unique(res.edges)
    xe = corpus.rows(edge_rows).astype(np.float64)
    xi, xj = xe[np.searchsorted(edge_rows, res.edges[:, 0])], xe[np.searchsorted(edge_rows, res.edges[:, 1])]
    recos = np.sum(xi * xj, axis=1) / (np.linalg.norm(xi, axis=1) * np.linalg.norm(xj, axis=1))
    below = int(np.sum(recos < args.threshold))
    found = pair_set(res.edges)
    planted_all = pair_set(in_group)
    star_found = sum(p in found for p in pair_set(star))
    true_found = sum(p in found for p in pair_set(true_group_pairs))
    not_planted = len(found - planted_all)
    # Every planted group must be one component (chains through the original).
    groups_whole = sum(len(set(res.component[g].tolist())) == 1 for g in groups)
    fig = {
        "n": args.n,
        "d": args.d,
        "threshold": args.threshold,
        "method": res.method,
        "params": res.params,
        "search_s": round(t_run, 1),
        "search_cpu_s": round(search_cpu, 1),
        "rss_gib_before_search": round(rss_before, 2),
        "peak_rss_gib": round(rss_after, 2),
        "input_gib_if_held": round(args.n * args.d * 4 / 2**30, 2),
        "figures_s": round(time.perf_counter() - t0, 1),
        "edges": res.n_edges,
        "groups": res.n_groups,
        "planted_groups": len(groups),
        "planted_groups_whole": groups_whole,
        "star_pairs": len(star),
        "star_pairs_found": star_found,
        "star_recall": star_found / max(1, len(star)),
        "planted_pairs_ge_thr": len(true_group_pairs),
        "planted_pairs_ge_thr_found": true_found,
        "planted_recall": true_found / max(1, len(true_group_pairs)),
        "reported_below_threshold": below,
        "reported_not_planted": not_planted,
    }
    print(json.dumps({k: v for k, v in fig.items() if k != "params"}), flush=True)

    if args.subset and args.subset < args.n:
        # Whole planted groups and singletons, drawn at random until `subset` rows.
        rng = np.random.default_rng(args.seed + 1)
        unit = np.arange(args.n, dtype=np.int64) + len(groups)
        for g, rows in enumerate(groups):
            unit[rows] = g
        sizes = np.bincount(unit)
        units = rng.permutation(sizes.size)
        take = units[: int(np.searchsorted(np.cumsum(sizes[units]), args.subset)) + 1]
        sub_rows = np.flatnonzero(np.isin(unit, take))
        del unit
        xs = corpus.rows(sub_rows)
        ex, t_ex = timed_run(xs, threshold=args.threshold, method="exact", device=args.device)
        c_ex = LAST_CPU_S
        iv, t_iv = timed_run(xs, threshold=args.threshold, method="ivf", nprobe=args.nprobe, seed=args.seed)
        ex_set, iv_set = pair_set(ex.edges), pair_set(iv.edges)
        # The full run's edges with both ends in the subset, in subset row numbers.
        local = np.full(args.n, -1, dtype=np.int64)
        local[sub_rows] = np.arange(sub_rows.size)
        le = local[res.edges]
        full_in_sub = le[(le >= 0).all(axis=1)]
        full_set = pair_set(np.sort(full_in_sub, axis=1))
        full_comp, _ = dedup.connected_components(sub_rows.size, full_in_sub)
        fig["subset"] = {
            "rows": int(sub_rows.size),
            "exact_s": round(t_ex, 1),
            "ivf_s": round(t_iv, 1),
            "exact_cpu_s": round(c_ex, 1),
            "ivf_cpu_s": round(LAST_CPU_S, 1),
            "exact_edges": len(ex_set),
            "ivf_params": iv.params.get("ivf"),
            "ivf_missing": len(ex_set - iv_set),
            "ivf_extra": len(iv_set - ex_set),
            "ivf_components_equal": same_partition(ex.component, iv.component),
            "full_run_missing": len(ex_set - full_set),
            "full_run_extra": len(full_set - ex_set),
            "full_run_components_equal": same_partition(ex.component, full_comp),
        }
        print(json.dumps(fig["subset"]), flush=True)

    env["loadavg_1m_end"] = os.getloadavg()[0]  # other processes on the machine skew wall times
    fig["env"] = env
    fig["command"] = " ".join([Path(sys.executable).name, *sys.argv])
    if args.json:
        args.json.write_text(json.dumps(fig, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
