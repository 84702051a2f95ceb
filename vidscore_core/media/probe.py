"""One dict of facts per file, for the `videos` table; a bad file gives `error`, never an exception."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from vidscore_core.media.backends import BACKENDS, decode_video
from vidscore_core.media.container import read_header
from vidscore_core.media.decode import run_with_timeout
from vidscore_core.media.errors import DecodeError
from vidscore_core.media.images import is_image_demuxer, probe_image, treat_as_image
from vidscore_core.media.integrity import check_file
from vidscore_core.media.sources import is_remote, reading

PROBE_KEYS = (
    "exists", "size_bytes", "media_type", "num_frames", "fps", "width", "height", "duration_s", "codec", "error",
)  # fmt: skip


def probe(path: str | os.PathLike[str], *, timeout_s: float | None = 60.0) -> dict[str, Any]:
    """Facts about a clip or image. `num_frames` is the verified count that `read_frames` uses.

    Videos: PyAV reads the header; decord's count (packets demuxed) is checked against the declared
    count and its last frame is decoded, so a cut file is reported, not shortened. When decord cannot,
    PyAV decodes the stream once to count. Images: PIL's size, one frame; animated
    images (GIF, WebP, APNG) are videos of their frames (`media.images`).
    """
    path = os.fspath(path)
    info: dict[str, Any] = dict.fromkeys(PROBE_KEYS)
    _local_facts(path, info)
    try:
        with reading(path):  # a remote clip: one cache for the header, the count and the last frame
            info["size_bytes"] = check_file(path)
            info["exists"] = True
            if treat_as_image(path):
                info["media_type"] = "image"
                info.update(run_with_timeout(probe_image, timeout_s, path))
            else:
                run_with_timeout(_probe_video, timeout_s, path, info)
    except DecodeError as exc:
        if is_remote(path) and exc.reason.startswith("file not found"):
            info["exists"] = False
        elif is_remote(path) and exc.reason.startswith("empty file"):  # as a local empty file is told
            info["exists"], info["size_bytes"] = True, 0
        info["error"] = exc.reason
        info["num_frames"] = None  # an unverified count must not be used for sampling
    except Exception as exc:  # probing a corpus must not stop at one odd file: record it instead
        info["error"] = f"probe failed: {type(exc).__name__}: {exc}"
        info["num_frames"] = None
    return info


def _probe_video(path: str, info: dict[str, Any]) -> None:
    header = read_header(path)
    if is_image_demuxer(header.format):  # an image under a video name (a PNG renamed .mp4)
        info.update(probe_image(path))
        return
    if header.codec is not None:
        info["media_type"] = "video"
    info.update(
        fps=header.fps,
        width=header.width,
        height=header.height,
        duration_s=header.duration_s,
        codec=header.codec,
    )
    result = decode_video(path, lambda n: [n - 1], backends=BACKENDS, verify_last=True, header=header)
    info["media_type"] = "video"
    info["num_frames"] = result.num_frames
    if result.frames:  # the decoded size is the truth (the header may describe a different stream)
        info["height"], info["width"] = (int(v) for v in result.frames[0].shape[:2])


# A probe's own decode timeout fires first (with its reason); this bounds what it cannot stop.
PROBE_KILL_GRACE_S = 30.0


def probe_many(
    paths: Sequence[str | os.PathLike[str]], *, workers: int = 4, timeout_s: float | None = 60.0
) -> list[dict[str, Any]]:
    """`probe` for each path, in order, in supervised worker processes (`media.isolation`).

    A file whose decoder aborts, segfaults or hangs gets a dict with the `error` ("decoder crashed:
    worker process killed by SIGABRT (Aborted)", "decoder hung: ...") instead of taking the caller
    down; every other file is probed as usual.
    """
    from vidscore_core.media.isolation import IsolatedPool

    paths = [os.fspath(p) for p in paths]
    infos: list[dict[str, Any] | None] = [None] * len(paths)
    limit = None if timeout_s is None else timeout_s + PROBE_KILL_GRACE_S
    task = _Probe(timeout_s)
    with IsolatedPool(task, workers=min(max(1, workers), max(1, len(paths))), timeout_s=limit) as pool:
        for i, path in enumerate(paths):
            pool.submit(i, path)
        while pool.pending:
            for outcome in pool.collect():
                if outcome.error is None:
                    infos[outcome.key] = outcome.value
                else:
                    infos[outcome.key] = _failed(paths[outcome.key], outcome.error)
    return [info if info is not None else _failed(p, "not probed") for info, p in zip(infos, paths, strict=True)]


class _Probe:
    """Picklable probe with a fixed timeout (what the workers run)."""

    def __init__(self, timeout_s: float | None) -> None:
        self.timeout_s = timeout_s

    def __call__(self, path: str) -> dict[str, Any]:
        return probe(path, timeout_s=self.timeout_s)


def _failed(path: str, reason: str) -> dict[str, Any]:
    info: dict[str, Any] = dict.fromkeys(PROBE_KEYS)
    _local_facts(path, info)
    info["error"] = reason
    return info


def _local_facts(path: str, info: dict[str, Any]) -> None:
    """`exists` and `size_bytes` of a local file without reading it (a remote one's come from its fetch)."""
    if is_remote(path):
        return
    info["exists"] = os.path.exists(path)
    if info["exists"] and os.path.isfile(path):
        info["size_bytes"] = os.path.getsize(path)
