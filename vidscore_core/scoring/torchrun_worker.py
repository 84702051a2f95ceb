"""One torchrun rank: score this rank's shard of a batch and write it as its own Parquet part.

Launched by the Dagster step (through dagster-pipes) as
`torchrun --standalone --nproc-per-node N -m vidscore_core.scoring.torchrun_worker --spec SPEC.json`.
Every rank opens the pipes channel, so its progress shows up in the step's log; outside Dagster
the same lines go to stderr. Ranks publish nothing: the step publishes the parts as one partition afterwards.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pandas as pd

from vidscore_core.scoring.distributed import (
    WorkerSpec,
    part_path,
    rank_device,
    shard,
)
from vidscore_core.scoring.options import JobOptions, progress_lines
from vidscore_core.scoring.per_clip import ScoreSummary, score_videos
from vidscore_core.tables.store import to_arrow, write_parquet


@dataclasses.dataclass(frozen=True)
class RankInfo:
    rank: int
    world_size: int
    local_rank: int

    @classmethod
    def from_env(cls) -> RankInfo:
        # torchrun sets these; a plain `python -m vidscore_core.scoring.torchrun_worker` is a world of one.
        return cls(
            rank=int(os.environ.get("RANK", "0")),
            world_size=int(os.environ.get("WORLD_SIZE", "1")),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
        )


class RankLog:
    """Log lines through dagster-pipes when Dagster launched us, else to stderr; prefixed by rank."""

    def __init__(self, rank: RankInfo, pipes: Any | None) -> None:
        self.prefix = f"[rank {rank.rank}/{rank.world_size}] "
        self.pipes = pipes

    def info(self, message: str) -> None:
        if self.pipes is not None:
            self.pipes.log.info(self.prefix + message)
        else:
            print(self.prefix + message, file=sys.stderr, flush=True)

    def progress(self, label: str) -> Callable[[int, int], None]:
        return progress_lines(label, self.info)


@contextlib.contextmanager
def open_pipes() -> Iterator[Any | None]:
    """The dagster-pipes context when launched by a Dagster pipes client, else None."""
    try:
        from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes
    except ImportError:  # dagster-pipes is optional outside the Dagster deployment
        yield None
        return
    if not PipesEnvVarParamsLoader().is_dagster_pipes_process():
        yield None
        return
    with open_dagster_pipes() as pipes:
        yield pipes


def dist_backend(requested: str, device: str) -> str:
    import torch.distributed as dist

    if requested != "auto":
        return requested
    return "nccl" if device.startswith("cuda") and dist.is_nccl_available() else "gloo"


def run(spec: WorkerSpec, rank: RankInfo, log: RankLog, pipes: Any | None) -> ScoreSummary:
    import torch
    import torch.distributed as dist

    device = rank_device(spec.options.get("device", "auto"), rank.local_rank)
    if device.startswith("cuda"):
        torch.cuda.set_device(device)  # NCCL collectives use the current device
    distributed = rank.world_size > 1
    if distributed:
        dist.init_process_group(
            backend=dist_backend(spec.dist_backend, device),
            timeout=timedelta(seconds=spec.collective_timeout_s),
        )
    try:
        videos = pd.read_parquet(spec.videos_path)
        mine = shard(videos, rank.rank, rank.world_size)
        label = "+".join(spec.tables)
        log.info(f"{label}[{spec.batch}]: {len(mine)} of {len(videos)} clips on {device}")
        options = JobOptions(**{**spec.options, "device": device}, progress=log.progress(label))
        settings = spec.to_settings()
        frames, summary = score_videos(
            spec.tables, mine, spec.batch, settings, options, log=log.info
        )
        summary.rank = rank.rank
        paths = {}
        for table, frame in frames.items():
            paths[table] = str(write_parquet(to_arrow(frame, table), part_path(spec.parts_dir, table, rank.rank)))
            log.info(f"wrote {len(frame)} rows to {paths[table]}")
        if pipes is not None:
            pipes.report_custom_message(
                {"rank": rank.rank, "paths": paths, "rows": {t: len(f) for t, f in frames.items()},
                 **dataclasses.asdict(summary)}
            )  # fmt: skip
        if distributed:
            # Every rank waits here until all parts are written, so a success means the set is complete.
            gathered: list[Any] = [None] * rank.world_size
            dist.all_gather_object(gathered, dataclasses.asdict(summary))
            if rank.rank == 0:
                clips = sum(s["clips"] for s in gathered)
                slowest = max(s["seconds"] for s in gathered)
                log.info(f"all {rank.world_size} ranks wrote {clips} clips; slowest rank {slowest:.1f}s")
        return summary
    finally:
        if distributed and dist.is_initialized():
            dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", required=True, help="JSON written by the launching step (WorkerSpec)")
    args = parser.parse_args(argv)
    spec = WorkerSpec.read(args.spec)
    rank = RankInfo.from_env()
    with open_pipes() as pipes:
        run(spec, rank, RankLog(rank, pipes), pipes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
