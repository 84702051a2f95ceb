"""Scale benchmark of the table store: Parquet partitions published per batch, read by DuckDB.

    .venv/bin/python bench/bench_tables.py --root /work/bench-tables            # full: 10 M clips
    .venv/bin/python bench/bench_tables.py --root /tmp/bt --quick               # smoke: 200 k clips
    .venv/bin/python bench/bench_tables.py --root DIR --parts queries,ingest    # some parts again

Parts (each adds its section to `<out>.json`, then `<out>.md` is rewritten from the whole JSON):

1. `publish`: `--clips` synthetic clips in `--batches` batches written through
   `TableStore.publish(df, table, batch)` for `videos`, `aesthetic_scores`, `flow_scores` and
   `matching_scores` (DataFrames as the assets build them: 16-hex video ids, paths, captions, params
   JSON, run ids, code versions, timestamps, a few % error rows with NULL scores), in `--workers`
   processes: publish time per batch and per table, bytes per clip on disk.
   `embeddings`: `clip_embeddings` for `--embedding-clips` clips (3 frames x 768 float32 each),
   bytes per clip, projected to `--clips`.
2. `queries`: the same Parquet files loaded into native DuckDB tables (one .duckdb file), then
   count(*), one batch's rows, and the `video_scores` join-and-filter over every clip, on the views
   of `vidscore.duckdb` (`write_views` + `connect_read_only`) and on the native tables; best of 3
   after a warm-up, each (side, query) in a fresh process whose VmHWM is its peak memory.
3. `ingest`: a meta CSV of `--clips` rows (path, text and two extra columns) through
   `ingest.write_manifests(meta, TableStore(root), batch_size=5000)` in a fresh process: wall time
   and VmHWM.
   The child is killed (and reported) past --ingest-rss-limit-gib or when the machine runs low.
   `ingest-scaling` (not in the default parts): the same at --ingest-scaling-rows (1 M, 3 M), for the
   memory per row and a projection when the full size cannot finish on the machine.
4. `concurrency`: 8 writer processes (7 batches, plus one batch written by two processes at once),
   each publishing `videos` and `aesthetic_scores` repeatedly, while 2 reader processes hold DuckDB
   sessions and query: round A one read-write `duckdb.connect(vidscore.duckdb)` plus one held
   `TableStore.connect()` session (and `query_df` calls); round B two `connect_read_only` sessions
   on vidscore.duckdb; round C the views with `union_by_name = false` (a candidate fix). Counts
   failures, lost and duplicated rows, and torn reads (a batch seen with a row count other than 0 or
   the expected one, or rows of more than one run).

The data directories under --root are deleted at the end unless --keep.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing as mp
import os
import platform
import shutil
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SCORE_TABLES = ("videos", "aesthetic_scores", "flow_scores", "matching_scores")
FILTER = "aes >= 5 AND flow BETWEEN 0.5 AND 100 AND match >= 20 AND video_error IS NULL"

WORDS = (
    "a the man woman person child dog cat car bus train bicycle street city road forest river lake ocean "
    "beach mountain sky cloud sun sunset sunrise night light shadow building bridge tower window door room "
    "kitchen table chair sofa bed garden tree flower grass field snow rain storm wave boat ship plane bird "
    "horse cow sheep crowd group people walking running driving flying swimming dancing talking sitting "
    "standing holding looking smiling playing cooking eating reading writing painting slowly quickly "
    "camera pans zooms tilts tracks follows aerial view close-up wide shot static handheld footage of in on "
    "at with and near over under through across along behind beside between red blue green yellow white "
    "black orange purple golden bright dark colorful old young small large tall busy quiet empty modern "
    "ancient wooden stone glass metal wet dry green-lit neon urban rural countryside traffic market stage "
    "concert crowd fireworks festival parade video scene background foreground moving static timelapse"
).split()


# -- helpers -------------------------------------------------------------------------------------


def proc_kib(path: str, field: str) -> int:
    """A "<field>: <n> kB" line of a /proc file (status, meminfo), KiB; 0 if the field is absent."""
    with open(path) as fh:
        for line in fh:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    return 0


def vm_hwm_kib() -> int:
    """Peak resident set size of this process (VmHWM), KiB."""
    return proc_kib("/proc/self/status", "VmHWM")


def dir_bytes(folder: Path) -> tuple[int, int]:
    """(bytes on disk, files) of a table's partition files (every version, not the schema file)."""
    total = files = 0
    for path in folder.glob("*=*/*.parquet"):
        if "=!schema" not in path.parent.name:
            total += path.stat().st_blocks * 512
            files += 1
    return total, files


def stats_ms(values: list[float]) -> dict:
    arr = np.asarray(values, dtype=float) * 1000
    return {
        "n": int(arr.size),
        "mean_ms": round(float(arr.mean()), 2),
        "p50_ms": round(float(np.percentile(arr, 50)), 2),
        "p95_ms": round(float(np.percentile(arr, 95)), 2),
        "max_ms": round(float(arr.max()), 2),
    }


def batch_key(i: int) -> str:
    # The form of meta.batch_keys: <stem>-<8 hex of the meta file's path>-<00000>
    return f"synthetic_meta-5e1f0c2a-{i:05d}"


def machine_info() -> dict:
    import duckdb
    import pyarrow

    cpu = "?"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kib = 0
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True).stdout.strip()  # fmt: skip
    except OSError:
        commit = "?"
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "pyarrow": pyarrow.__version__,
        "pandas": pd.__version__,
        "commit": commit,
    }


# -- synthetic rows ------------------------------------------------------------------------------


def masked(values: pd.Series, mask: np.ndarray) -> pd.Series | np.ndarray:
    """The column with NULL where mask is set, keeping its type (nullable ints, NaN floats, None objects)."""
    arr = values.to_numpy()
    if arr.dtype.kind in "iu":
        return pd.arrays.IntegerArray(arr.astype(np.int64), mask.copy())
    if arr.dtype.kind == "f":
        return np.where(mask, np.nan, arr)
    out = arr.astype(object)
    out[mask] = None
    return out


class Synth:
    """Rows of one batch, deterministic in (batch index, clips per batch, version)."""

    def __init__(self, index: int, n: int, version: int = 0, key: str | None = None) -> None:
        self.index, self.n = index, n
        self.key = key or batch_key(index)
        self.rng = np.random.default_rng([index, version])
        start = index * n
        self.paths = [f"/data/datasets/webvid/shard_{(start + j) // 10000:04d}/clip_{start + j:09d}.mp4"
                      for j in range(n)]  # fmt: skip
        self.video_ids = [hashlib.sha256(p.encode()).hexdigest()[:16] for p in self.paths]
        self.run_id = uuid.uuid4().hex
        self.when = pd.Timestamp(datetime(2026, 11, 1, tzinfo=timezone.utc) + timedelta(seconds=index * 37))
        self.video_error = self.rng.random(n) < 0.02

    def captions(self) -> list[str]:
        words = np.asarray(WORDS, dtype=object)
        lengths = self.rng.integers(8, 40, self.n)
        idx = self.rng.integers(0, len(WORDS), int(lengths.sum()))
        out, pos = [], 0
        for length in lengths:
            out.append(" ".join(words[idx[pos : pos + length]]).capitalize() + ".")
            pos += length
        return out

    def videos(self) -> pd.DataFrame:
        rng, n, err = self.rng, self.n, self.video_error
        frames = rng.integers(48, 1200, n)
        fps = rng.choice([23.976, 24.0, 25.0, 29.97, 30.0, 60.0], n)
        res = rng.choice(4, n)
        width = np.array([640, 1280, 1920, 3840])[res]
        height = np.array([360, 720, 1080, 2160])[res]
        extra = [json.dumps({"aesthetic_orig": round(float(a), 3), "source": f"part-{s:03d}"})
                 for a, s in zip(rng.normal(5, 1, n), rng.integers(0, 200, n), strict=True)]  # fmt: skip
        df = pd.DataFrame(
            {
                "video_id": self.video_ids,
                "path": self.paths,
                "path_original": [p.removeprefix("/data/datasets/webvid/") for p in self.paths],
                "text": self.captions(),
                "meta_file": "/data/datasets/webvid/synthetic_meta.csv",
                "meta_row": np.arange(self.index * n, (self.index + 1) * n, dtype=np.int64),
                "extra": extra,
                "exists": True,
                "size_bytes": rng.integers(200_000, 80_000_000, n),
                "media_type": "video",
                "num_frames": frames,
                "fps": fps,
                "width": width,
                "height": height,
                "duration_s": frames / fps,
                "codec": rng.choice(["h264", "hevc", "vp9"], n, p=[0.8, 0.15, 0.05]),
                "error": None,
                "run_id": self.run_id,
                "code_version": "0.4.0+3fa91c2e",
                "ingested_at": self.when,
            }
        )
        for col in ("size_bytes", "num_frames", "fps", "width", "height", "duration_s", "codec"):
            df[col] = masked(df[col], err)
        df["error"] = np.where(err, "cannot decode: Invalid data found when processing input", None)
        df["exists"] = ~(err & (rng.random(n) < 0.5))
        return df

    def _lineage(self, df: pd.DataFrame, model: str, params: dict) -> pd.DataFrame:
        df.insert(1, "batch", self.key)
        df["model"] = model
        df["weights_sha256"] = "9f3c1d8e2b7a4c60e5d1f0a3b6c9e2d4f7a0b3c6d9e2f5a8b1c4d7e0f3a6b9c2"
        df["params"] = json.dumps(params, sort_keys=True, separators=(",", ":"))
        df["run_id"] = self.run_id
        df["code_version"] = "0.4.0+8c21d7aa"
        df["scored_at"] = self.when + pd.Timedelta(minutes=5)
        return df

    def _errors(self, df: pd.DataFrame, value_cols: list[str], extra_rate: float = 0.01) -> pd.DataFrame:
        err = self.video_error | (self.rng.random(self.n) < extra_rate)
        for col in value_cols:
            df[col] = masked(df[col], err)
        df["error"] = np.where(err, "decode: no frame at index 117 (stream ended at 96)", None)
        return df

    def aesthetic(self) -> pd.DataFrame:
        rng, n = self.rng, self.n
        frames = np.clip(rng.normal(5.0, 0.9, (n, 1)) + rng.normal(0, 0.25, (n, 3)), 1, 10)
        nf = rng.integers(48, 1200, n)
        df = pd.DataFrame(
            {
                "video_id": self.video_ids,
                "aes": frames.mean(axis=1),
                "aes_frames": list(frames.tolist()),
                "frame_indices": [[int(f * 0.1), int(f * 0.5), int(f * 0.9)] for f in nf],
                "num_frames": nf,
            }
        )
        df = self._errors(df, ["aes", "aes_frames", "frame_indices"])
        return self._lineage(df, "clip:ViT-L-14.pt+aesthetic:aesthetic.pth",
                             {"points": [0.1, 0.5, 0.9], "batch_size": 64, "device": "cuda", "precision": "fp16"})  # fmt: skip

    def flow(self) -> pd.DataFrame:
        rng, n = self.rng, self.n
        pairs = rng.lognormal(1.0, 1.2, (n, 3))
        nf = rng.integers(48, 1200, n)
        df = pd.DataFrame(
            {
                "video_id": self.video_ids,
                "flow": pairs.mean(axis=1),
                "flow_pairs": list(pairs.tolist()),
                "frame_indices": [[0, 10, 20, 30]] * n,
                "num_frames": nf,
                "backend": "unimatch",
            }
        )
        df = self._errors(df, ["flow", "flow_pairs", "frame_indices"])
        return self._lineage(df, "unimatch:gmflow-scale2-regrefine6",
                             {"frames": [0, 10, 20, 30], "size": [320, 576], "num_scales": 2, "upsample": 4})  # fmt: skip

    def matching(self) -> pd.DataFrame:
        rng, n = self.rng, self.n
        nf = rng.integers(48, 1200, n)
        df = pd.DataFrame(
            {
                "video_id": self.video_ids,
                "match": np.clip(rng.normal(22.0, 3.0, n), 0, 40),
                "frame_index": nf // 2,
                "num_frames": nf,
            }
        )
        df = self._errors(df, ["match", "frame_index"])
        return self._lineage(df, "clip:ViT-L-14.pt",
                             {"points": [0.5], "logit_scale_exp": 100.0, "context_length": 77})  # fmt: skip

    def embeddings(self) -> pd.DataFrame:
        """3 rows per clip (frames at 10/50/90 %), one row with a NULL embedding per failed clip."""
        rng, n = self.rng, self.n
        nf = rng.integers(48, 1200, n)
        emb = rng.standard_normal((n * 3, 768), dtype=np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        rows_vid, rows_idx, rows_pt, rows_emb, rows_nf, rows_err = [], [], [], [], [], []
        for j in range(n):
            if self.video_error[j]:
                rows_vid.append(self.video_ids[j])
                rows_idx.append(None)
                rows_pt.append(None)  # noqa: E702
                rows_emb.append(None)
                rows_nf.append(None)
                rows_err.append("cannot decode")  # noqa: E702
                continue
            for k, point in enumerate((0.1, 0.5, 0.9)):
                rows_vid.append(self.video_ids[j])
                rows_idx.append(int(nf[j] * point))  # noqa: E702
                rows_pt.append(point)
                rows_emb.append(emb[j * 3 + k].tolist())  # noqa: E702
                rows_nf.append(int(nf[j]))
                rows_err.append(None)  # noqa: E702
        df = pd.DataFrame({"video_id": rows_vid, "frame_index": rows_idx, "frame_point": rows_pt,
                           "embedding": rows_emb, "num_frames": rows_nf, "error": rows_err})  # fmt: skip
        return self._lineage(df, "clip:ViT-L-14.pt", {"points": [0.1, 0.5, 0.9], "batch_size": 64})


# -- part 1: publish -----------------------------------------------------------------------------


def _publish_batch(job: tuple[str, int, int, tuple[str, ...]]) -> dict:
    from vidscore_core.tables.store import TableStore

    root, index, n, tables = job
    store = TableStore(root)
    t0 = time.perf_counter()
    synth = Synth(index, n)
    frames = {}
    for table in tables:
        frames[table] = {
            "videos": synth.videos, "aesthetic_scores": synth.aesthetic, "flow_scores": synth.flow,
            "matching_scores": synth.matching, "clip_embeddings": synth.embeddings,
        }[table]()  # fmt: skip
    gen = time.perf_counter() - t0
    times = {}
    for table, df in frames.items():
        t = time.perf_counter()
        store.publish(df, table, synth.key)
        times[table] = time.perf_counter() - t
    return {"index": index, "gen_s": gen, "publish_s": times}


def run_publish(args, root: Path, tables: tuple[str, ...], clips: int, batches: int, label: str) -> dict:
    n = clips // batches
    jobs = [(str(root), i, n, tables) for i in range(batches)]
    t0 = time.perf_counter()
    results = []
    with mp.get_context("fork").Pool(args.workers) as pool:
        for done, res in enumerate(pool.imap_unordered(_publish_batch, jobs, chunksize=1), 1):
            results.append(res)
            if done % max(1, batches // 20) == 0:
                print(f"  [{label}] {done}/{batches} batches, {time.perf_counter() - t0:.0f}s", flush=True)
    wall = time.perf_counter() - t0
    per_batch = [sum(r["publish_s"].values()) for r in results]
    out = {
        "clips": n * batches,
        "batches": batches,
        "clips_per_batch": n,
        "workers": args.workers,
        "wall_s": round(wall, 1),
        "generate_s_total": round(sum(r["gen_s"] for r in results), 1),
        "publish_per_batch_all_tables": stats_ms(per_batch),
        "tables": {},
    }
    for table in tables:
        size, files = dir_bytes(root / table)
        out["tables"][table] = {
            "publish_per_batch": stats_ms([r["publish_s"][table] for r in results]),
            "files": files,
            "bytes_on_disk": size,
            "bytes_per_clip": round(size / (n * batches), 1),
        }
    return out


def part_publish(args, root: Path) -> dict:
    print(f"publish: {args.clips:,} clips in {args.batches} batches, {args.workers} workers", flush=True)
    return run_publish(args, root, SCORE_TABLES, args.clips, args.batches, "publish")


def part_embeddings(args, root: Path) -> dict:
    per_batch = args.clips // args.batches
    batches = max(1, args.embedding_clips // per_batch)
    print(f"embeddings: {batches * per_batch:,} clips in {batches} batches", flush=True)
    emb_root = root.parent / (root.name + "-embeddings")
    out = run_publish(args, emb_root, ("clip_embeddings",), batches * per_batch, batches, "embeddings")
    t = out["tables"]["clip_embeddings"]
    t["projected_bytes_at_clips"] = {"clips": args.clips, "bytes": int(t["bytes_per_clip"] * args.clips)}
    # DuckDB reads them back as FLOAT[768] through the view's cast? Record the type it sees.
    import duckdb

    con = duckdb.connect()
    glob = f"{emb_root}/clip_embeddings/*/*.parquet"
    t["duckdb_type"] = con.execute(f"SELECT typeof(embedding) FROM read_parquet('{glob}') "
                                   "WHERE embedding IS NOT NULL LIMIT 1").fetchone()[0]  # fmt: skip
    con.close()
    if not args.keep:
        shutil.rmtree(emb_root, ignore_errors=True)
    return out


# -- part 2: queries -----------------------------------------------------------------------------


def queries(key: str) -> dict[str, str]:
    return {
        "count_videos": "SELECT count(*) FROM videos",
        "one_batch": f"SELECT * FROM aesthetic_scores WHERE batch = '{key}'",
        "join_filter_agg": f"SELECT count(*), avg(aes) FROM video_scores WHERE {FILTER}",
        "join_filter_paths": f"SELECT path FROM video_scores WHERE {FILTER} ORDER BY aes DESC LIMIT 1000",
    }


def query_child(side: str, target: str, root: str, name: str, key: str, repeats: int) -> None:
    """In a fresh process: open one side, warm up, time `repeats` runs; print JSON with VmHWM."""
    import duckdb

    t0 = time.perf_counter()
    if side in ("views", "live"):
        from vidscore_core.tables.store import TableStore
        from vidscore_core.tables.views import connect_read_only

        # views: what `vidscore sql` opens (the current files pinned by name); live: the stored views
        con = connect_read_only(Path(target), TableStore(root), snapshot=side == "views")
    else:
        con = duckdb.connect(target, read_only=True)
    open_s = time.perf_counter() - t0
    sql = queries(key)[name]
    rss_open = vm_hwm_kib()
    times, rows = [], None
    for i in range(repeats + 1):
        t = time.perf_counter()
        result = con.execute(sql).to_arrow_table()
        dt = time.perf_counter() - t
        rows = result.num_rows
        first = result.slice(0, 1).to_pylist() if name != "one_batch" else None
        if i:
            times.append(dt)
        else:
            warm = dt
    con.close()
    print(json.dumps({
        "side": side, "query": name, "open_s": round(open_s, 3), "warmup_s": round(warm, 3),
        "times_s": [round(x, 4) for x in times], "best_s": round(min(times), 4), "rows": rows,
        "first_row": first, "peak_rss_mib": round(vm_hwm_kib() / 1024, 1),
        "rss_after_open_mib": round(rss_open / 1024, 1),
    }, default=str))  # fmt: skip


def part_queries(args, root: Path) -> dict:
    import duckdb

    from vidscore_core.settings import Settings
    from vidscore_core.tables import schema
    from vidscore_core.tables.store import VIDEO_SCORES_TABLES, TableStore
    from vidscore_core.tables.views import pinned_source, write_views

    store = TableStore(root)
    keys = sorted(store.partitions("aesthetic_scores"))
    key = keys[len(keys) // 2]
    home = root.parent / (root.name + "-home")
    settings = Settings(home=home, tables=str(root))
    shutil.rmtree(home, ignore_errors=True)
    t0 = time.perf_counter()
    views_db = write_views(settings)
    views_s = time.perf_counter() - t0

    native_db = root.parent / (root.name + "-native.duckdb")
    load: dict[str, float] = {}
    t0 = time.perf_counter()
    if not args.reuse_native:
        native_db.unlink(missing_ok=True)
    con = duckdb.connect(str(native_db))
    con.execute("SET TimeZone = 'UTC'")
    have = {name for (name,) in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()}
    for table in sorted(VIDEO_SCORES_TABLES - have):  # every table video_scores joins (the others empty)
        t = time.perf_counter()
        source = pinned_source(store, table)  # the rows the views show
        con.execute(f"CREATE TABLE {schema.quote_ident(table)} AS {schema.select_sql(table, source)}")
        load[table] = round(time.perf_counter() - t, 1)
    con.execute(schema.video_scores_sql())
    con.execute("CHECKPOINT")
    con.close()
    native_s = time.perf_counter() - t0
    parquet_bytes = sum(dir_bytes(root / t)[0] for t in SCORE_TABLES)
    out = {
        "batch_key": key,
        "write_views_s": round(views_s, 2),
        "native_load_s": round(native_s, 1),
        "native_reused": bool(args.reuse_native and not load.keys() >= set(SCORE_TABLES)),
        "native_load_per_table_s": load,
        "native_file_bytes": native_db.stat().st_blocks * 512,
        "parquet_bytes_4_tables": parquet_bytes,
        "sql": queries(key),
        "results": {},
    }
    for name in queries(key):
        for side, target in (("views", views_db), ("live", views_db), ("native", native_db)):
            cmd = [
                sys.executable,
                __file__,
                "_query",
                side,
                str(target),
                str(root),
                name,
                key,
                str(args.repeats),
            ]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                print(proc.stderr, file=sys.stderr)
                out["results"].setdefault(name, {})[side] = {"error": proc.stderr[-2000:]}
                continue
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            out["results"].setdefault(name, {})[side] = res
            print(f"  {name:18s} {side:6s} best {res['best_s']:.3f}s rows {res['rows']} "
                  f"peak {res['peak_rss_mib']:.0f} MiB", flush=True)  # fmt: skip
        both = out["results"][name]
        if "best_s" in both.get("views", {}) and "best_s" in both.get("native", {}):
            both["views_over_native"] = round(both["views"]["best_s"] / both["native"]["best_s"], 2)
            both["same_result"] = same_answer(both["views"], both["native"])
    if not args.keep:
        shutil.rmtree(home, ignore_errors=True)
        native_db.unlink(missing_ok=True)
    return out


# -- part 3: ingest ------------------------------------------------------------------------------


def make_meta_csv(path: Path, rows: int) -> float:
    """A meta CSV: path, text, aesthetic_orig, num_frames (captions of 8-40 words), via DuckDB."""
    import duckdb

    t0 = time.perf_counter()
    con = duckdb.connect()
    words = "[" + ", ".join("'" + w + "'" for w in WORDS) + "]"
    nw = len(WORDS)
    con.execute(f"""
        COPY (
          SELECT '/data/datasets/panda/shard_' || lpad(CAST(i // 10000 AS VARCHAR), 4, '0')
                 || '/clip_' || lpad(CAST(i AS VARCHAR), 9, '0') || '.mp4' AS path,
                 array_to_string(list_transform(range(8 + CAST(hash(i) % 32 AS INTEGER)),
                     lambda x: {words}[1 + CAST(hash(i * 64 + x) % {nw} AS INTEGER)]), ' ') || '.' AS text,
                 round(4 + (hash(i * 3) % 6000) / 1000.0, 3) AS aesthetic_orig,
                 48 + CAST(hash(i * 7) % 1200 AS INTEGER) AS num_frames
          FROM range({rows}) t(i)
        ) TO '{path}' (HEADER, DELIMITER ',')
    """)
    con.close()
    return time.perf_counter() - t0


def ingest_child(meta: str, root: str, mode: str) -> None:
    """Fresh process: the real write_manifests; prints its result as JSON."""
    from vidscore_core.ingest import batches as ingest
    from vidscore_core.tables.store import TableStore

    store = TableStore(root)
    base = vm_hwm_kib()
    t0 = time.perf_counter()
    rows = ingest.write_manifests(meta, store, batch_size=5000).clips
    wall = time.perf_counter() - t0
    print(json.dumps({"mode": mode, "rows": sum(rows.values()), "batches": len(rows), "wall_s": round(wall, 1),
                      "peak_rss_mib": round(vm_hwm_kib() / 1024), "baseline_mib": round(base / 1024)}))  # fmt: skip


def mem_available_kib() -> int:
    return proc_kib("/proc/meminfo", "MemAvailable")


def proc_rss_kib(pid: int) -> int:
    try:
        return proc_kib(f"/proc/{pid}/status", "VmRSS")
    except OSError:  # the process ended
        return 0


def part_ingest(args, root: Path) -> dict:
    return run_ingest(args, root, args.clips, ["real"])


def part_ingest_scaling(args, root: Path) -> dict:
    """write_manifests at smaller sizes: peak memory per row, to extrapolate when the full size is killed."""
    out = {"runs": {}}
    for rows in (int(x) for x in args.ingest_scaling_rows.split(",")):
        res = run_ingest(args, root, rows, ["real"])
        out["runs"][str(rows)] = res["runs"]["real"] | {"csv_bytes": res["csv_bytes"]}
    ok = {int(k): v for k, v in out["runs"].items() if "peak_rss_mib" in v}
    if len(ok) >= 2:
        (r0, a), (r1, b) = sorted(ok.items())[0], sorted(ok.items())[-1]
        slope = (b["peak_rss_mib"] - a["peak_rss_mib"]) / (r1 - r0)  # MiB per row
        out["peak_mib_per_million_rows"] = round(slope * 1e6)
        out["projected_peak_mib_at_clips"] = {"rows": args.clips,
                                               "mib": round(b["peak_rss_mib"] + slope * (args.clips - r1))}  # fmt: skip
    return out


def run_ingest(args, root: Path, n_rows: int, modes: list[str]) -> dict:
    work = root.parent / (root.name + "-ingest")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    meta = work / "big_meta.csv"
    print(f"ingest: writing a {n_rows:,}-row meta CSV", flush=True)
    gen_s = make_meta_csv(meta, n_rows)
    out = {"rows": n_rows, "csv_bytes": meta.stat().st_size, "csv_generate_s": round(gen_s, 1),
           "batch_size": 5000, "runs": {}, "rss_limit_gib": args.ingest_rss_limit_gib}  # fmt: skip
    for mode in modes:
        tables = work / f"tables-{mode}"
        cmd = [sys.executable, __file__, "_ingest", str(meta), str(tables), mode]
        print(f"  ingest ({mode}): {' '.join(cmd[1:])}", flush=True)
        stdout_path, stderr_path = work / f"{mode}.out", work / f"{mode}.err"
        t0 = time.perf_counter()
        killed, sampled = None, 0
        with open(stdout_path, "w") as so, open(stderr_path, "w") as se:
            proc = subprocess.Popen(cmd, stdout=so, stderr=se)
            # A watchdog: this machine is shared, so never let the child push it into the OOM killer.
            while proc.poll() is None:
                sampled = max(sampled, proc_rss_kib(proc.pid))
                if sampled > args.ingest_rss_limit_gib * 2**20 or mem_available_kib() < 1.5 * 2**20:
                    killed = (f"killed by the benchmark at RSS {sampled / 2**20:.2f} GiB "
                              f"(limit {args.ingest_rss_limit_gib} GiB, MemAvailable {mem_available_kib() / 2**20:.2f} GiB)")  # fmt: skip
                    proc.kill()
                    proc.wait()
                    break
                time.sleep(0.1)
        wall = time.perf_counter() - t0
        stdout = stdout_path.read_text().splitlines()
        final = [line for line in stdout if line.startswith("{")]
        if proc.returncode != 0 or not final:
            out["runs"][mode] = {"error": killed or stderr_path.read_text()[-3000:], "returncode": proc.returncode,
                                 "wall_s": round(wall, 1), "children_maxrss_mib": round(sampled / 1024)}  # fmt: skip
            print(f"  ingest ({mode}) failed: {out['runs'][mode]['error'][-500:]}", flush=True)
        else:
            res = json.loads(final[-1])
            res["process_wall_s"] = round(wall, 1)
            res["sampled_max_rss_mib"] = round(sampled / 1024)
            from vidscore_core.tables.store import TableStore

            counts = TableStore(tables).partition_counts("manifests")
            res["manifest_rows"] = sum(counts.values())
            res["manifest_bytes"] = dir_bytes(tables / "manifests")[0]
            out["runs"][mode] = res
            print(f"  ingest ({mode}): {res['wall_s']}s, peak {res['peak_rss_mib']} MiB", flush=True)
        shutil.rmtree(tables, ignore_errors=True)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return out


# -- part 4: concurrency -------------------------------------------------------------------------

CONC_ROWS = 5000


def conc_batch(i: int) -> str:
    return f"concurrent-00c0ffee-{i:05d}"


def writer_proc(root: str, index: int, writer: int, rounds: int, start: float, q) -> None:
    from vidscore_core.tables.store import TableStore

    store = TableStore(root)
    while time.time() < start:
        time.sleep(0.005)
    published, failures, errors = [], 0, []
    for r in range(rounds):
        synth = Synth(index, CONC_ROWS, version=writer * 1000 + r, key=conc_batch(index))
        try:
            store.publish(synth.videos(), "videos", synth.key)
            store.publish(synth.aesthetic(), "aesthetic_scores", synth.key)
            published.append(synth.run_id)
        except Exception as exc:  # noqa: BLE001 - counted and reported
            failures += 1
            errors.append(repr(exc)[:300])
    q.put({"writer": writer, "batch": conc_batch(index), "run_ids": published, "failures": failures,
           "errors": errors[:3]})  # fmt: skip


CHECK_SQL = (
    "SELECT batch, count(*) AS n, count(DISTINCT video_id) AS ids, count(DISTINCT run_id) AS runs "
    "FROM {table} GROUP BY batch"
)


def reader_proc(kind: str, root: str, db: str, stop_file: str, ready_file: str, q) -> None:
    """Hold a session, then query both tables until stop_file appears; check every answer."""
    import duckdb

    from vidscore_core.tables.store import TableStore
    from vidscore_core.tables.views import connect_read_only, pin_current_files

    store = TableStore(root)
    con = None
    if kind == "pin":
        con = connect_read_only(Path(db), store, snapshot=True)
    elif kind == "rw":
        con = duckdb.connect(db)  # the default: read-write, holds the file's write lock
    elif kind == "ro":
        con = connect_read_only(Path(db), store)
    elif kind == "store":
        con = store.connect()  # a held private session over the files (the pipeline's own reads)
    Path(ready_file).touch()
    queries_done, bad, failures, errors, fresh = 0, [], 0, [], 0
    expected = CONC_ROWS
    seen: dict[str, set[str]] = {"videos": set(), "aesthetic_scores": set()}  # batches answered with rows
    while True:
        last = os.path.exists(stop_file)
        for table in ("videos", "aesthetic_scores"):
            sql = CHECK_SQL.format(table=table)
            try:
                if kind == "store" and queries_done % 2:
                    rows = store.query_df(sql).itertuples(index=False, name=None)  # a fresh session
                    fresh += 1
                elif kind == "pin":
                    pin_current_files(con, store)  # what a new `vidscore sql` does: list, then read
                    rows = con.execute(sql).fetchall()
                else:
                    rows = con.execute(sql).fetchall()
            except Exception as exc:  # noqa: BLE001 - counted and reported
                failures += 1
                errors.append(repr(exc)[:300])
                continue
            queries_done += 1
            answered = set()
            for batch, n, ids, runs in rows:
                answered.add(batch)
                if n != expected or ids != n or runs != 1:
                    bad.append({"table": table, "batch": batch, "rows": n, "ids": ids, "runs": runs})
            # A batch once seen must never vanish: a reader sees the old version or the new one.
            bad += [{"table": table, "batch": b, "rows": 0, "vanished": True} for b in seen[table] - answered]
            seen[table] |= answered
        if last:
            break
    if con is not None:
        con.close()
    q.put({"reader": kind, "queries": queries_done, "fresh_sessions": fresh, "torn_or_wrong": len(bad),
           "examples": bad[:5], "failures": failures, "errors": errors[:3]})  # fmt: skip


def conc_round(args, root: Path, home: Path, readers: tuple[str, str], rounds: int) -> dict:
    from vidscore_core.tables.store import TableStore

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    db = str(home / "vidscore.duckdb")
    stop_file, ready = home / f"stop-{readers[0]}", [home / f"ready-{r}-{i}" for i, r in enumerate(readers)]
    for f in (stop_file, *ready):
        f.unlink(missing_ok=True)
    procs = []
    for i, kind in enumerate(readers):  # one after the other: the RW one must not meet another opener
        p = ctx.Process(target=reader_proc, args=(kind, str(root), db, str(stop_file), str(ready[i]), q))
        p.start()
        procs.append(p)
        while not ready[i].exists():
            if not p.is_alive():
                raise RuntimeError(f"reader {kind} died before holding its session")
            time.sleep(0.05)
    start = time.time() + 3.0
    writers = []
    for w in range(8):
        index = min(w, 6)  # writers 6 and 7 write the same batch at once
        p = ctx.Process(target=writer_proc, args=(str(root), index, w, rounds, start, q))
        p.start()
        writers.append(p)
    for p in writers:
        p.join()
    write_wall = time.time() - start
    stop_file.touch()
    for p in procs:
        p.join()
    results = [q.get() for _ in range(len(writers) + len(readers))]
    w_res = [r for r in results if "writer" in r]
    r_res = [r for r in results if "reader" in r]
    store = TableStore(root)
    final = {}
    for table in ("videos", "aesthetic_scores"):
        df = store.read(table, [conc_batch(i) for i in range(7)], ["batch", "video_id", "run_id"])
        for batch, part in df.groupby("batch"):
            ok_runs = {rid for r in w_res if r["batch"] == batch for rid in r["run_ids"]}
            last_runs = {r["run_ids"][-1] for r in w_res if r["batch"] == batch and r["run_ids"]}
            final.setdefault(table, {})[batch] = {
                "rows": len(part),
                "lost": max(0, CONC_ROWS - part["video_id"].nunique()),
                "duplicated": len(part) - part["video_id"].nunique(),
                "runs": part["run_id"].nunique(),
                "run_published": bool(set(part["run_id"]) <= ok_runs),
                "run_is_a_last_publish": bool(set(part["run_id"]) <= last_runs),
            }
        for i in range(7):
            if conc_batch(i) not in final.get(table, {}):
                final.setdefault(table, {})[conc_batch(i)] = {"rows": 0, "lost": CONC_ROWS, "duplicated": 0}
    leftovers = [p.name for t in ("videos", "aesthetic_scores") for p in (root / t).rglob("*.tmp")]
    leftovers += [p.name for p in (root / "_staging").glob("*")]
    rows_lost = sum(v["lost"] for t in final.values() for v in t.values())
    rows_dup = sum(v["duplicated"] for t in final.values() for v in t.values())
    return {
        "readers": list(readers),
        "writers": 8,
        "publishes_per_writer": rounds * 2,
        "write_wall_s": round(write_wall, 1),
        "writer_failures": sum(r["failures"] for r in w_res),
        "writer_errors": [e for r in w_res for e in r["errors"]][:5],
        "reader_results": r_res,
        "reader_failures": sum(r["failures"] for r in r_res),
        "reader_queries": sum(r["queries"] for r in r_res),
        "torn_reads": sum(r["torn_or_wrong"] for r in r_res),
        "lost_rows": rows_lost,
        "duplicated_rows": rows_dup,
        "mixed_run_batches": sum(v.get("runs", 1) != 1 for t in final.values() for v in t.values()),
        "final_not_from_a_publish": sum(not v.get("run_published", True) for t in final.values() for v in t.values()),
        "final_not_a_last_publish": sum(not v.get("run_is_a_last_publish", True) for t in final.values() for v in t.values()),
        "tmp_leftovers": len(leftovers),
        "final": final,
    }  # fmt: skip


def part_concurrency(args, root: Path) -> dict:
    from vidscore_core.settings import Settings
    from vidscore_core.tables.views import write_views

    croot = root.parent / (root.name + "-conc")
    shutil.rmtree(croot, ignore_errors=True)
    home = croot / "home"
    tables = croot / "tables"
    write_views(Settings(home=home, tables=str(tables)))
    out = {"rows_per_batch": CONC_ROWS, "batches": 7, "rounds": {}}
    for label, readers in (("A: read-write duckdb.connect + held TableStore.connect/query_df", ("rw", "store")),
                           ("B: two connect_read_only sessions", ("ro", "ro")),
                           ("C: two pinned sessions (as `vidscore sql`), pinned again before every query",
                            ("pin", "pin"))):  # fmt: skip
        print(f"concurrency round {label}", flush=True)
        res = conc_round(args, tables, home, readers, args.conc_rounds)
        out["rounds"][label] = res
        print(f"  writer failures {res['writer_failures']}, reader failures {res['reader_failures']}, "
              f"queries {res['reader_queries']}, torn {res['torn_reads']}, lost {res['lost_rows']}, "
              f"dup {res['duplicated_rows']}", flush=True)  # fmt: skip
    if not args.keep:
        shutil.rmtree(croot, ignore_errors=True)
    return out


# -- report --------------------------------------------------------------------------------------


def mib(b: float) -> str:
    return f"{b / 2**20:,.0f} MiB" if b < 2**30 else f"{b / 2**30:,.2f} GiB"


def same_answer(a: dict, b: dict) -> bool:
    """Same row count and first row (floats to 1e-9 relative: parallel sums differ in the last digits)."""
    if a.get("rows") != b.get("rows"):
        return False
    fa, fb = a.get("first_row") or [], b.get("first_row") or []
    if len(fa) != len(fb):
        return False
    for ra, rb in zip(fa, fb, strict=True):
        for k in ra:
            x, y = ra[k], rb.get(k)
            if isinstance(x, float) and isinstance(y, float):
                if abs(x - y) > 1e-9 * max(abs(x), abs(y)):
                    return False
            elif x != y:
                return False
    return True


# Issue 21's targets: views / native (best) at most this, or an absolute time for count(*).
RATIO_TARGETS = {"one_batch": 2.0, "join_filter_agg": 1.5, "join_filter_paths": 1.5}
COUNT_TARGET_S = 0.2


def query_targets(results: dict) -> list[tuple[str, str, bool]]:
    out = []
    for name, r in results.items():
        v, n = r.get("views", {}), r.get("native", {})
        if "best_s" not in v or "best_s" not in n:
            out.append((name, "failed", False))
        elif name == "count_videos":
            out.append((name, f"{v['best_s']:.3f} s (target ≤ {COUNT_TARGET_S} s)", v["best_s"] <= COUNT_TARGET_S))
        elif name in RATIO_TARGETS:
            ratio = v["best_s"] / n["best_s"]
            out.append((name, f"{ratio:.2f}× native (target ≤ {RATIO_TARGETS[name]}×)", ratio <= RATIO_TARGETS[name]))
    return out


def render(data: dict) -> str:
    m = data.get("machine", {})
    lines = [
        f"# Table store at scale ({data.get('label', '')})",
        "",
        f"Machine: {m.get('cpu')} × {m.get('cores')} cores, {m.get('ram_gib')} GiB RAM, local disk (virtio); "
        f"Python {m.get('python')}, DuckDB {m.get('duckdb')}, pyarrow {m.get('pyarrow')}, pandas {m.get('pandas')}; "
        f"commit {m.get('commit')}. Other sessions shared the machine: treat wall times as rough.",
        "",
        "Commands:",
        "",
    ]
    for cmd in data.get("commands", []):
        lines.append(f"    {cmd}")
    lines.append("")
    pub = data.get("publish")
    if pub:
        lines += [
            f"## 1. Publish: {pub['clips']:,} clips in {pub['batches']:,} batches of {pub['clips_per_batch']:,}",
            "",
            f"`TableStore.publish(DataFrame, table, batch)` (the path the assets use: to_arrow, schema "
            f"conform, Parquet write to a temp name, fsync, rename) in {pub['workers']} worker processes "
            f"(one batch at a time each, all 4 tables of a batch in turn). Wall {pub['wall_s']:,} s "
            f"({pub['clips'] / pub['wall_s']:,.0f} clips/s), of which generating the synthetic frames "
            f"{pub['generate_s_total']:,} s of worker time. Times per batch are per worker, with "
            f"{pub['workers']} workers sharing {m.get('cores')} cores.",
            "",
            "| table | publish per batch mean / p50 / p95 / max (ms) | files | on disk | bytes per clip |",
            "|---|---|---|---|---|",
        ]
        all_t = {**pub["tables"], **(data.get("embeddings", {}).get("tables", {}))}
        for table, t in all_t.items():
            s = t["publish_per_batch"]
            lines.append(f"| `{table}` | {s['mean_ms']:.0f} / {s['p50_ms']:.0f} / {s['p95_ms']:.0f} / "
                         f"{s['max_ms']:.0f} | {t['files']:,} | {mib(t['bytes_on_disk'])} | "
                         f"{t['bytes_per_clip']:,.0f} |")  # fmt: skip
        s = pub["publish_per_batch_all_tables"]
        lines.append(f"| all 4 tables of a batch | {s['mean_ms']:.0f} / {s['p50_ms']:.0f} / {s['p95_ms']:.0f} / "
                     f"{s['max_ms']:.0f} | | {mib(sum(t['bytes_on_disk'] for t in pub['tables'].values()))} | "
                     f"{sum(t['bytes_per_clip'] for t in pub['tables'].values()):,.0f} |")  # fmt: skip
        lines.append("")
    emb = data.get("embeddings")
    if emb:
        t = emb["tables"]["clip_embeddings"]
        proj = t["projected_bytes_at_clips"]
        lines += [
            f"`clip_embeddings` written for {emb['clips']:,} clips ({emb['batches']} batches, 3 frames × 768 "
            f"float32 per clip, ~2 % of clips one NULL row): {t['bytes_per_clip']:,.0f} bytes per clip "
            f"(raw floats: 9,216), so {proj['clips']:,} clips would take ≈ {mib(proj['bytes'])}. DuckDB "
            f"reads the column as `{t.get('duckdb_type')}`. Wall {emb['wall_s']:,} s.",
            "",
        ]
    q = data.get("queries")
    if q:
        lines += [
            "## 2. Queries: views over Parquet vs native DuckDB tables",
            "",
            f"Views: `write_views` ({q['write_views_s']} s), then `connect_read_only(vidscore.duckdb, "
            f"snapshot=True)`, what `vidscore sql` opens: temporary views that read each batch's current "
            f"file by name, listed when the session opens ({mib(q['parquet_bytes_4_tables'])} for the 4 "
            f"tables; the listing is part of the open, not of the query times). Live: the views stored in "
            f"vidscore.duckdb, as any DuckDB client reads them (`connect_read_only(vidscore.duckdb)`): a "
            f"glob over `<table>/batch=*/*.parquet` and a per-row pick of each folder's current file, so "
            f"a held session follows every publish. Native: "
            f"the same rows copied into one .duckdb file with `CREATE TABLE … AS SELECT` from the Parquet "
            f"files ({'loaded by an earlier run, ' if q.get('native_reused') else ''}{q['native_load_s']} s, "
            f"file {mib(q['native_file_bytes'])}) and the same `video_scores` "
            f"view. Each (side, query) runs in a fresh process: one warm-up, then best of "
            f"{len(next(iter(q['results'].values()))['views'].get('times_s', [0, 0, 0]))}; peak memory is "
            f"that process's VmHWM (Python + DuckDB + the Arrow result). DuckDB default settings "
            f"(threads = cores).",
            "",
            "| query | views: best s (median) | native: best s (median) | views / native, best (median) | "
            "views first run in the session (open) | native first run | views peak | native peak | rows | same answer | "
            "live views: best s (median) | live / native | live first run |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for name, r in q["results"].items():
            v, n = r.get("views", {}), r.get("native", {})
            if "best_s" not in v or "best_s" not in n:
                lines.append(f"| {name} | error | error | | | | | | | |")
                continue
            vm, nm = float(np.median(v["times_s"])), float(np.median(n["times_s"]))
            lv = r.get("live", {})
            live = (f"{lv['best_s']:.3f} ({float(np.median(lv['times_s'])):.3f}) | {lv['best_s'] / n['best_s']:.2f}× | "
                    f"{lv['warmup_s']:.3f} s" if "best_s" in lv else "not measured | | ")  # fmt: skip
            lines.append(f"| `{name}` | {v['best_s']:.3f} ({vm:.3f}) | {n['best_s']:.3f} ({nm:.3f}) | "
                         f"{r['views_over_native']:.2f}× ({vm / nm:.2f}×) | "
                         f"{v['warmup_s']:.3f} s ({v['open_s']:.2f} s) | {n['warmup_s']:.3f} s | {v['peak_rss_mib']:,.0f} MiB | {n['peak_rss_mib']:,.0f} MiB | {v['rows']:,} | "
                         f"{'yes' if same_answer(v, n) else 'NO'} | {live} |")  # fmt: skip
        lines += ["", "SQL:", ""]
        for name, sql in q["sql"].items():
            lines.append(f"* `{name}`: `{sql}`")
        lines += ["", "Targets (best of the repeats, views vs native in the same run):", ""]
        for name, what, ok in query_targets(q["results"]):
            lines.append(f"* `{name}`: {what}: **{'met' if ok else 'NOT met'}**")
        if q["results"]:
            lines += ["", f"Same answers on both sides (row counts, first row; float sums equal to 1e-9 "
                          f"relative, they differ in the last digits with the summation order): "
                          f"{all(same_answer(r.get('views', {}), r.get('native', {})) for r in q['results'].values())}."]  # fmt: skip
        lines.append("")
    ing = data.get("ingest")
    if ing:
        lines += [
            f"## 3. Ingest of a {ing['rows']:,}-row meta file",
            "",
            f"CSV with path, text (8–40 words), aesthetic_orig, num_frames: {mib(ing['csv_bytes'])}. "
            f"`vidscore_core.ingest.batches.write_manifests(meta, TableStore(root), batch_size=5000)` in a fresh "
            f"process; peak = its VmHWM.",
            "",
            "| run | wall | peak memory | batches | manifest rows |",
            "|---|---|---|---|---|",
        ]
        for mode, r in ing["runs"].items():
            if "error" in r:
                lines.append(f"| {mode} | {r['wall_s']} s: {r['error'][-300:]} | "
                             f"≥ {r['children_maxrss_mib']:,} MiB (sampled) | | |")  # fmt: skip
                continue
            lines.append(f"| {mode} | {r['wall_s']:,} s | {r['peak_rss_mib']:,} MiB | {r['batches']:,} | "
                         f"{r['manifest_rows']:,} |")  # fmt: skip
        real = ing["runs"].get("real", {})
        peak = real.get("peak_rss_mib", real.get("children_maxrss_mib"))
        if peak:
            lines += ["", f"Target (< 8 GB): **{'met' if peak * 2**20 < 8e9 and 'error' not in real else 'NOT met'}** "
                          f"({'at least ' if 'error' in real else ''}{peak * 2**20 / 1e9:.2f} GB)."]  # fmt: skip
        lines.append("")
    sc = data.get("ingest-scaling")
    if sc:
        lines += ["Smaller meta files through the same `write_manifests` (part `ingest-scaling`, fresh process each):",
                  "", "| rows | wall | peak memory |", "|---|---|---|"]  # fmt: skip
        for rows, r in sc["runs"].items():
            peak = (
                f"{r['peak_rss_mib']:,} MiB"
                if "peak_rss_mib" in r
                else f"failed: {r.get('error', '')[-200:]}"
            )
            lines.append(f"| {int(rows):,} | {r.get('wall_s', '?')} s | {peak} |")
        if "peak_mib_per_million_rows" in sc:
            proj = sc["projected_peak_mib_at_clips"]
            lines += ["", f"Peak grows by ≈ {sc['peak_mib_per_million_rows']:,} MiB per million rows: "
                          f"≈ {proj['mib'] * 2**20 / 1e9:.1f} GB projected for {proj['rows']:,} rows."]  # fmt: skip
        lines.append("")
    conc = data.get("concurrency")
    if conc:
        lines += [
            "## 4. Concurrent writers and readers",
            "",
            f"8 writer processes: 7 batches of {conc['rows_per_batch']:,} rows, batch 6 written by 2 "
            f"processes at once; each writer publishes `videos` then `aesthetic_scores` for its batch, over "
            f"and over (new run id and values, same clips). 2 reader processes hold a session for the whole "
            f"round and query `{CHECK_SQL.format(table='<table>')}` in a loop; a reader answer is wrong when a "
            f"batch has a row count other than {conc['rows_per_batch']:,}, duplicate ids, or rows of "
            f"more than one run, or when a batch an earlier answer had is missing. Afterwards every batch is read back: lost = expected clips missing, "
            f"duplicated = extra rows of one clip.",
            "",
            "| round | publishes | writer failures | reader queries | reader failures | torn/wrong reads | "
            "lost rows | duplicated rows | mixed-run batches | final not a last publish | .tmp left |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for label, r in conc["rounds"].items():
            lines.append(f"| {label} | {r['writers']} × {r['publishes_per_writer']} in {r['write_wall_s']} s | "
                         f"{r['writer_failures']} | {r['reader_queries']:,} | {r['reader_failures']} ("
                         + ", ".join(f"{x['reader']}: {x['failures']}/{x['queries'] + x['failures']}"
                                     for x in r["reader_results"]) + ") | "
                         f"{r['torn_reads']} | {r['lost_rows']} | {r['duplicated_rows']} | "
                         f"{r['mixed_run_batches']} | {r['final_not_a_last_publish']} | {r['tmp_leftovers']} |")  # fmt: skip
        errs = [e for r in conc["rounds"].values() for e in r["writer_errors"]
                + [x for rr in r["reader_results"] for x in rr["errors"]]]  # fmt: skip
        if errs:
            lines += ["", "Errors seen:", ""] + [f"* `{e}`" for e in errs[:6]]
        lines += ["", "Target (0 failures, 0 lost or duplicated rows):", ""]
        for label, r in conc["rounds"].items():
            total = (r["writer_failures"] + r["reader_failures"] + r["torn_reads"] + r["lost_rows"]
                     + r["duplicated_rows"])  # fmt: skip
            lines.append(f"* round {label}: **{'met' if total == 0 else 'NOT met'}**")
        lines += ["", "Note: a DuckDB read-write session locks vidscore.duckdb against every other process, "
                  "so round A's second reader holds a session the way the pipeline reads (an in-memory "
                  "DuckDB over the Parquet files, `TableStore.connect()`, plus fresh `query_df` calls); "
                  "round B holds two read-only sessions on vidscore.duckdb itself; round C two read-only sessions "
                  "whose views are pinned again (a new listing of the current files) before every query, as "
                  "each `vidscore sql` does.", ""]  # fmt: skip
    if data.get("findings"):
        lines += ["## Findings", ""] + [f"* {x}" for x in data["findings"]] + [""]
    return "\n".join(lines)


# -- main ----------------------------------------------------------------------------------------


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_query":
        side, target, root, name, key, repeats = sys.argv[2:8]
        query_child(side, target, root, name, key, int(repeats))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_ingest":
        ingest_child(*sys.argv[2:5])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=10_000_000)
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--embedding-clips", type=int, default=1_000_000)
    parser.add_argument("--root", type=Path, default=Path("/tmp/vidscore-bench-tables"))
    parser.add_argument("--quick", action="store_true", help="200 k clips in 40 batches (20 k embeddings)")
    parser.add_argument(
        "--parts",
        default="publish,embeddings,queries,ingest,concurrency",
        help="comma-separated; also ingest-scaling (write_manifests at --ingest-scaling-rows)",
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--conc-rounds", type=int, default=25, help="publishes of each table per writer")
    parser.add_argument(
        "--ingest-rss-limit-gib",
        type=float,
        default=16.0,
        help="kill the ingest child above this RSS (or when MemAvailable < 1.5 GiB)",
    )
    parser.add_argument(
        "--ingest-scaling-rows",
        default="1000000,3000000",
        help="part ingest-scaling: meta file sizes to ingest (real write_manifests)",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/tables-cpu-2core")
    parser.add_argument("--keep", action="store_true", help="keep the data directories")
    parser.add_argument("--reuse-native", action="store_true",
                        help="queries: reuse the native .duckdb a --keep run left beside --root")
    args = parser.parse_args()
    if args.quick:
        args.clips, args.batches, args.embedding_clips, args.conc_rounds = 200_000, 40, 20_000, 8
        args.ingest_scaling_rows = "50000,100000"
        if args.out == REPO / "bench/results/tables-cpu-2core":
            args.out = REPO / "bench/results/tables-quick"
    root = args.root.resolve() / "tables"
    root.parent.mkdir(parents=True, exist_ok=True)
    json_path = args.out.with_suffix(".json")
    data = json.loads(json_path.read_text()) if json_path.exists() else {}
    data["machine"] = machine_info()
    data["label"] = f"{args.clips:,} clips, {data['machine']['cores']}-core CPU machine"
    command = "python " + " ".join(["bench/bench_tables.py", *sys.argv[1:]])
    data.setdefault("commands", [])
    if command not in data["commands"]:
        data["commands"].append(command)
    parts = args.parts.split(",")
    if "publish" in parts:
        shutil.rmtree(root, ignore_errors=True)
    for part in parts:
        t0 = time.perf_counter()
        result = {"publish": part_publish, "embeddings": part_embeddings, "queries": part_queries,
                  "ingest": part_ingest, "concurrency": part_concurrency,
                  "ingest-scaling": part_ingest_scaling}[part](args, root)  # fmt: skip
        result["part_wall_s"] = round(time.perf_counter() - t0, 1)
        result["measured_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        data[part] = result
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(data, indent=1, default=str))
        args.out.with_suffix(".md").write_text(render(data))
        print(f"{part} done in {result['part_wall_s']}s -> {json_path}", flush=True)
    if not args.keep and "queries" in parts:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
