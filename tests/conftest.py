"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fixture_env import fixture_model_env

REPO_ROOT = Path(__file__).resolve().parents[1]


def find_fixtures() -> Path | None:
    """The parity fixtures: $VIDSCORE_FIXTURES, else ../shared/fixtures beside the clone."""
    env = os.environ.get("VIDSCORE_FIXTURES")
    candidates = [Path(env)] if env else []
    candidates.append(REPO_ROOT.parent / "shared" / "fixtures")
    for candidate in candidates:
        if (candidate / "media" / "meta.csv").is_file():
            return candidate
    return None


@pytest.fixture(scope="session")
def fixtures() -> Path:
    found = find_fixtures()
    if found is None:
        reason = "parity fixtures not found: set VIDSCORE_FIXTURES or place shared/fixtures beside the clone"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"{reason} (CI must run every parity test)")  # CI fails; a user's clone skips
        pytest.skip(reason)
    return found


@pytest.fixture
def vidscore_env(tmp_path, monkeypatch, fixtures):
    """A fresh VIDSCORE_HOME with the fixtures' random-weight checkpoints, CPU, in-process decoding."""
    from vidscore_core.settings import Settings
    from vidscore_core.tables.store import TableStore

    monkeypatch.setenv("VIDSCORE_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("VIDSCORE_MODELS_DIR", str(tmp_path / "models"))
    for name, value in fixture_model_env(fixtures).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    settings = Settings.from_env()
    return settings, TableStore.from_settings(settings)
