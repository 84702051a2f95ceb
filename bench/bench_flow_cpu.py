"""CPU throughput of the two flow backends at the model resolution (320x576), in pairs per second.

    .venv/bin/python bench/bench_flow_cpu.py [--weights PATH] [--threads 2] [--batch 3] [--repeats 3]

UniMatch speed does not depend on weight values, so the random-weight fixture checkpoint is the
default. Inputs are a real photograph panned by a few pixels, prepared exactly like clip frames.
The 1-minute load average is printed with each row: other processes on the machine skew timings.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from vidscore_core.models.flow import FLOW_SIZE, DISFlow, UniMatchFlow, prepare_flow_frames
from vidscore_core.models.unimatch import load_unimatch

_FIXTURES = os.environ.get("VIDSCORE_FIXTURES") or Path(__file__).resolve().parents[2] / "shared/fixtures"
DEFAULT_WEIGHTS = Path(_FIXTURES) / "weights/unimatch_random.pth"


def panned_frames(num_frames: int) -> torch.Tensor:
    from skimage import data

    photo = data.coffee()  # 400 x 600 RGB
    frames = np.stack([photo[20 : 20 + 270, 10 + 4 * t : 10 + 4 * t + 480] for t in range(num_frames)])
    return prepare_flow_frames(torch.from_numpy(frames))


def time_call(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median (wall seconds, process CPU seconds) per call. CPU time is the steadier number on a
    shared machine; wall time is what a user waits."""
    fn()  # warm-up: allocator, oneDNN primitive caches
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=3, help="pairs per forward (3 = one clip)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    frames = panned_frames(args.batch + 1)
    img0, img1 = frames[:-1], frames[1:]
    backends = [("dis", DISFlow()), ("unimatch", UniMatchFlow(load_unimatch(args.weights)))]

    print(
        f"CPU flow throughput at {FLOW_SIZE[0]}x{FLOW_SIZE[1]}, torch {torch.__version__}, "
        f"{args.threads} threads, {args.batch} pairs per call, median of {args.repeats}"
    )
    print(f"{'backend':<10} {'s/call':>8} {'s/pair':>8} {'pairs/s':>8} {'cpu-s/pair':>10} {'load1':>6}")
    for name, backend in backends:
        wall, cpu = time_call(lambda b=backend: b.batch_pair_flows(img0, img1), args.repeats)
        per_pair = wall / args.batch
        print(
            f"{name:<10} {wall:8.3f} {per_pair:8.3f} {1 / per_pair:8.3f} {cpu / args.batch:10.3f} "
            f"{os.getloadavg()[0]:6.2f}"
        )


if __name__ == "__main__":
    main()
