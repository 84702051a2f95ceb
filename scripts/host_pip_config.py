"""Print this host's effective pip configuration as a pip.conf, for a container build.

scripts/build-images.sh mounts the result (and the local paths it names, read-only, at the same
paths) into `podman build`, so pip inside the build sees the same indexes, local wheels and
constraints as pip here, without any of it being written into an image layer. The second output
section (after a line `--paths--`) lists those local paths.
"""

from __future__ import annotations

import configparser
import io
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse


def effective_settings() -> dict[tuple[str, str], str]:
    """(section, key) -> value, as `pip config list` reports them (files and PIP_* variables)."""
    listed = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, check=True
    ).stdout
    settings: dict[tuple[str, str], str] = {}
    for line in listed.splitlines():
        name, _, quoted = line.partition("=")
        section, _, key = name.rpartition(".")
        # Variables (":env:") act on every pip command, as [global] does.
        section = "global" if section in (":env:", "") else section
        settings[(section, key)] = quoted.strip().strip("'\"")
    return settings


def local_paths(value: str) -> list[Path]:
    """The existing local files and folders that a setting's value names (paths or file:// URLs).

    For a file:// index its parent folder: a simple index links its files relatively (../../files).
    """
    paths = []
    for word in value.split():
        url = word.startswith("file://")
        path = Path(urlparse(word).path if url else word)
        path = path.parent if url else path
        if path.is_absolute() and path.exists():
            paths.append(path)
    return paths


def main() -> None:
    settings = effective_settings()
    config = configparser.ConfigParser(interpolation=None)
    mounts: set[Path] = set()
    for (section, key), value in settings.items():
        if not config.has_section(section):
            config.add_section(section)
        config.set(section, key, value)
        mounts.update(local_paths(value))
    text = io.StringIO()
    config.write(text)
    print(text.getvalue().rstrip())
    print("--paths--")
    for path in sorted(mounts):
        print(path)


if __name__ == "__main__":
    main()
