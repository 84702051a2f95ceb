"""Wall time of `vidscore ingest` + `videos` materialization for N small clips.

    .venv/bin/python bench/bench_ingest.py --clips 1000

Writes N short H.264 clips (96×64, 24 frames, moving textures) into a temp folder, then times the
CLI path: the `meta_files` run (manifests + partitions), then materializing `videos` through Dagster.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pandas as pd


def make_corpus(folder: Path, n: int) -> Path:
    from vidscore_core.media.synth import pan_frames, texture_image, write_clip

    folder.mkdir(parents=True, exist_ok=True)
    texture = texture_image(256, 256, seed=1)
    rows = []
    for i in range(n):
        frames = pan_frames(texture, 96, 64, 24, dx=i % 5, dy=(i // 5) % 3)
        name = f"clip_{i:05d}.mp4"
        write_clip(folder / name, frames)
        rows.append({"path": name, "text": f"texture moving {i % 5} px right"})
    meta = folder / "meta.csv"
    pd.DataFrame(rows).to_csv(meta, index=False)
    return meta


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        os.environ["VIDSCORE_HOME"] = str(tmp / "home")
        os.environ.pop("DAGSTER_HOME", None)
        t0 = time.perf_counter()
        meta = make_corpus(tmp / "clips", args.clips)
        t_corpus = time.perf_counter() - t0

        from vidscore_core.settings import Settings
        from vidscore_core.tables.store import TableStore
        from vidscore_dagster.defs.resources import default_resources
        from vidscore_dagster.runner import ingest_meta_file, instance_for, materialize_batches

        settings = Settings.from_env()
        t0 = time.perf_counter()
        instance = instance_for(settings)
        keys, reason = ingest_meta_file(instance, meta, args.batch_size, scored_by_caller=True)
        if reason:
            raise SystemExit(f"ingest failed: {reason}")
        t_ingest = time.perf_counter() - t0
        t0 = time.perf_counter()
        ok = materialize_batches(
            instance, keys, ["videos"], resources=default_resources(), log_level="WARNING"
        )
        t_mat = time.perf_counter() - t0
        n = TableStore.from_settings(settings).query_df("SELECT count(*) AS n FROM videos")["n"].iloc[0]
        print(f"clips={args.clips} batches={len(keys)} ok={all(ok.values())} rows={n}")
        print(
            f"corpus generation {t_corpus:.1f}s | ingest (manifests + partitions) {t_ingest:.2f}s | "
            f"materialize videos {t_mat:.1f}s ({args.clips / t_mat:.0f} clips/s) | cores={os.cpu_count()}"
        )


if __name__ == "__main__":
    main()
