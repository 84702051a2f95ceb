"""Decoding clips from S3-compatible storage on loopback vs the same clips on local disk (issue 20).

    .venv/bin/python bench/bench_remote_clips.py --out bench/results/remote-clips-cpu-2core

The corpus is bench_shared_decode's (8 synthetic H.264 clips, 360p-720p, 1-20 s, web-like keyframe
intervals) and two clips far above one first read (25-40 MB: noise frames, which compress poorly, a
keyframe every 1-2 s), uploaded to moto's S3 server started on loopback (the one the tests use). For each pass
- `aesthetic` (frames at 10/50/90 %), `flow` (frames 0/10/20/30), `all` (both, one pass, as `score
all` decodes) - every clip is decoded with `media.read_frame_sets` from its local path and from its
s3:// URL, in rotating order, `--repeats` times; clips/s is the corpus over the sum of per-clip
medians; `local, full demux` is the local clip counted by demuxing every packet (`from_index=False`,
what every clip did before MP4s were counted from their index). Each remote pass starts with an empty cache (it lives for one pass), so bytes fetched per
clip are what one decode pass costs. Frames are checked equal between local and remote.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from bench_shared_decode import make_corpus  # noqa: E402
from object_servers import moto_server, s3_env, upload  # noqa: E402

from vidscore_core.media import remote, sparse  # noqa: E402
from vidscore_core.media.decode import read_frame_sets  # noqa: E402
from vidscore_core.media.frames import FrameRequest  # noqa: E402
from vidscore_core.media.synth import write_clip  # noqa: E402

AESTHETIC = FrameRequest(points=(0.1, 0.5, 0.9))
FLOW = FrameRequest(indices=(0, 10, 20, 30))
PASSES = {"aesthetic": [AESTHETIC], "flow": [FLOW], "all": [AESTHETIC, FLOW]}
BUCKET = "bench"


def large_clips(folder: Path) -> list[Path]:
    """Two clips far above the first read: noise frames (about 100 KB each at 480x270), 24 fps."""
    out = []
    for name, frames, gop in (("large_480x270_17s_gop24.mp4", 400, 24), ("large_480x270_10s_gop48.mp4", 240, 48)):
        path = folder / name
        if not path.exists():
            rng = np.random.default_rng(len(out))
            noise = (rng.integers(0, 256, (270, 480, 3), dtype=np.uint8) for _ in range(frames))
            write_clip(path, noise, crf=16, gop=gop, preset="ultrafast")
        out.append(path)
    return out


INDEXED = sparse.decode_sparse


def full_demux(path, header, want, verify_last):
    """The sparse decoder counting every clip by demuxing every packet (the local path before)."""
    return INDEXED(path, header, want, verify_last, from_index=False)


def timed(target: str, requests: list[FrameRequest]) -> tuple[float, list]:
    start = time.perf_counter()
    got = read_frame_sets(target, requests, timeout_s=None)
    return time.perf_counter() - start, got


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("/tmp/vidscore-bench-shared-decode"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.md")
    args = parser.parse_args()
    clips = make_corpus(args.corpus) + large_clips(args.corpus)
    results: dict[str, dict] = {}
    with moto_server() as endpoint:
        os.environ.update(s3_env(endpoint))
        upload(endpoint, BUCKET, {p.name: p for p in clips})
        for name, requests in PASSES.items():
            local_s: dict[str, list[float]] = {p.name: [] for p in clips}
            before_s: dict[str, list[float]] = {p.name: [] for p in clips}
            remote_s: dict[str, list[float]] = {p.name: [] for p in clips}
            fetched: dict[str, int] = {}
            requests_made: dict[str, int] = {}
            for r in range(args.repeats):
                for k, clip in enumerate(clips[r % len(clips) :] + clips[: r % len(clips)]):
                    order = ("local", "remote") if (r + k) % 2 == 0 else ("remote", "local")
                    got = {}
                    for where in order:
                        target = str(clip) if where == "local" else f"s3://{BUCKET}/{clip.name}"
                        seconds, got[where] = timed(target, requests)
                        (local_s if where == "local" else remote_s)[clip.name].append(seconds)
                        if where == "remote":  # what one pass fetched (its cache starts empty)
                            fetched[clip.name] = got[where][0].fetched_bytes
                            requests_made[clip.name] = got[where][0].fetch_requests
                    sparse.decode_sparse = full_demux  # backends calls it through the module
                    try:
                        seconds, before = timed(str(clip), requests)
                    finally:
                        sparse.decode_sparse = INDEXED
                    before_s[clip.name].append(seconds)
                    for a, b in zip(got["local"], before, strict=True):
                        assert all(np.array_equal(x, y) for x, y in zip(a.frames, b.frames, strict=True))
                    for a, b in zip(got["local"], got["remote"], strict=True):
                        assert all(np.array_equal(x, y) for x, y in zip(a.frames, b.frames, strict=True))
            local_total = sum(statistics.median(v) for v in local_s.values())
            remote_total = sum(statistics.median(v) for v in remote_s.values())
            before_total = sum(statistics.median(v) for v in before_s.values())
            results[name] = {
                "local_full_demux_clips_per_s": len(clips) / before_total,
                "local_clips_per_s": len(clips) / local_total,
                "remote_clips_per_s": len(clips) / remote_total,
                "remote_vs_local": local_total / remote_total,
                "per_clip": {
                    p.name: {"size": p.stat().st_size, "fetched": fetched[p.name], "requests": requests_made[p.name],
                             "fetched_vs_size": fetched[p.name] / p.stat().st_size}  # fmt: skip
                    for p in clips
                },
            }
    meta = {"machine": platform.platform(), "cpus": os.cpu_count(), "repeats": args.repeats,
            "block_size": remote.BLOCK_SIZE, "first_read_blocks": remote.FIRST_READ_BLOCKS,
            "max_read_ahead_blocks": remote.MAX_READ_AHEAD_BLOCKS, "load_average": os.getloadavg()}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    args.out.with_suffix(".md").write_text(report(meta, results, args))
    print(args.out.with_suffix(".md").read_text())


def report(meta: dict, results: dict, args: argparse.Namespace) -> str:
    lines = [
        "# Clips from S3 on loopback vs local disk",
        "",
        f"`.venv/bin/python bench/bench_remote_clips.py --repeats {args.repeats} --out {args.out}`; "
        f"{meta['machine']}, {meta['cpus']} CPUs; one process, serial decode (`media.read_frame_sets`); "
        f"moto_server on 127.0.0.1; block {meta['block_size'] // 1024} KiB, first read "
        f"{meta['first_read_blocks']} blocks, read-ahead up to {meta['max_read_ahead_blocks']} blocks. Median of "
        f"{args.repeats} per clip, summed. Load average at the end: "
        f"{' / '.join(f'{x:.1f}' for x in meta['load_average'])} (1/5/15 min).",
        "",
        "| pass | local clips/s | S3 clips/s | S3 / local | local, full demux clips/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        lines.append(f"| {name} | {r['local_clips_per_s']:.2f} | {r['remote_clips_per_s']:.2f} | "
                     f"{r['remote_vs_local']:.2f}× | {r['local_full_demux_clips_per_s']:.2f} |")  # fmt: skip
    lines += ["", "Bytes fetched per clip in one pass, against the file's size (GETs in brackets):", "",
              "| clip | size | " + " | ".join(results) + " |", "|---|---:|" + "---:|" * len(results)]  # fmt: skip
    for clip in next(iter(results.values()))["per_clip"]:
        size = results["all"]["per_clip"][clip]["size"]
        cells = [f"{r['per_clip'][clip]['fetched_vs_size']:.2f}× ({r['per_clip'][clip]['requests']})"
                 for r in results.values()]
        lines.append(f"| {clip} | {size / 1e6:.2f} MB | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
