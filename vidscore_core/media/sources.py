"""Where a clip's bytes come from: a local path, or `s3://` / `https://` object storage (`media.remote`).

The decoders name a clip by its path string and open it through `media_input`: a local path goes to
PyAV, PIL and decord as is (unchanged behaviour and speed); a remote one becomes a file object over
the clip's shared block cache. `reading(path)` holds that cache for one decode pass or probe.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import BinaryIO

import vidscore_core.media.remote as remote
from vidscore_core.media.object_stores import is_remote, safe_url

log = logging.getLogger(__name__)

__all__ = ["file_size", "is_remote", "media_input", "read_head", "reading", "safe_url", "sharing_cache"]


def media_input(path: str) -> str | BinaryIO:
    """What PyAV, PIL and decord open: the path itself, or a fresh reader over the remote clip."""
    return remote.clip_for(path).open() if is_remote(path) else path


def prefetch(path: str, ranges: list[tuple[int, int]]) -> None:
    """Fetch the byte `ranges` of a remote clip into its cache, concurrently (nothing for a local one)."""
    if is_remote(path):
        remote.clip_for(path).prefetch(ranges)


def file_size(path: str) -> int:
    return remote.clip_for(path).size if is_remote(path) else os.path.getsize(path)


def read_head(path: str, n: int) -> bytes:
    if is_remote(path):
        return remote.clip_for(path).read_at(0, n)
    with open(path, "rb") as fh:
        return fh.read(n)


@contextlib.contextmanager
def sharing_cache(path: str) -> Iterator[None]:
    """Every pass over a remote clip inside the block reads from one cache (no verdict of its own)."""
    if not is_remote(path):
        yield
        return
    with remote.held(path):
        yield


@contextlib.contextmanager
def reading(path: str) -> Iterator[remote.RemoteClip | None]:
    """One pass over a clip. Remote: every open inside shares one cache, and when a fetch failed, that
    failure is the outcome (a decoder starved of bytes may otherwise call the file cut or corrupt)."""
    if not is_remote(path):
        yield None
        return
    with remote.held(path) as clip:
        try:
            yield clip
        except Exception:
            if clip.failure is not None:
                raise clip.failure from None
            raise
        if clip.failure is not None:
            raise clip.failure
        stats = clip.stats
        log.debug("%s: fetched %d of %d bytes in %d requests", clip.name, stats.bytes_fetched, stats.size or 0,
                  stats.requests)  # fmt: skip
