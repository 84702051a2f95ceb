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
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from bench_shared_decode import make_corpus

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
    "flow_dis": FlowSampler(backend="dis"),
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--corpus", type=Path, default=Path("/tmp/vidscore-bench-shared-decode"))
    parser.add_argument("--clips", type=int, default=None, help="only the first N clips of the corpus")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    paths = make_corpus(args.corpus)[: args.clips]
    load = os.getloadavg()[0]
    samplers = {v: SharedDecodeSampler(tuple((p, PARTS[p]) for p in parts)) for v, parts in VARIANTS.items()}
    per_clip: dict[str, dict[str, float]] = {}
    for path in paths:
        clip = Item(index=0, video_id=path.stem, path=str(path))
        times: dict[str, list[float]] = {v: [] for v in VARIANTS}
        for r in range(args.repeats):
            order = list(VARIANTS)[r % len(VARIANTS):] + list(VARIANTS)[: r % len(VARIANTS)]
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
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    args.out.with_suffix(".json").write_text(json.dumps({"per_clip_ms": per_clip, "totals_ms": totals,
                                                         "object_motion_fit_ms": fit_ms}, indent=1))  # fmt: skip
    print("\n".join(lines))


if __name__ == "__main__":
    main()
