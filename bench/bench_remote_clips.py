"""Decoding clips from S3-compatible storage on loopback vs the same clips on local disk (issue 20).

    .venv/bin/python bench/bench_remote_clips.py --out bench/results/remote-clips-cpu-2core

The corpus is bench_shared_decode's (8 synthetic H.264 clips, 360p-720p, 1-20 s, web-like keyframe
intervals) and two clips far above one first read (25-40 MB: noise frames, which compress poorly, a
keyframe every 1-2 s), uploaded to moto's S3 server started on loopback (the one the tests use). For each pass
- `aesthetic` (frames at 10/50/90 %), `flow` (frames 0/10/20/30), `all` (both, one pass, as `score
all` decodes) - every clip is decoded with `media.read_frame_sets` from its local path and from its
s3:// URL, in rotating order, `--repeats` times; clips/s is the corpus over the sum of per-clip
medians per group; the `full demux` variants count every clip by demuxing every packet
(`from_index=False`, what every clip did before MP4s were counted from their index). Each remote pass starts with an empty cache (it lives for one pass), so bytes fetched per
clip are what one decode pass costs. Frames are checked equal between local and remote.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

from bench_shared_decode import make_corpus  # noqa: E402
from object_servers import moto_server, rclone_s3_server, s3_env, upload  # noqa: E402

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


SERVERS = ("moto", "rclone")
VARIANTS = ("local", *SERVERS, "local_full_demux", *(f"{server}_full_demux" for server in SERVERS))


def one_pass(clip: Path, variant: str, requests: list[FrameRequest], endpoints: dict[str, str]) -> tuple[float, list]:
    server = variant.removesuffix("_full_demux")
    if server == "local":
        target = str(clip)
    else:
        os.environ.update(s3_env(endpoints[server]))  # a client per endpoint, kept across passes
        target = f"s3://{BUCKET}/{clip.name}"
    if not variant.endswith("full_demux"):
        return timed(target, requests)
    sparse.decode_sparse = full_demux  # backends calls it through the module
    try:
        return timed(target, requests)
    finally:
        sparse.decode_sparse = INDEXED


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("/tmp/vidscore-bench-shared-decode"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.md")
    args = parser.parse_args()
    groups = {"small": make_corpus(args.corpus), "large": large_clips(args.corpus)}
    clips = [clip for group in groups.values() for clip in group]
    remote_variants = [v for v in VARIANTS if not v.startswith("local")]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as rclone_root, moto_server() as moto, rclone_s3_server(Path(rclone_root)) as rclone:
        endpoints = {"moto": moto, "rclone": rclone}
        for endpoint in endpoints.values():
            upload(endpoint, BUCKET, {p.name: p for p in clips})
        for name, requests in PASSES.items():
            seconds: dict[str, dict[str, list[float]]] = {v: {p.name: [] for p in clips} for v in VARIANTS}
            fetched: dict[str, dict[str, tuple[int, int]]] = {v: {} for v in remote_variants}
            for r in range(args.repeats):
                for k, clip in enumerate(clips[r % len(clips) :] + clips[: r % len(clips)]):
                    shift = (r + k) % len(VARIANTS)  # rotating order: no variant always runs first
                    got = {}
                    for variant in VARIANTS[shift:] + VARIANTS[:shift]:
                        took, got[variant] = one_pass(clip, variant, requests, endpoints)
                        seconds[variant][clip.name].append(took)
                        assert not isinstance(got[variant][0], Exception), (variant, clip.name, got[variant][0])
                        if variant in fetched:  # what one pass fetched (its cache starts empty)
                            fetched[variant][clip.name] = (got[variant][0].fetched_bytes, got[variant][0].fetch_requests)
                    for variant in VARIANTS[1:]:
                        for a, b in zip(got["local"], got[variant], strict=True):
                            assert all(np.array_equal(x, y) for x, y in zip(a.frames, b.frames, strict=True))
            by_group = {}
            for group, members in groups.items():
                totals = {v: sum(statistics.median(seconds[v][p.name]) for p in members) for v in VARIANTS}
                by_group[group] = {f"{v}_clips_per_s": len(members) / totals[v] for v in VARIANTS}
                by_group[group].update({f"{server}_vs_local": totals["local"] / totals[server] for server in SERVERS})
            results[name] = {
                "groups": by_group,
                "per_clip": {
                    p.name: {"size": p.stat().st_size, **{
                        f"{v}_{what}": value for v in fetched
                        for what, value in zip(("fetched", "requests"), fetched[v][p.name], strict=True)}}
                    for p in clips
                },
            }  # fmt: skip
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
        f"two S3 servers on 127.0.0.1, each in its own process: moto_server (the tests' server) and `rclone "
        f"serve s3` over a folder; block {meta['block_size'] // 1024} KiB, first read "
        f"{meta['first_read_blocks']} blocks, read-ahead up to {meta['max_read_ahead_blocks']} blocks. Median of "
        f"{args.repeats} per clip, summed per group (small: the 8 clips of bench_shared_decode; large: the two "
        f"25-40 MB clips). Load average at the end: "
        f"{' / '.join(f'{x:.1f}' for x in meta['load_average'])} (1/5/15 min).",
        "",
        "Clips/s; MP4s counted from their index (as scored now), and by demuxing every packet (full demux, before):",
        "",
        "| pass | clips | local | rclone | rclone / local | moto | moto / local | local, full demux | "
        "rclone, full demux | moto, full demux |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in results.items():
        for group, g in r["groups"].items():
            lines.append(f"| {name} | {group} | {g['local_clips_per_s']:.2f} | {g['rclone_clips_per_s']:.2f} | "
                         f"{g['rclone_vs_local']:.2f}× | {g['moto_clips_per_s']:.2f} | {g['moto_vs_local']:.2f}× | "
                         f"{g['local_full_demux_clips_per_s']:.2f} | {g['rclone_full_demux_clips_per_s']:.2f} | "
                         f"{g['moto_full_demux_clips_per_s']:.2f} |")  # fmt: skip
    lines += ["", "Bytes fetched per clip in one pass, against the file's size (GETs in brackets), from the index "
              "(full demux after the slash); the same from either server:", "",
              "| clip | size | " + " | ".join(results) + " |", "|---|---:|" + "---:|" * len(results)]  # fmt: skip
    for clip in next(iter(results.values()))["per_clip"]:
        size = results["all"]["per_clip"][clip]["size"]
        cells = []
        for r in results.values():
            c = r["per_clip"][clip]
            cells.append(f"{c['rclone_fetched'] / size:.2f}× ({c['rclone_requests']}) / "
                         f"{c['rclone_full_demux_fetched'] / size:.2f}× ({c['rclone_full_demux_requests']})")  # fmt: skip
        lines.append(f"| {clip} | {size / 1e6:.2f} MB | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
