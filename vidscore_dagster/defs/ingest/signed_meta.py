"""A presigned meta-file URL given to `vidscore ingest`, kept out of the run config.

Dagster stores a run's config and shows it in the UI, so a `meta_files` run is configured with the
URL without its query string (`safe_url`), and the URL as written stays in this process's memory,
where the in-process run that `vidscore ingest` starts reads it back. Nothing writes it anywhere."""

from __future__ import annotations

from vidscore_core.media.sources import safe_url

_signed: dict[str, str] = {}


def config_path(meta: str) -> str:
    """The meta file as the run config may hold it; remembers the URL as written when that differs."""
    shown = safe_url(meta)
    if shown != meta:
        _signed[shown] = meta
    return shown


def readable_path(path: str) -> str:
    """The location to read for a run config's `path`: the URL as written, if this process was given it."""
    return _signed.get(path, path)
