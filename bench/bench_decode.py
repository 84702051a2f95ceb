"""Decode + CLIP preprocessing, clips/s: vidscore's engine vs the reference's way of loading frames.

    .venv/bin/python bench/bench_decode.py --clips 24 --num-workers 2

The corpus is made reproducibly (seeded texture, panned, libx264 single-threaded): N clips of
1280×720 H.264, 10 s at 24 fps. Both sides sample the aesthetic frames (10/50/90 %) of every clip
and end with the same normalized [3, 224, 224] float tensors, in a DataLoader with the same worker
count and batch size:

* vidscore: the real engine (`run_parts`, as the jobs call it) with the CLIP frame sampler: decord decodes only the
  wanted frames, the workers crop to 224 px in uint8, the main process normalizes the batch.
* reference: what the Open-Sora scoring scripts do per clip: OpenCV frame count, one
  `CAP_PROP_POS_FRAMES` seek + read per frame, BGR→RGB, PIL image, then CLIP's torchvision
  transform (Resize 224 bicubic, CenterCrop, ToTensor, Normalize) in the workers.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

from vidscore_core.media.synth import pan_frames, texture_image, write_clip
from vidscore_core.models.clip import OPENAI_MEAN, OPENAI_STD, normalize_uint8
from vidscore_core.scoring.clip_frames import AESTHETIC_POINTS, ClipFrameSampler
from vidscore_core.scoring.engine import Item
from vidscore_core.scoring.shared_decode import ScorePart, run_parts

WIDTH, HEIGHT, FPS, SECONDS = 1280, 720, 24, 10


def make_corpus(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"clip_{i:03d}.mp4"
        if not path.exists():
            image = texture_image(HEIGHT * 2, WIDTH * 2, seed=i)
            frames = pan_frames(image, WIDTH, HEIGHT, FPS * SECONDS, dx=3 + i % 5, dy=1)
            write_clip(path.with_suffix(".tmp.mp4"), frames, fps=FPS).rename(path)
        paths.append(path)
    return paths


class _NormalizeOnly:
    """A stand-in model: the engine's main-process preprocessing (uint8 crops → normalized floats)."""

    name = "decode_bench"

    def __init__(self) -> None:
        self.sampler = ClipFrameSampler(points=AESTHETIC_POINTS, image_size=224)
        self.frames = 0

    def run(self, data, clips):
        pixels = normalize_uint8(data["crops"])
        self.frames += pixels.shape[0]
        return [{} for _ in clips]


class _ReferenceFrames(Dataset):
    """The reference loading: OpenCV seek per frame, PIL, torchvision's CLIP transform."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.transform = Compose([
            Resize(224, interpolation=InterpolationMode.BICUBIC),
            CenterCrop(224),
            ToTensor(),
            Normalize(OPENAI_MEAN, OPENAI_STD),
        ])  # fmt: skip

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        cap = cv2.VideoCapture(str(self.paths[i]))
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        images = []
        for point in AESTHETIC_POINTS:
            cap.set(cv2.CAP_PROP_POS_FRAMES, int(total * point))
            ok, frame = cap.read()
            if not ok:
                raise RuntimeError(f"{self.paths[i]}: no frame at {point}")
            images.append(self.transform(Image.fromarray(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))))
        cap.release()
        return torch.stack(images)


def time_vidscore(paths: list[Path], workers: int, bs: int) -> tuple[float, int]:
    clips = [Item(index=i, video_id=str(i), path=str(p)) for i, p in enumerate(paths)]
    scorer = _NormalizeOnly()
    started = time.perf_counter()
    results = run_parts([ScorePart("clip", scorer)], clips, device="cpu", batch_size=bs, num_workers=workers)["clip"]
    seconds = time.perf_counter() - started
    errors = [r.error for r in results if r.error]
    if errors:
        raise RuntimeError(f"vidscore decode errors: {errors[:3]}")
    return seconds, scorer.frames


def time_reference(paths: list[Path], workers: int, bs: int) -> tuple[float, int]:
    loader = DataLoader(_ReferenceFrames(paths), batch_size=bs, num_workers=workers)
    started = time.perf_counter()
    frames = sum(batch.shape[0] * batch.shape[1] for batch in loader)
    return time.perf_counter() - started, frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clips", type=int, default=24)
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument("--bs", type=int, default=8)
    parser.add_argument("--corpus", type=Path, default=Path("/tmp/vidscore-bench-720p"))
    args = parser.parse_args()
    torch.set_num_threads(1)  # the workers do the decoding; keep the main process from competing

    started = time.perf_counter()
    paths = make_corpus(args.corpus, args.clips)
    print(
        f"corpus: {len(paths)} clips {WIDTH}x{HEIGHT} {FPS * SECONDS} frames ({time.perf_counter() - started:.1f}s)"
    )
    # Warm the page cache and the imports once, so neither side pays for the other's first read.
    time_reference(paths[:2], 0, args.bs)
    time_vidscore(paths[:2], 0, args.bs)

    ours, our_frames = time_vidscore(paths, args.num_workers, args.bs)
    ref, ref_frames = time_reference(paths, args.num_workers, args.bs)
    assert our_frames == ref_frames == 3 * len(paths), (our_frames, ref_frames)
    n = len(paths)
    print(f"workers={args.num_workers} bs={args.bs}")
    print(f"vidscore engine : {ours:7.2f} s  {n / ours:6.2f} clips/s")
    print(f"reference way   : {ref:7.2f} s  {n / ref:6.2f} clips/s")
    print(f"speed-up        : {ref / ours:.2f}x")


if __name__ == "__main__":
    main()
