"""The package metadata: one Dagster release whatever extras are installed, and no setuptools warnings."""

from __future__ import annotations

import re
import warnings
from importlib.metadata import version
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]


def _pins() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = [*project["dependencies"], *(r for extra in project["optional-dependencies"].values() for r in extra)]
    pins = {}
    for requirement in requirements:
        name = re.match(r"[A-Za-z0-9_.-]+", requirement).group(0).lower()
        if name.startswith("dagster"):
            assert "==" in requirement, f"{requirement}: Dagster packages must be pinned exactly"
            pins[name] = requirement.split("==", 1)[1].strip()
    return pins


def test_every_dagster_package_is_pinned_to_one_release() -> None:
    pins = _pins()
    # dagster-<integration> 0.X.Y is released with dagster 1.(X-16).Y: all must name the same release.
    releases = {v if n in ("dagster", "dagster-webserver", "dagster-graphql", "dagster-pipes")
                else f"1.{int(v.split('.')[1]) - 16}.{v.split('.')[2]}" for n, v in pins.items()}  # fmt: skip
    assert len(releases) == 1, pins
    (release,) = releases
    # The environment the tests run in, and the images, use that release.
    assert version("dagster") == release
    assert f"ARG DAGSTER_VERSION={release}" in (REPO / "docker/Dockerfile").read_text()


def test_setuptools_reads_the_project_without_deprecation_warnings() -> None:
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings(record=True) as caught:  # what `pip install` prints, from the same code
        warnings.simplefilter("always")
        apply_configuration(Distribution(), REPO / "pyproject.toml")
    assert [str(w.message) for w in caught if "deprecat" in str(w.message).lower()] == []
