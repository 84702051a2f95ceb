"""Resources: settings, the DuckDB store and the scoring options, configured from the environment."""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from vidscore_core.scoring.options import JobOptions
from vidscore_core.settings import Settings
from vidscore_core.store import Store


def env_or(name: str, default: str) -> str | dg.EnvVar:
    """An `EnvVar` when the variable is set (the UI then shows where the value comes from), else the default."""
    return dg.EnvVar(name) if os.environ.get(name) else default


class VidscoreSettings(dg.ConfigurableResource):
    """Where data and weights live (VIDSCORE_HOME, VIDSCORE_MODELS_DIR and the per-file overrides)."""

    home: str = "./.vidscore"
    models_dir: str = "./pretrained_models"
    clip_weights: str = ""
    aesthetic_weights: str = ""
    unimatch_weights: str = ""

    def settings(self) -> Settings:
        def opt(value: str) -> Path | None:
            return Path(value).expanduser() if value else None

        return Settings(
            home=Path(self.home).expanduser(),
            models_dir=Path(self.models_dir).expanduser(),
            clip_weights_override=opt(self.clip_weights),
            aesthetic_weights_override=opt(self.aesthetic_weights),
            unimatch_weights_override=opt(self.unimatch_weights),
        )


class DuckDBStore(dg.ConfigurableResource):
    """The DuckDB file; steps open it only for short reads and one-transaction commits."""

    database: str = "./.vidscore/vidscore.duckdb"
    lock_timeout_s: float = 300.0

    def store(self) -> Store:
        store = Store(Path(self.database).expanduser(), lock_timeout_s=self.lock_timeout_s)
        store.ensure_schema()
        return store


class ScoringOptions(dg.ConfigurableResource):
    """How a scoring step runs: device, batch size, decode workers, precision, flow backend.

    `num_processes` > 1 splits each batch of the per-clip scores (clip_embeddings, flow_scores) over
    that many torchrun ranks on this machine, one GPU each; `dist_backend` is the torch.distributed
    backend of those ranks (auto: nccl on CUDA, gloo on CPU).
    """

    device: str = "auto"
    batch_size: int = 16
    num_workers: int = 2
    decode_timeout_s: float = 60.0
    precision: str = "auto"
    flow_backend: str = "unimatch"
    num_processes: int = 1
    dist_backend: str = "auto"

    def job_options(self, run_id: str, progress=None) -> JobOptions:
        return JobOptions(
            device=self.device,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            decode_timeout_s=self.decode_timeout_s,
            precision=self.precision,
            run_id=run_id,
            progress=progress,
        )


def default_resources(flow_backend: str | None = None) -> dict[str, dg.ConfigurableResource]:
    """Resources from the environment; `flow_backend` overrides VIDSCORE_FLOW_BACKEND (the demo uses it)."""
    home = os.environ.get("VIDSCORE_HOME") or "./.vidscore"
    return {
        "vidscore": VidscoreSettings(
            home=env_or("VIDSCORE_HOME", "./.vidscore"),
            models_dir=env_or("VIDSCORE_MODELS_DIR", "./pretrained_models"),
            clip_weights=env_or("VIDSCORE_CLIP_WEIGHTS", ""),
            aesthetic_weights=env_or("VIDSCORE_AESTHETIC_WEIGHTS", ""),
            unimatch_weights=env_or("VIDSCORE_UNIMATCH_WEIGHTS", ""),
        ),
        "duckdb": DuckDBStore(database=str(Path(home) / "vidscore.duckdb")),
        "scoring": ScoringOptions(
            device=env_or("VIDSCORE_DEVICE", "auto"),
            batch_size=int(os.environ.get("VIDSCORE_BATCH_SIZE") or 16),
            num_workers=int(os.environ.get("VIDSCORE_NUM_WORKERS") or 2),
            flow_backend=flow_backend or env_or("VIDSCORE_FLOW_BACKEND", "unimatch"),
            num_processes=int(os.environ.get("VIDSCORE_NUM_PROCESSES") or 1),
            dist_backend=env_or("VIDSCORE_DIST_BACKEND", "auto"),
        ),
    }
