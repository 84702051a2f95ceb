"""Resources: where data and weights live, and how scoring runs.

Every field left empty means "from the environment, read when the step runs" (the variables of
docs/ARCHITECTURE.md's contract). So a per-run override of one field in the launchpad changes that field
only: the others keep the deployment's values instead of falling back to class defaults, and no
run can silently write to another table location.
"""

from __future__ import annotations

import os

import dagster as dg
from pydantic import Field

from vidscore_core import scores
from vidscore_core.scoring.options import JobOptions
from vidscore_core.settings import Settings
from vidscore_core.tables.store import TableStore

FROM_ENV = "empty: from the environment"


class VidscoreSettings(dg.ConfigurableResource):
    """Where tables and weights live (VIDSCORE_HOME, VIDSCORE_TABLES, VIDSCORE_MODELS_DIR, overrides)."""

    home: str = Field(default="", description=f"VIDSCORE_HOME; {FROM_ENV}, else ./.vidscore")
    tables: str = Field(default="", description=f"VIDSCORE_TABLES (a folder or s3://bucket/prefix); {FROM_ENV}, "
                        "else $VIDSCORE_HOME/tables")  # fmt: skip
    models_dir: str = Field(default="", description=f"VIDSCORE_MODELS_DIR; {FROM_ENV}")
    weights: dict[str, str] = Field(default={}, description="model files to use, by weights name (clip, "
                                    "aesthetic, unimatch, ...); a name left out: VIDSCORE_<NAME>_WEIGHTS, "
                                    "else the file in the models dir")  # fmt: skip

    def settings(self) -> Settings:
        from pathlib import Path

        env = Settings.from_env()

        def path(value: str, fallback):
            return Path(value).expanduser() if value else fallback

        overrides = {name: Path(value).expanduser() for name, value in self.weights.items() if value}
        return Settings(
            home=path(self.home, env.home),
            models_dir=path(self.models_dir, env.models_dir),
            weights={**env.weights, **overrides},
            device=env.device,
            tables=self.tables or env.tables,
        )

    def store(self) -> TableStore:
        return TableStore.from_settings(self.settings())


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


class ScoringOptions(dg.ConfigurableResource):
    """How a scoring step runs: device, batch size, decode workers, precision, each score's options.

    `num_processes` > 1 splits each batch of the per-clip scores (clip_embeddings, flow_scores) over
    that many torchrun ranks on this machine, one GPU each; `dist_backend` is the torch.distributed
    backend of those ranks (auto: nccl on CUDA, gloo on CPU). Empty fields come from the environment.
    """

    device: str = Field(default="", description=f"VIDSCORE_DEVICE; {FROM_ENV}, else auto")
    batch_size: int | None = Field(default=None, description="VIDSCORE_BATCH_SIZE, else 16")
    num_workers: int | None = Field(default=None, description="VIDSCORE_NUM_WORKERS, else 2")
    decode_timeout_s: float | None = Field(default=None, description="seconds per clip, else 60")
    precision: str = Field(default="", description="auto, fp32, fp16, bf16, tf32; empty: auto")
    score_options: dict[str, dict[str, str]] = Field(
        default={}, description="options a score declares, by score and option (flow: {backend: dis}); "
        "one left out: VIDSCORE_<SCORE>_<OPTION>, else its default")  # fmt: skip
    num_processes: int | None = Field(default=None, description="VIDSCORE_NUM_PROCESSES, else 1")
    dist_backend: str = Field(default="", description=f"VIDSCORE_DIST_BACKEND; {FROM_ENV}, else auto")

    def resolved(self) -> dict:
        """Every option with its effective value (config, else environment, else default)."""
        return {
            "device": self.device or os.environ.get("VIDSCORE_DEVICE") or "auto",
            "batch_size": self.batch_size or _env_int("VIDSCORE_BATCH_SIZE", 16),
            "num_workers": self.num_workers if self.num_workers is not None else _env_int("VIDSCORE_NUM_WORKERS", 2),
            "decode_timeout_s": self.decode_timeout_s or 60.0,
            "precision": self.precision or "auto",
            "score_options": scores.resolve_options(self.score_options),
            "num_processes": self.num_processes or _env_int("VIDSCORE_NUM_PROCESSES", 1),
            "dist_backend": self.dist_backend or os.environ.get("VIDSCORE_DIST_BACKEND") or "auto",
        }  # fmt: skip

    def job_options(self, run_id: str, progress=None) -> JobOptions:
        values = self.resolved()
        return JobOptions(
            device=values["device"],
            batch_size=values["batch_size"],
            num_workers=values["num_workers"],
            decode_timeout_s=values["decode_timeout_s"],
            precision=values["precision"],
            run_id=run_id,
            progress=progress,
            score_options=values["score_options"],
        )


def default_resources(score_options: scores.ScoreOptions | None = None) -> dict[str, dg.ConfigurableResource]:
    """The code location's resources; `score_options` pins score options (the demo: flow's `dis`)."""
    return {
        "vidscore": VidscoreSettings(),
        "scoring": ScoringOptions(score_options=score_options or {}),
    }
