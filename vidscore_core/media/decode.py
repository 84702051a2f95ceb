"""Frame extraction with the reference's index semantics, and nothing silently invented.

The Open-Sora scores read frames with decord: ``index = int(p * n)`` (or a given index), clamped to
``n - 1`` (`media.frames`), where n is a *verified* count: a container that declares more frames
than it holds is an error, never a shorter clip (`media.integrity`). The video decoders and their
order are `media.backends`; images are `media.images`.

A frame that fails to decode raises `DecodeError`: no black, repeated or "nearest" frame is ever
substituted. A verdict about the file itself is final: the next decoder is not tried.

Decoders run in this process; `vidscore_core.media.isolation` runs them in supervised worker
processes, so that one that aborts, segfaults or hangs costs one clip, not the caller.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np

from vidscore_core.media.backends import BACKENDS, check_backends, decode_video
from vidscore_core.media.container import read_header
from vidscore_core.media.errors import DecodeError
from vidscore_core.media.frames import FrameRequest, Want
from vidscore_core.media.images import is_image_demuxer, read_image_frames, treat_as_image
from vidscore_core.media.integrity import check_file
from vidscore_core.media.sources import reading, sharing_cache

T = TypeVar("T")


@dataclass
class DecodedFrames:
    frames: list[np.ndarray]  # uint8 HxWx3 RGB, one per requested index, in request order
    indices: list[int]  # the frame index each entry of `frames` came from (after clamping)
    num_frames: int  # verified frame count (1 for images)
    is_image: bool
    backend: str  # "decord" | "pyav" | "pil"
    width: int
    height: int
    fell_back: bool = False  # an earlier decoder failed on the frames asked before `backend` gave them
    fetched_bytes: int | None = None  # remote clips: bytes fetched from storage in this pass (cache included)


def read_frames(
    path: str | os.PathLike[str],
    *,
    points: Sequence[float] | None = None,
    indices: Sequence[int] | None = None,
    timeout_s: float | None = 60.0,
    backends: Sequence[str] = BACKENDS,
) -> DecodedFrames:
    """Frames of a clip at sampling `points` or at `indices` (clamped); all frames when neither is given.

    Images give their one frame whatever is asked. Raises `DecodeError` for anything that cannot be
    decoded faithfully, including a decode slower than `timeout_s` (None: no limit). `backends` picks and
    orders the video decoders (default sparse PyAV, decord, then sequential PyAV).
    """
    request = FrameRequest(
        points=None if points is None else tuple(points), indices=None if indices is None else tuple(indices)
    )
    check_backends(backends)
    return run_with_timeout(_read_frames, timeout_s, os.fspath(path), request.want, tuple(backends))


def read_frame_sets(
    path: str | os.PathLike[str],
    requests: Sequence[FrameRequest],
    *,
    timeout_s: float | None = 60.0,
    backends: Sequence[str] = BACKENDS,
) -> list[DecodedFrames | DecodeError]:
    """The frames of several requests (one per score) from one pass over the file, one entry per request.

    The frames are those `read_frames` gives each request alone (same count n, same decoder, same
    pixels). When the joint pass does not succeed at its first decoder (it fails with a verdict that
    is not final, or a later decoder had to take over), each request is decoded on its own, so a
    score gets the outcome and the decoder it would get alone: a broken frame that only the flow
    frames need costs the CLIP frames nothing. An entry is the request's `DecodeError` then.
    """
    check_backends(backends)
    path = os.fspath(path)
    with sharing_cache(path):  # a remote clip's bytes are fetched once for all the passes below
        return _read_frame_sets(path, requests, timeout_s, backends)


def _read_frame_sets(
    path: str, requests: Sequence[FrameRequest], timeout_s: float | None, backends: Sequence[str]
) -> list[DecodedFrames | DecodeError]:
    sizes: list[int] = []

    def union(n: int) -> list[int]:
        sizes.clear()
        wanted: list[int] = []
        for request in requests:
            got = request.want(n)
            sizes.append(len(got))
            wanted.extend(got)
        return wanted

    def each_alone() -> list[DecodedFrames | DecodeError]:
        out: list[DecodedFrames | DecodeError] = []
        for request in requests:
            try:
                out.append(run_with_timeout(_read_frames, timeout_s, path, request.want, tuple(backends)))
            except DecodeError as alone:
                out.append(alone)
        return out

    try:
        joint = run_with_timeout(_read_frames, timeout_s, path, union, tuple(backends))
    except DecodeError as exc:
        if exc.final or len(requests) == 1:
            return [exc] * len(requests)
        return each_alone()
    if joint.fell_back and len(requests) > 1:  # alone, a request may not need the fallback decoder
        return each_alone()
    if joint.is_image:  # one frame whatever is asked
        return [joint] * len(requests)
    out, start = [], 0
    for size in sizes:
        end = start + size
        out.append(replace(joint, frames=joint.frames[start:end], indices=joint.indices[start:end]))
        start = end
    return out


def run_with_timeout(fn: Callable[..., T], timeout_s: float | None, *args: object) -> T:
    """Run fn(*args), abandoning it after timeout_s with DecodeError.

    decord is known to hang on some broken files, inside C code that Python cannot interrupt. The work
    runs in a daemon thread (the decoders release the GIL), so the caller gets control back and moves
    on to the next clip; the stuck thread is left behind and dies with the process.
    """
    if timeout_s is None:
        return fn(*args)
    box: dict[str, object] = {}

    def target() -> None:
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # handed to the caller below
            box["error"] = exc

    worker = threading.Thread(target=target, name="vidscore-decode", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise DecodeError(f"decoder timed out after {timeout_s:g} s", final=True)
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def _read_frames(path: str, want: Want, backends: tuple[str, ...]) -> DecodedFrames:
    with reading(path) as remote_clip:
        check_file(path)
        header = None if treat_as_image(path) else read_header(path)
        if header is None or is_image_demuxer(header.format):  # an image, still or animated, by content
            frames, indices, n = read_image_frames(path, want)
            h, w = frames[0].shape[:2]
            decoded = DecodedFrames(frames, indices, n, n == 1, "pil", w, h)  # animated: a video of its frames
        else:
            result = decode_video(path, want, backends=backends, header=header)
            h, w = (result.frames[0].shape[:2]) if result.frames else (result.header.height, result.header.width)
            decoded = DecodedFrames(result.frames, result.indices, result.num_frames, False, result.backend, w, h,
                                    result.fell_back)  # fmt: skip
    if remote_clip is not None:
        decoded.fetched_bytes = remote_clip.stats.bytes_fetched
    return decoded
