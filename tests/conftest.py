"""Shared pytest fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
        pytest.skip("parity fixtures not found: set VIDSCORE_FIXTURES or place shared/fixtures beside the clone")
    return found
