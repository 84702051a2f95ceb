"""Runtime settings read from the environment (the public contract in DESIGN.md)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

CLIP_FILE = "clip/ViT-L-14.pt"
AESTHETIC_FILE = "aesthetic.pth"
UNIMATCH_FILE = "unimatch/gmflow-scale2-regrefine6-mixdata-train320x576-4e7b215d.pth"

# Where OpenAI's own `clip` package caches the ViT-L/14 archive; looked at when the models dir lacks it.
OPENAI_CLIP_CACHE = Path("~/.cache/clip/ViT-L-14.pt")


def _env_path(name: str, default: str) -> Path:
    return Path(os.environ.get(name) or default).expanduser()


@dataclass(frozen=True)
class Settings:
    """Paths and device choice. Build with `Settings.from_env()`; fields may be overridden explicitly."""

    home: Path = field(default_factory=lambda: _env_path("VIDSCORE_HOME", "./.vidscore"))
    models_dir: Path = field(default_factory=lambda: _env_path("VIDSCORE_MODELS_DIR", "./pretrained_models"))
    clip_weights_override: Path | None = None
    aesthetic_weights_override: Path | None = None
    unimatch_weights_override: Path | None = None
    device: str = "auto"
    # Where the tables' Parquet partitions live: a local/shared folder or `s3://bucket/prefix`.
    tables: str = field(default_factory=lambda: os.environ.get("VIDSCORE_TABLES") or "")

    @classmethod
    def from_env(cls) -> Settings:
        def opt(name: str) -> Path | None:
            value = os.environ.get(name)
            return Path(value).expanduser() if value else None

        return cls(
            home=_env_path("VIDSCORE_HOME", "./.vidscore"),
            models_dir=_env_path("VIDSCORE_MODELS_DIR", "./pretrained_models"),
            clip_weights_override=opt("VIDSCORE_CLIP_WEIGHTS"),
            aesthetic_weights_override=opt("VIDSCORE_AESTHETIC_WEIGHTS"),
            unimatch_weights_override=opt("VIDSCORE_UNIMATCH_WEIGHTS"),
            device=os.environ.get("VIDSCORE_DEVICE") or "auto",
            tables=os.environ.get("VIDSCORE_TABLES") or "",
        )

    @property
    def db_path(self) -> Path:
        return self.home / "vidscore.duckdb"

    @property
    def tables_root(self) -> str:
        """`VIDSCORE_TABLES`, else `$VIDSCORE_HOME/tables` (absolute, so no run depends on its cwd)."""
        if self.tables.startswith("s3://"):
            return self.tables.rstrip("/")
        return str((Path(self.tables).expanduser() if self.tables else self.home / "tables").resolve())

    @property
    def work_dir(self) -> Path:
        """Scratch space of running steps (torchrun inputs and rank parts), one folder per run."""
        return self.home / "work"

    @property
    def exports_dir(self) -> Path:
        return self.home / "exports"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def inbox_dir(self) -> Path:
        return self.home / "inbox"

    @property
    def dagster_home(self) -> Path:
        """The Dagster instance shared by the CLI and `dagster dev` when DAGSTER_HOME is unset."""
        env = os.environ.get("DAGSTER_HOME")
        return Path(env).expanduser() if env else self.home / "dagster"

    def clip_weights(self) -> Path:
        if self.clip_weights_override:
            return self.clip_weights_override
        local = self.models_dir / CLIP_FILE
        if not local.exists() and OPENAI_CLIP_CACHE.expanduser().exists():
            return OPENAI_CLIP_CACHE.expanduser()
        return local

    def aesthetic_weights(self) -> Path:
        return self.aesthetic_weights_override or self.models_dir / AESTHETIC_FILE

    def unimatch_weights(self) -> Path:
        return self.unimatch_weights_override or self.models_dir / UNIMATCH_FILE

    def resolve_device(self, requested: str | None = None) -> str:
        """Turn `auto`/`cpu`/`cuda`/`cuda:N` into a concrete torch device string."""
        return resolve_device(requested or self.device)


def resolve_device(requested: str = "auto") -> str:
    import torch

    requested = (requested or "auto").strip().lower()
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cpu":
        return "cpu"
    if requested == "cuda" or requested.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ValueError(f"VIDSCORE_DEVICE={requested!r} but CUDA is not available on this machine")
        return requested
    raise ValueError(f"unknown device {requested!r}: use auto, cpu, cuda or cuda:N")
