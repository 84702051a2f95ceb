"""Aesthetic + matching from one CLIP pass vs aesthetic alone vs the two run separately.

    .venv/bin/python bench/bench_clip_pair.py --model vit-l-14 --clips 16 --device cpu

Builds a random-weight CLIP in OpenAI's format (speed does not depend on weight values; `tiny` is
the parity fixture's 2-layer model, `vit-l-14` the full-size architecture) and a random LAION MLP,
writes N 640×360 clips, and times the three ways through the real engine (decode workers included).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch

from vidscore_core.media.synth import pan_frames, texture_image, write_clip
from vidscore_core.models.aesthetic import AestheticMLP
from vidscore_core.models.clip import ClipArch, build_clip
from vidscore_core.scoring.clip_frames import AESTHETIC_POINTS, MATCHING_POINTS
from vidscore_core.scoring.engine import Item
from vidscore_core.scoring.options import JobOptions
from vidscore_core.scoring.score_jobs import ClipJob
from vidscore_core.settings import Settings

ARCHS = {
    "tiny": ClipArch(768, 224, 2, 64, 14, 77, 49408, 64, 1, 2),
    "vit-l-14": ClipArch(768, 224, 24, 1024, 14, 77, 49408, 768, 12, 12),
}


def write_weights(folder: Path, model: str) -> tuple[Path, Path]:
    torch.manual_seed(0)
    clip_path, mlp_path = folder / "clip.pt", folder / "aesthetic.pth"
    torch.save(build_clip(ARCHS[model]).state_dict(), clip_path)
    torch.save(AestheticMLP(768).state_dict(), mlp_path)
    return clip_path, mlp_path


def write_clips(folder: Path, n: int) -> list[Item]:
    texture = texture_image(720, 1280, seed=3)
    clips = []
    for i in range(n):
        path = folder / f"clip_{i:03d}.mp4"
        write_clip(path, pan_frames(texture, 640, 360, 48, dx=1 + i % 4, dy=0))
        clips.append(Item(i, f"v{i}", str(path), f"a textured surface panning, take {i}"))
    return clips


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", choices=sorted(ARCHS), default="tiny")
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--bs", type=int, default=8)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        clip_path, mlp_path = write_weights(tmp, args.model)
        (tmp / "clips").mkdir()
        clips = write_clips(tmp / "clips", args.clips)
        settings = Settings(home=tmp / "home", models_dir=tmp, weights={"clip": clip_path, "aesthetic": mlp_path})  # fmt: skip
        job = ClipJob(
            settings, JobOptions(device=args.device, batch_size=args.bs, num_workers=args.num_workers)
        )
        texts = [c.text for c in clips]

        def aesthetic_alone():
            job.aesthetic_rows(job.embed(clips, AESTHETIC_POINTS), "b")

        def shared_pass():
            items = job.embed(clips, AESTHETIC_POINTS)
            job.aesthetic_rows(items, "b")
            job.matching_rows(items, texts, "b")

        def separately():
            job.aesthetic_rows(job.embed(clips, AESTHETIC_POINTS), "b")
            job.matching_rows(job.embed(clips, MATCHING_POINTS), texts, "b")

        shared_pass()  # warm-up: model load, tokenizer, first decode
        rows = []
        for name, fn in (("aesthetic alone", aesthetic_alone), ("aes + match, one pass", shared_pass),
                         ("aes + match, separately", separately)):  # fmt: skip
            best = min(timed(fn) for _ in range(args.repeats))
            rows.append({"run": name, "seconds": round(best, 2), "clips/s": round(args.clips / best, 2)})
        table = pd.DataFrame(rows)
        base = table.loc[0, "seconds"]
        table["x aesthetic"] = (table["seconds"] / base).round(3)
        print(
            f"model={args.model} device={job.device} clips={args.clips} bs={args.bs} "
            f"workers={args.num_workers} cores={os.cpu_count()} torch_threads={torch.get_num_threads()}"
        )
        print(table.to_string(index=False))


if __name__ == "__main__":
    main()
