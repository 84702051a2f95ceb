"""Cost of the `ocr` and `shots` signals per clip, next to `clip_embeddings` alone on the same clips.

    .venv/bin/python bench/bench_text_shots.py --fixtures ../shared/fixtures --out bench/results/text-shots-cpu-2core

Two parts, on the corpus of `bench_shared_decode.py` (360p–720p, 1–20 s, libx264):

* decode only (one process, no pool, no model), median of `--repeats` per clip, summed: the CLIP
  frames alone; with frame 10 for ocr; every frame at 48×27 alone (shots); the CLIP frames and every
  frame at 48×27 in one pass (`read_frame_sets`, what a run with both does) and in two passes (what it
  would cost apart);
* the step's own path (`scoring.per_clip.score_videos`, decode workers, models on the CPU): each table
  set once, wall seconds. CLIP is the fixtures' tiny random checkpoint and flow the weight-free DIS
  backend, so the figures show decoding and the new models (PP-OCRv4 at 1024×1024, TransNetV2 on
  every frame), not ViT-L/14: on a GPU the CLIP tower's cost is in `bench/gpu_check.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import pandas as pd
from bench_shared_decode import CORPUS, make_corpus

from vidscore_core.media import FrameRequest, read_frame_sets
from vidscore_core.scoring.clip_frames import AESTHETIC_POINTS
from vidscore_core.scoring.ocr_frames import OCR_FRAME_INDEX
from vidscore_core.scoring.shot_frames import FRAME_SIZE

CLIP = FrameRequest(points=AESTHETIC_POINTS)
OCR = FrameRequest(indices=(OCR_FRAME_INDEX,))
SHOTS = FrameRequest(size=FRAME_SIZE)
DECODE_VARIANTS = {
    "clip": [[CLIP]],
    "clip+ocr": [[CLIP, OCR]],
    "shots alone": [[SHOTS]],
    "clip+ocr+shots, one pass": [[CLIP, OCR, SHOTS]],
    "clip+ocr, then shots (two passes)": [[CLIP, OCR], [SHOTS]],
}
STEP_VARIANTS = {
    "clip_embeddings": (["clip_embeddings"], "transnetv2"),
    "ocr_scores": (["ocr_scores"], "transnetv2"),
    "shot_scores (transnetv2)": (["shot_scores"], "transnetv2"),
    "shot_scores (scenedetect)": (["shot_scores"], "scenedetect"),
    "the three of today: clip_embeddings+flow_scores": (["clip_embeddings", "flow_scores"], "transnetv2"),
    "with ocr and shots: clip_embeddings+flow_scores+ocr_scores+shot_scores": (
        ["clip_embeddings", "flow_scores", "ocr_scores", "shot_scores"], "transnetv2"),
}  # fmt: skip


def decode_seconds(paths: list[Path], repeats: int) -> dict[str, float]:
    per_variant: dict[str, list[float]] = {name: [] for name in DECODE_VARIANTS}
    for path in paths:
        samples: dict[str, list[float]] = {name: [] for name in DECODE_VARIANTS}
        for r in range(repeats):
            names = list(DECODE_VARIANTS)
            for name in names[r % len(names) :] + names[: r % len(names)]:  # rotating order
                t0 = time.perf_counter()
                for requests in DECODE_VARIANTS[name]:
                    read_frame_sets(path, requests)
                samples[name].append(time.perf_counter() - t0)
        for name, values in samples.items():
            per_variant[name].append(statistics.median(values))
    return {name: sum(values) for name, values in per_variant.items()}


def step_seconds(paths: list[Path], fixtures: Path, workers: int) -> dict[str, dict]:
    from vidscore_core.scoring.options import JobOptions
    from vidscore_core.scoring.per_clip import score_videos
    from vidscore_core.settings import Settings

    weights = fixtures / "weights"
    os.environ.update(VIDSCORE_CLIP_WEIGHTS=str(weights / "clip_tiny_openai.pt"), VIDSCORE_DEVICE="cpu")
    settings = Settings.from_env()
    videos = pd.DataFrame({"video_id": [p.stem for p in paths], "path": [str(p) for p in paths],
                           "text": None, "error": None})  # fmt: skip
    out = {}
    for name, (tables, backend) in STEP_VARIANTS.items():
        options = JobOptions(device="cpu", batch_size=4, num_workers=workers,
                             score_options={"flow": {"backend": "dis"}, "shots": {"detector": backend}})  # fmt: skip
        t0 = time.perf_counter()
        frames, summary = score_videos(tables, videos, "bench", settings, options)
        wall = time.perf_counter() - t0
        out[name] = {"wall_s": wall, "per_clip_s": wall / len(paths), "model_s": summary.model_seconds,
                     "errors": summary.errors}  # fmt: skip
        print(f"{name}: {wall:.1f} s ({wall / len(paths):.2f} s/clip, model {summary.model_seconds:.1f} s)")
    return out


def markdown(report: dict) -> str:
    lines = ["# ocr and shots: cost per clip next to clip_embeddings (CPU)", "",
             f"`{report['command']}` on {report['machine']}; {report['clips']} clips ({', '.join(report['corpus'])}).", "",
             "## Decode only (one process, median of repeats per clip, summed)", "",
             "| frames read | seconds | × clip |", "|---|---:|---:|"]  # fmt: skip
    base = report["decode_s"]["clip"]
    for name, seconds in report["decode_s"].items():
        lines.append(f"| {name} | {seconds:.2f} | {seconds / base:.2f} |")
    lines += ["", "## The step's path (score_videos, decode workers, models on the CPU)", "",
              "| tables | wall s | s/clip | model s | × clip_embeddings |", "|---|---:|---:|---:|---:|"]  # fmt: skip
    base = report["steps"]["clip_embeddings"]["wall_s"]
    for name, row in report["steps"].items():
        lines.append(f"| {name} | {row['wall_s']:.1f} | {row['per_clip_s']:.2f} | {row['model_s']:.1f} | "
                     f"{row['wall_s'] / base:.2f} |")  # fmt: skip
    return "\n".join(lines + ["", *report["notes"], ""])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--fixtures", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True, help="report path without extension")
    p.add_argument("--corpus", type=Path, default=Path("/tmp/vidscore-bench-corpus"))
    p.add_argument("--clips", type=int, default=len(CORPUS))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    paths = make_corpus(args.corpus)[: args.clips]
    report = {
        "command": "python bench/bench_text_shots.py " + f"--clips {args.clips} --repeats {args.repeats} --workers {args.workers}",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs (shared with other jobs while measured)",
        "clips": len(paths),
        "corpus": [p.stem for p in paths],
        "decode_s": decode_seconds(paths, args.repeats),
        "steps": step_seconds(paths, args.fixtures, args.workers),
        "notes": [
            "* One pass: `read_frame_sets` decodes every frame once, scaling each to 48×27 in the RGB "
            "conversion and converting the wanted frames at full size too (8-bit 4:2:0 video).",
            "* CLIP is the fixtures' tiny random checkpoint and flow the DIS backend: the CLIP rows show "
            "decoding plus a small model, not ViT-L/14.",
        ],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
