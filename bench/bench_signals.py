"""Per-clip cost of the new signals next to `clip_embeddings`' frames, and one pass for all of them.

    .venv/bin/python bench/bench_signals.py --repeats 3 --out bench/results/signals-cpu-2core

What a decode worker does per clip (decode + the part's payload), timed in one process with torch
at 1 thread, on bench_shared_decode's corpus (8 synthetic H.264 clips, 360p–720p, 1–20 s):

* `clip`: CLIP frames at 10/50/90 % cropped to 224 px (`clip_embeddings` alone, model not included);
* `lum`, `blur`: the same frames, their luma mean / Laplacian variance;
* `cmotion`: frames 0/15/30/… at full resolution, Open-Sora's Farnebäck labels;
* `flow_dis`: frames 0/10/20/30 at 320×576, DIS flow and object motion (the homography fit);
* `three`: one pass for today's three scores' parts (clip + flow with DIS);
* `all`: one pass for clip + flow + camera motion + luminance + blur.


`object_motion` alone (the fit and residual on a clip's three 320×576 fields, given the fields) is
timed separately. Medians over `--repeats`, summed over the corpus.

With `--score-all`, the pass `vidscore score all` runs (`csv_commands.score_csv.score_rows`: one decode per
clip, the models on the CPU with the fixtures' random weights, decode workers) on a few of the clips, for
the eight scores, the three original ones (aesthetic, flow, matching), and each score alone:

    .venv/bin/python bench/bench_signals.py --score-all --clips 2 --out bench/results/score-all-cpu-2core

(`--variants all,three,...` runs only those; each run is added to the report at `--out` as it ends.)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch
from bench_shared_decode import CORPUS, make_corpus

from vidscore_core.models.frame_stats import laplacian_variance, mean_luma
from vidscore_core.models.global_motion import object_motion
from vidscore_core.scoring.camera_motion_frames import CameraMotionSampler
from vidscore_core.scoring.clip_frames import ClipFrameSampler
from vidscore_core.scoring.engine import Item
from vidscore_core.scoring.flow_frames import FlowSampler
from vidscore_core.scoring.frame_signals import FrameStatSampler
from vidscore_core.scoring.shared_decode import SharedDecodeSampler

PARTS = {
    "clip": ClipFrameSampler(),
    "lum": FrameStatSampler(mean_luma),
    "blur": FrameStatSampler(laplacian_variance),
    "cmotion": CameraMotionSampler(),
    "flow_dis": FlowSampler(backend="dis", object_motion=True),
}
VARIANTS = {
    **{name: (name,) for name in PARTS},
    "three": ("clip", "flow_dis"),
    "all": ("clip", "flow_dis", "cmotion", "lum", "blur"),
}


def time_once(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def write_report(out: Path, lines: list[str], data: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out.with_suffix(".json").write_text(json.dumps(data, indent=1))
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--corpus", type=Path, default=Path("/tmp/vidscore-bench-shared-decode"))
    parser.add_argument("--clips", type=int, default=None, help="only the first N clips of the corpus")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument(
        "--score-all",
        action="store_true",
        help="time `vidscore score all`'s pass: eight scores vs the three original ones",
    )
    parser.add_argument(
        "--fixtures",
        type=Path,
        default=Path(os.environ.get("VIDSCORE_FIXTURES", "../shared/fixtures")),
        help="--score-all: the fixtures folder (its random-weight checkpoints)",
    )
    parser.add_argument("--workers", type=int, default=2, help="--score-all: decode workers")
    parser.add_argument(
        "--variants",
        default=None,
        help="--score-all: comma list of runs (all, three, or a score's name; default every one)",
    )
    args = parser.parse_args()
    if args.score_all:
        score_all_report(args)
        return
    torch.set_num_threads(1)
    paths = make_corpus(args.corpus)[: args.clips]
    load = os.getloadavg()[0]
    samplers = {v: SharedDecodeSampler(tuple((p, PARTS[p]) for p in parts)) for v, parts in VARIANTS.items()}
    per_clip: dict[str, dict[str, float]] = {}
    for path in paths:
        clip = Item(index=0, video_id=path.stem, path=str(path))
        times: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for r in range(args.repeats):
            order = list(VARIANTS)[r % len(VARIANTS) :] + list(VARIANTS)[: r % len(VARIANTS)]
            for variant in order:
                times[variant].append(time_once(lambda s=samplers[variant], c=clip: s.prepare(c)))
        per_clip[path.stem] = {v: statistics.median(t) for v, t in times.items()}
    flows = torch.randn(3, 2, 320, 576) * 3
    fit_ms = statistics.median(time_once(lambda: object_motion(flows)) for _ in range(max(3, args.repeats)))
    totals = {v: sum(c[v] for c in per_clip.values()) for v in VARIANTS}
    header = "| clip | " + " | ".join(VARIANTS) + " |"
    lines = [
        "# New signals per clip vs `clip_embeddings`' frames (CPU, worker side, ms)", "",
        f"`python bench/bench_signals.py --repeats {args.repeats} --out {args.out}`; {platform.processor() or platform.machine()}, "
        f"torch at 1 thread, medians; decode + payload per clip (no CLIP/UniMatch model time); load average "
        f"{load:.1f} at the start (the machine is shared: compare the columns, not the absolute times).", "",
        header, "|---|" + "---:|" * len(VARIANTS),
        *(f"| {name} | " + " | ".join(f"{c[v]:.1f}" for v in VARIANTS) + " |" for name, c in per_clip.items()),
        "| **total** | " + " | ".join(f"{totals[v]:.0f}" for v in VARIANTS) + " |", "",
        "* relative to `clip` alone: " + ", ".join(f"{v} {totals[v] / totals['clip']:.2f}×" for v in VARIANTS) + ".",
        f"* `all` (clip + flow + camera motion + luminance + blur, one decode) / `three` (clip + flow, one decode): "
        f"{totals['all'] / totals['three']:.2f}×.",
        f"* object motion given a clip's three 320×576 flow fields (homography fits + residual): {fit_ms:.1f} ms.",
    ]  # fmt: skip
    write_report(
        args.out, lines, {"per_clip_ms": per_clip, "totals_ms": totals, "object_motion_fit_ms": fit_ms}
    )


# --score-all: clips of the corpus long enough for every score (camera motion needs frame 15), shortest
# first (TransNetV2 reads every frame: its CPU time bounds how many; `--clips N` takes the first N).
SCORE_ALL_CLIPS = ("360p_1s_short", "360p_4s_gop25", "720p_6s_gop30", "540p_8s_gop60")
THREE = ("aesthetic", "flow", "matching")


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()


def score_all_runs(args: argparse.Namespace, meta_path: Path, n: int, frames: int) -> None:
    """Wall seconds of `score_rows` (what `vidscore score all` runs, models loaded in each call as the CLI
    does) for every score together, the three original ones together, and each score alone; each run is
    added to the report at `--out` as it ends (with `uptime` at its start), runs already there are kept."""
    from vidscore_core.csv_commands.score_csv import ALL, choose, score_rows
    from vidscore_core.ingest.meta import read_meta
    from vidscore_core.scoring.options import JobOptions
    from vidscore_core.settings import Settings

    weights = args.fixtures / "weights"
    os.environ.update(VIDSCORE_CLIP_WEIGHTS=str(weights / "clip_tiny_openai.pt"),
                      VIDSCORE_AESTHETIC_WEIGHTS=str(weights / "aesthetic_random_scaled.pth"),
                      VIDSCORE_UNIMATCH_WEIGHTS=str(weights / "unimatch_random.pth"), VIDSCORE_DEVICE="cpu")  # fmt: skip
    settings = Settings.from_env()
    options = JobOptions(device="cpu", num_workers=args.workers)
    meta = read_meta(meta_path, drop_duplicates=False)
    chosen, skipped = choose(ALL, meta, settings, options)
    if skipped:
        raise SystemExit(f"error: `score all` would skip {[(s.score, s.reason) for s in skipped]}")
    by_name = {s.name: s for s in chosen}
    variants = {"all": tuple(by_name), "three": THREE, **{name: (name,) for name in by_name}}
    wanted = args.variants.split(",") if args.variants else list(variants)
    report = args.out.with_suffix(".json")
    runs = json.loads(report.read_text())["runs"] if report.exists() else {}
    for variant in wanted:
        load = uptime()
        started = time.perf_counter()
        rows = score_rows([by_name[name] for name in variants[variant]], meta, settings, options)
        seconds = time.perf_counter() - started
        failed = {name: r["error"].dropna().tolist() for name, r in rows.items() if r["error"].notna().any()}
        if failed:
            raise SystemExit(f"error: {variant}: clips failed: {failed}")
        runs[variant] = {"scores": list(variants[variant]), "seconds": seconds, "uptime_at_start": load}
        print(f"{variant}: {seconds:.1f}s", flush=True)
        write_score_all_report(args, runs, n, frames)


def write_score_all_report(args: argparse.Namespace, runs: dict[str, dict], n: int, frames: int) -> None:
    command = (
        f"python bench/bench_signals.py --score-all --clips {n} --workers {args.workers} --out {args.out}"
    )
    three = runs.get("three", {}).get("seconds")
    alone = [r["seconds"] for v, r in runs.items() if v not in ("all", "three")]
    lines = [
        "# `vidscore score all`: eight signals vs the three original ones, and each alone (CPU)", "",
        f"`{command} [--variants V,...]` on {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{args.workers} decode workers; {n} clips ({', '.join(SCORE_ALL_CLIPS[:n])}; {frames} frames). The pass "
        "`vidscore score all` runs (`score_csv.score_rows`, one decode per clip for every score asked, models loaded "
        "in each run), fixture random weights (tiny CLIP, full-size UniMatch), OCR's PP-OCRv4 and TransNetV2's real "
        "weights from their packages; one run each, wall seconds, `uptime` at the start of each run.", "",
        "| run | scores | wall s | clips/s | × three | `uptime` at its start |", "|---|---|---:|---:|---:|---|",
        *(f"| {v} | {', '.join(r['scores'])} | {r['seconds']:.1f} | {n / r['seconds']:.4f} | "
          f"{r['seconds'] / three if three else float('nan'):.2f} | `{r['uptime_at_start']}` |" for v, r in runs.items()),
        "",
        f"* each score alone, summed over the {len(alone)} run alone: {sum(alone):.1f} s.",
        *(f"* {v}: {r['note']}" for v, r in runs.items() if r.get("note")),
    ]  # fmt: skip
    write_report(args.out, lines, {"command": command, "clips": list(SCORE_ALL_CLIPS[:n]), "runs": runs})


def score_all_report(args: argparse.Namespace) -> None:
    by_name = {p.stem: p for p in make_corpus(args.corpus)}
    paths = [by_name[name] for name in SCORE_ALL_CLIPS[: args.clips]]
    meta_path = args.corpus / "score_all_meta.csv"
    meta_path.write_text("path,text\n" + "".join(f"{p},a textured surface panning slowly\n" for p in paths))
    n = len(paths)
    frames = sum(fps * secs for name, _, _, fps, secs, _ in CORPUS if name in SCORE_ALL_CLIPS[:n])
    score_all_runs(args, meta_path, n, frames)


if __name__ == "__main__":
    main()
