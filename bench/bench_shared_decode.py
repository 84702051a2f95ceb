"""Decode cost of CLIP frames + flow frames in one pass vs CLIP frames alone (issue 11's ≤ 1.2×).

    .venv/bin/python bench/bench_shared_decode.py --out bench/results/shared-decode-cpu-2core

What a decode worker does per clip, timed in one process (no pool, no model), for each of:

* `clip`: the CLIP frames at 10/50/90 % cropped to 224 px (what `clip_embeddings` alone needs);
* `flow`: frames 0/10/20/30 resized to 320×576 float32 (what `flow_scores` alone needs);
* `both`: one pass for the two (`SharedDecodeSampler`, what a run selecting both does);

both as `decode` (`media.read_frame_sets`, frames only) and `prepare` (the worker's whole payload:
decode + crops + flow resize). With `--fixtures`, also the step's own path end to end
(`scoring.batch.score_videos` with its decode workers): `clip_embeddings` and `flow_scores` as two
steps vs one, with the fixtures' tiny random CLIP and the weight-free DIS flow, so that decoding,
not the models, is what the wall time shows. Each variant runs `--repeats` times per clip in rotating order; the
median per clip is summed over the corpus. The corpus is made reproducibly with `synth.write_clip`
(libx264, yuv420p): web-like keyframe intervals (1–2 s), one clip with libx264's default 250 and
one portrait clip, at 360p–720p.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

from vidscore_core.media import read_frame_sets
from vidscore_core.media.synth import pan_frames, texture_image, write_clip
from vidscore_core.scoring.clip_frames import ClipFrameSampler
from vidscore_core.scoring.engine import Item
from vidscore_core.scoring.flow_frames import FlowSampler
from vidscore_core.scoring.shared_decode import SharedDecodeSampler

# (name, width, height, fps, seconds, keyframe interval in frames; None = libx264's default 250)
CORPUS = [
    ("720p_10s_gop48", 1280, 720, 24, 10, 48),
    ("720p_6s_gop30", 1280, 720, 30, 6, 30),
    ("540p_8s_gop60", 960, 540, 30, 8, 60),
    ("360p_4s_gop25", 640, 360, 25, 4, 25),
    ("360p_20s_gop50", 640, 360, 25, 20, 50),
    ("portrait_540x960_5s_gop30", 540, 960, 30, 5, 30),
    ("720p_10s_default_gop", 1280, 720, 24, 10, None),
    ("360p_1s_short", 640, 360, 24, 1, 24),
]


def make_corpus(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (name, width, height, fps, seconds, gop) in enumerate(CORPUS):
        path = folder / f"{name}.mp4"
        if not path.exists():
            image = texture_image(height * 2, width * 2, seed=i)
            frames = pan_frames(image, width, height, fps * seconds, dx=2 + i % 4, dy=1)
            write_clip(path.with_suffix(".tmp.mp4"), frames, fps=fps, gop=gop).rename(path)
        paths.append(path)
    return paths


def variants() -> dict[str, dict]:
    clip, flow = ClipFrameSampler(), FlowSampler(backend="unimatch")
    return {
        "clip": {"requests": [clip.request], "sampler": SharedDecodeSampler((("clip", clip),))},
        "flow": {"requests": [flow.request], "sampler": SharedDecodeSampler((("flow", flow),))},
        "both": {"requests": [clip.request, flow.request],
                 "sampler": SharedDecodeSampler((("clip", clip), ("flow", flow)))},
    }  # fmt: skip


def time_once(kind: str, variant: dict, path: Path) -> float:
    started = time.perf_counter()
    if kind == "decode":
        got = read_frame_sets(path, variant["requests"], timeout_s=None)
        if any(isinstance(g, Exception) for g in got):
            raise RuntimeError(f"{path}: {got}")
    else:
        variant["sampler"].prepare(Item(0, path.stem, str(path)))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", type=Path, default=Path("/tmp/vidscore-bench-shared-decode"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, help="write OUT.json and OUT.md")
    parser.add_argument("--fixtures", type=Path, help="../shared/fixtures: adds the end-to-end comparison")
    parser.add_argument("--e2e-copies", type=int, default=6, help="each corpus clip this many times (own paths)")
    parser.add_argument("--num-workers", type=int, default=2)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)  # as in a decode worker
    paths = make_corpus(args.corpus)
    named = variants()
    for path in paths:  # warm the page cache and the imports
        for variant in named.values():
            time_once("prepare", variant, path)
    per_clip: dict[str, dict[str, dict[str, float]]] = {}
    for path in paths:
        samples = {(k, v): [] for k in ("decode", "prepare") for v in named}
        order = list(samples)
        for r in range(args.repeats):
            for kind, name in order[r % len(order):] + order[: r % len(order)]:  # rotate: no fixed position
                samples[kind, name].append(time_once(kind, named[name], path))
        per_clip[path.stem] = {f"{k}_{v}_ms": 1000 * statistics.median(s) for (k, v), s in samples.items()}
        print(path.stem, {k: round(v, 1) for k, v in per_clip[path.stem].items()}, flush=True)
    totals = {key: sum(c[key] for c in per_clip.values()) for key in next(iter(per_clip.values()))}
    report = {
        "machine": f"{platform.processor() or platform.machine()}, torch threads 1, in-process",
        "repeats": args.repeats,
        "clips": len(paths),
        "per_clip": per_clip,
        "totals_ms": totals,
        "ratios": {
            f"{kind}_both_vs_clip": totals[f"{kind}_both_ms"] / totals[f"{kind}_clip_ms"] for kind in ("decode", "prepare")
        }
        | {
            f"{kind}_both_vs_separate": totals[f"{kind}_both_ms"]
            / (totals[f"{kind}_clip_ms"] + totals[f"{kind}_flow_ms"])
            for kind in ("decode", "prepare")
        },
    }
    if args.fixtures:
        report["end_to_end"] = end_to_end(paths, args)
        print(json.dumps(report["end_to_end"], indent=1))
    print(json.dumps(report["ratios"], indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
        args.out.with_suffix(".md").write_text(markdown(report, args))


def end_to_end(paths: list[Path], args) -> dict:
    """Wall time of `score_videos` for clip_embeddings then flow_scores (two steps) vs both at once,
    alternated over `--repeats` rounds (median), on hard-linked copies of the corpus (own paths, own
    video ids, same bytes in the page cache)."""
    import os

    import pandas as pd

    from vidscore_core.ingest.meta import video_id_for
    from vidscore_core.scoring.options import JobOptions
    from vidscore_core.scoring.per_clip import score_videos
    from vidscore_core.settings import Settings

    copies = []
    for i in range(args.e2e_copies):
        for path in paths:
            copy = path.with_name(f"copy{i:02d}_{path.name}")
            if not copy.exists():
                os.link(path, copy)
            copies.append(copy)
    videos = pd.DataFrame({"video_id": [video_id_for(str(p)) for p in copies], "path": [str(p) for p in copies],
                           "text": ["a clip"] * len(copies), "error": [None] * len(copies)})  # fmt: skip
    weights = args.fixtures / "weights"
    settings = Settings(home=args.corpus / "home", weights={"clip": weights / "clip_tiny_openai.pt",
                        "aesthetic": weights / "aesthetic_random_scaled.pth"}, device="cpu")  # fmt: skip
    options = JobOptions(device="cpu", batch_size=8, num_workers=args.num_workers,
                         score_options={"flow": {"backend": "dis"}})

    def run(tables: list[str]) -> float:
        started = time.perf_counter()
        score_videos(tables, videos, "bench", settings, options)
        return time.perf_counter() - started

    run(["clip_embeddings", "flow_scores"])  # warm-up: imports, model load, page cache
    separate, together, clip_alone = [], [], []
    for _ in range(args.repeats):
        emb = run(["clip_embeddings"])
        separate.append(emb + run(["flow_scores"]))
        clip_alone.append(emb)
        together.append(run(["clip_embeddings", "flow_scores"]))
    return {
        "clips": len(copies),
        "num_workers": args.num_workers,
        "flow_backend": "dis (computed in the decode workers)",
        "clip_model": "fixture clip_tiny_openai.pt (random, tiny)",
        "clip_embeddings_alone_s": statistics.median(clip_alone),
        "two_steps_s": statistics.median(separate),
        "one_step_s": statistics.median(together),
    }


def markdown(report: dict, args) -> str:
    lines = [
        "# One decode per clip: CLIP + flow frames vs CLIP frames alone (CPU, 2 cores)",
        "",
        f"`.venv/bin/python bench/bench_shared_decode.py --repeats {args.repeats} --out {args.out}`; "
        f"{report['clips']} synthetic H.264 clips (see the script), median of {args.repeats} runs per clip "
        "and variant, in one process with torch at 1 thread (as a decode worker).",
        "",
        "| clip | decode clip | decode flow | decode both | prepare clip | prepare flow | prepare both | both/clip (prepare) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, c in report["per_clip"].items():
        lines.append(
            f"| {name} | {c['decode_clip_ms']:.1f} | {c['decode_flow_ms']:.1f} | {c['decode_both_ms']:.1f} | "
            f"{c['prepare_clip_ms']:.1f} | {c['prepare_flow_ms']:.1f} | {c['prepare_both_ms']:.1f} | "
            f"{c['prepare_both_ms'] / c['prepare_clip_ms']:.2f}× |"
        )
    t, r = report["totals_ms"], report["ratios"]
    lines += [
        f"| **total (ms)** | {t['decode_clip_ms']:.0f} | {t['decode_flow_ms']:.0f} | {t['decode_both_ms']:.0f} | "
        f"{t['prepare_clip_ms']:.0f} | {t['prepare_flow_ms']:.0f} | {t['prepare_both_ms']:.0f} | "
        f"{t['prepare_both_ms'] / t['prepare_clip_ms']:.2f}× |",
        "",
        f"* decode (frames only): both = **{r['decode_both_vs_clip']:.2f}×** clip alone; "
        f"{r['decode_both_vs_separate']:.2f}× of decoding the two separately.",
        f"* prepare (decode + 224 px crops + 320×576 float resize of the flow frames): both = "
        f"**{r['prepare_both_vs_clip']:.2f}×** clip alone; {r['prepare_both_vs_separate']:.2f}× of the two separately.",
        "",
    ]
    e = report.get("end_to_end")
    if e:
        lines += [
            "## The step's path end to end",
            "",
            f"`scoring.batch.score_videos` on {e['clips']} clips (hard-linked copies of the corpus), "
            f"{e['num_workers']} decode workers, CLIP: {e['clip_model']}, flow: {e['flow_backend']}; "
            f"median of {args.repeats} alternated rounds.",
            "",
            "| clip_embeddings alone | clip_embeddings, then flow_scores (two steps) | both in one step |",
            "|---:|---:|---:|",
            f"| {e['clip_embeddings_alone_s']:.1f} s | {e['two_steps_s']:.1f} s | {e['one_step_s']:.1f} s "
            f"({e['one_step_s'] / e['two_steps_s']:.2f}× two steps, {e['one_step_s'] / e['clip_embeddings_alone_s']:.2f}× "
            "clip_embeddings alone) |",
            "",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
