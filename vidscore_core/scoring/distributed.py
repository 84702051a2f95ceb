"""Shard one batch over the GPUs of a machine with torchrun: shards, staged parts, the launch.

`vidscore_core.scoring.per_clip.score_videos` is the single code path for the shardable scores
(`clip_embeddings`, `flow_scores`): the Dagster step calls it on the whole batch when it runs alone,
and each torchrun rank (`vidscore_core.scoring.torchrun_worker`) calls it on its own disjoint shard, so the
two give the same rows.
Each rank writes its rows as a Parquet part (`rank<r>.parquet`) in a folder private to the run
and batch; the step then publishes all parts as the batch's one file. Parts of another run are
never read, so no run can adopt or delete another's work.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from vidscore_core.scoring.options import JobOptions
from vidscore_core.settings import Settings

WORKER_MODULE = "vidscore_core.scoring.torchrun_worker"


# -- sharding ------------------------------------------------------------------------------------


def shard_bounds(n: int, rank: int, world_size: int) -> tuple[int, int]:
    """[start, stop) of rank's contiguous shard of n items; sizes differ by at most one."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of size {world_size}")
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def shard(frame: pd.DataFrame, rank: int, world_size: int) -> pd.DataFrame:
    """Rank's rows of `frame`: the shards of all ranks are disjoint and cover every row once."""
    start, stop = shard_bounds(len(frame), rank, world_size)
    return frame.iloc[start:stop].reset_index(drop=True)


def part_path(parts_dir: Path, table: str, rank: int) -> Path:
    return Path(parts_dir) / table / f"rank{rank}.parquet"


def part_paths(parts_dir: Path, table: str, world_size: int) -> list[Path]:
    """The parts of `table` the ranks of a world of `world_size` write."""
    return [part_path(parts_dir, table, r) for r in range(world_size)]


# -- launching -----------------------------------------------------------------------------------


@dataclass
class WorkerSpec:
    """Everything a torchrun rank needs, written as JSON by the launching step."""

    tables: list[str]  # the per-clip tables scored together (one decode per clip)
    batch: str
    videos_path: str  # Parquet with the batch's `videos` rows (video_id, path, text, error)
    parts_dir: str  # where rank r writes <table>/rank<r>.parquet: private to this run and batch
    settings: dict = field(default_factory=dict)  # Settings fields, paths as strings
    options: dict = field(default_factory=dict)  # JobOptions fields except `progress` (score options too)
    dist_backend: str = "auto"  # auto: nccl for CUDA ranks, gloo otherwise
    collective_timeout_s: float = 6 * 3600.0  # the final gather waits for the slowest rank

    @classmethod
    def build(
        cls,
        *,
        tables: list[str],
        batch: str,
        videos_path: Path,
        parts_dir: Path,
        settings: Settings,
        options: JobOptions,
        dist_backend: str = "auto",
    ) -> WorkerSpec:
        option_fields = {
            f.name: getattr(options, f.name) for f in dataclasses.fields(options) if f.name != "progress"
        }
        return cls(
            tables=list(tables),
            batch=batch,
            videos_path=str(videos_path),
            parts_dir=str(parts_dir),
            settings=settings.to_json(),
            options=option_fields,
            dist_backend=dist_backend,
        )

    def write(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(dataclasses.asdict(self), indent=1), encoding="utf-8")
        return path

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> WorkerSpec:
        return cls(**json.loads(Path(path).read_text(encoding="utf-8")))

    def to_settings(self) -> Settings:
        return Settings.from_json(self.settings)


def torchrun_command(nproc: int, spec_path: Path, *, python: str | None = None) -> list[str]:
    """`torchrun --standalone --nproc-per-node N -m vidscore_core.scoring.torchrun_worker --spec SPEC`.

    Run as `python -m torch.distributed.run` (what the `torchrun` script calls) with this interpreter,
    so it works in a virtualenv whose bin/ is not on PATH. `--standalone` picks a free local port for
    the rendezvous, so several steps on one machine never collide.
    """
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    return [
        python or sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
        "-m", WORKER_MODULE, "--spec", str(spec_path),
    ]  # fmt: skip


def worker_env(nproc: int, device: str) -> dict[str, str]:
    """Environment for the ranks: the package importable, and CPU threads split between ranks."""
    package_root = str(Path(__file__).resolve().parents[2])  # the folder holding vidscore_core/
    path = os.environ.get("PYTHONPATH")
    env = {"PYTHONPATH": package_root + (os.pathsep + path if path else "")}
    if "OMP_NUM_THREADS" not in os.environ:
        # torchrun would force 1 thread per rank; on CPU give each rank its share of the cores.
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc)) if device == "cpu" else "1"
    return env


def rank_device(requested: str, local_rank: int) -> str:
    """The device of one rank: `cuda:<local rank>` when CUDA is used, else `cpu`."""
    import torch

    requested = (requested or "auto").strip().lower()
    if requested == "cpu":
        return "cpu"
    if torch.cuda.is_available():
        return f"cuda:{local_rank % torch.cuda.device_count()}"
    if requested == "auto":
        return "cpu"
    raise ValueError(f"device {requested!r} was asked for but CUDA is not available on this machine")
