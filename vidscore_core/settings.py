"""Runtime settings read from the environment (the public contract: docs/ARCHITECTURE.md)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

# VIDSCORE_<NAME>_WEIGHTS: the file to use for the model file <name> of the weights registry.
_WEIGHTS_ENV = re.compile(r"VIDSCORE_([A-Z0-9_]+)_WEIGHTS")


def weights_env_var(name: str) -> str:
    """The variable overriding the path of the model file `name` (vidscore_core.weights)."""
    return f"VIDSCORE_{name.upper()}_WEIGHTS"


def weight_overrides_from_env(environ: Mapping[str, str] = os.environ) -> dict[str, Path]:
    """Every VIDSCORE_<NAME>_WEIGHTS that is set, keyed by the lower-case name."""
    return {
        match.group(1).lower(): Path(value).expanduser()
        for key, value in environ.items()
        if value and (match := _WEIGHTS_ENV.fullmatch(key))
    }


def _env_path(name: str, default: str) -> Path:
    return Path(os.environ.get(name) or default).expanduser()


@dataclass(frozen=True)
class Settings:
    """Paths and device choice. Build with `Settings.from_env()`; fields may be overridden explicitly."""

    home: Path = field(default_factory=lambda: _env_path("VIDSCORE_HOME", "./.vidscore"))
    models_dir: Path = field(default_factory=lambda: _env_path("VIDSCORE_MODELS_DIR", "./pretrained_models"))
    # Model files used instead of $VIDSCORE_MODELS_DIR's, keyed by weights registry name ("clip", ...).
    weights: Mapping[str, Path] = field(default_factory=dict)
    device: str = "auto"
    # Where the tables' Parquet partitions live: a local/shared folder or `s3://bucket/prefix`.
    tables: str = field(default_factory=lambda: os.environ.get("VIDSCORE_TABLES") or "")

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            home=_env_path("VIDSCORE_HOME", "./.vidscore"),
            models_dir=_env_path("VIDSCORE_MODELS_DIR", "./pretrained_models"),
            weights=weight_overrides_from_env(),
            device=os.environ.get("VIDSCORE_DEVICE") or "auto",
            tables=os.environ.get("VIDSCORE_TABLES") or "",
        )

    def to_json(self) -> dict:
        """The fields as JSON values (paths as strings): what a torchrun rank rebuilds them from."""
        return {
            "home": str(self.home),
            "models_dir": str(self.models_dir),
            "weights": {name: str(path) for name, path in self.weights.items()},
            "device": self.device,
            "tables": self.tables,
        }

    @classmethod
    def from_json(cls, values: Mapping) -> Settings:
        return cls(
            home=Path(values["home"]),
            models_dir=Path(values["models_dir"]),
            weights={name: Path(path) for name, path in values["weights"].items()},
            device=values["device"],
            tables=values["tables"],
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
