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
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from vidscore_core.media.backends import BACKENDS, check_backends, decode_joint, decode_scaled, decode_video
from vidscore_core.media.container import VideoResult, read_header
from vidscore_core.media.errors import DecodeError
from vidscore_core.media.frames import FrameRequest, Want, in_request_order
from vidscore_core.media.images import is_image_demuxer, read_image_frames, resize_frames, treat_as_image
from vidscore_core.media.integrity import check_file, check_transport_stream
from vidscore_core.media.sources import reading, sharing_cache

if TYPE_CHECKING:
    from vidscore_core.media.remote import RemoteClip

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
    fetch_requests: int | None = None  # remote clips: GETs this pass made (retries included)


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
        if any(r.size is not None for r in requests):
            return _with_scaled(path, requests, timeout_s, backends)
        return _read_frame_sets(path, requests, timeout_s, backends)


def read_scaled_frames(
    path: str | os.PathLike[str], size: tuple[int, int], *, timeout_s: float | None = 60.0
) -> DecodedFrames:
    """Every frame of a video as uint8 RGB of `size` (width, height), converted and scaled in one
    swscale step (bicubic, the `ffmpeg -s WxH` default); a still image gives its one frame, full size,
    an animated one its frames scaled.

    The frame count is the frames that decode, held against the header as `read_frames` does (a cut
    file is an error, never a shorter clip)."""
    return run_with_timeout(_read_scaled, timeout_s, os.fspath(path), tuple(size))


def _read_frame_sets(
    path: str, requests: Sequence[FrameRequest], timeout_s: float | None, backends: Sequence[str]
) -> list[DecodedFrames | DecodeError]:
    union, sizes = _union(requests)

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
    return _split(joint, sizes)


def _union(requests: Sequence[FrameRequest]) -> tuple[Want, list[int]]:
    """A `want` giving every request's indices one after the other, and the list it fills with their counts."""
    sizes: list[int] = []

    def union(n: int) -> list[int]:
        sizes.clear()
        wanted: list[int] = []
        for request in requests:
            got = request.want(n)
            sizes.append(len(got))
            wanted.extend(got)
        return wanted

    return union, sizes


def _split(joint: DecodedFrames, sizes: list[int]) -> list[DecodedFrames]:
    out, start = [], 0
    for size in sizes:
        end = start + size
        out.append(replace(joint, frames=joint.frames[start:end], indices=joint.indices[start:end]))
        start = end
    return out


def _with_scaled(
    path: str, requests: Sequence[FrameRequest], timeout_s: float | None, backends: Sequence[str]
) -> list[DecodedFrames | DecodeError]:
    """`read_frame_sets` when some requests read every frame scaled. One sequential pass serves them
    all where its full-size pixels are the sparse decoder's (`decode_joint`); otherwise the scaled
    frames come from their own pass and the others from the usual one."""
    plain = [i for i, r in enumerate(requests) if r.size is None]
    scaled = [i for i, r in enumerate(requests) if r.size is not None]
    out: list[DecodedFrames | DecodeError | None] = [None] * len(requests)
    if plain and len({requests[i].size for i in scaled}) == 1:
        union, sizes = _union([requests[i] for i in plain])
        try:
            joint = run_with_timeout(_read_joint, timeout_s, path, union, requests[scaled[0]].size)
        except DecodeError as exc:
            if exc.final:
                return [exc] * len(requests)
            joint = None  # decoded apart below, where each part gets its own outcome
        if joint is not None:
            full, small = joint
            for i, got in zip(plain, [full] * len(plain) if full.is_image else _split(full, sizes), strict=True):
                out[i] = got
            for i in scaled:
                out[i] = small
            return out  # type: ignore[return-value]
    if plain:
        for i, got in zip(plain, _read_frame_sets(path, [requests[i] for i in plain], timeout_s, backends), strict=True):
            out[i] = got
    for i in scaled:
        try:
            out[i] = run_with_timeout(_read_scaled, timeout_s, path, requests[i].size)
        except DecodeError as exc:
            out[i] = exc
    return out  # type: ignore[return-value]


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
        decoded.fetched_bytes, decoded.fetch_requests = remote_clip.stats.bytes_fetched, remote_clip.stats.requests
    return decoded


def _read_joint(path: str, want: Want, size: tuple[int, int]) -> tuple[DecodedFrames, DecodedFrames] | None:
    """The full-size frames `want` asks for and every frame scaled to `size`, from one pass: an image's
    (a still: itself for both), or `decode_joint`'s; None where that does not apply."""
    with reading(path) as remote_clip:
        check_file(path)
        header = None if treat_as_image(path) else read_header(path)
        if header is None or is_image_demuxer(header.format):
            return _image_both(path, want, size)
        check_transport_stream(path, header)
        joint = decode_joint(path, header, want, size)
    if joint is None:
        return None
    full, small = (_video_frames(result, remote_clip) for result in joint)
    return full, small


def _image_both(path: str, want: Want, size: tuple[int, int]) -> tuple[DecodedFrames, DecodedFrames]:
    """An image's frames `want` asks for, full size, and all of them scaled to `size`, from one read;
    a still image is its one full-size frame for both."""
    frames, _, n = read_image_frames(path, lambda n: list(range(n)))
    h, w = frames[0].shape[:2]
    if n == 1:
        still = DecodedFrames(frames, [0], 1, True, "pil", w, h)
        return still, still
    indices = want(n)
    full = DecodedFrames(in_request_order(dict(enumerate(frames)), indices), indices, n, False, "pil", w, h)
    return full, DecodedFrames(resize_frames(frames, size), list(range(n)), n, False, "pil", *size)


def _image_scaled(path: str, size: tuple[int, int]) -> DecodedFrames:
    """A still image's one frame, full size; an animated one's frames scaled to `size` (a video of them)."""
    return _image_both(path, lambda n: [], size)[1]


def _read_scaled(path: str, size: tuple[int, int]) -> DecodedFrames:
    with reading(path) as remote_clip:
        check_file(path)
        header = None if treat_as_image(path) else read_header(path)
        if header is None or is_image_demuxer(header.format):
            return _image_scaled(path, size)
        check_transport_stream(path, header)
        result = decode_scaled(path, header, size)
    return _video_frames(result, remote_clip)


def _video_frames(result: VideoResult, remote_clip: RemoteClip | None) -> DecodedFrames:
    h, w = result.frames[0].shape[:2]
    decoded = DecodedFrames(result.frames, result.indices, result.num_frames, False, result.backend, w, h)
    if remote_clip is not None:
        decoded.fetched_bytes, decoded.fetch_requests = remote_clip.stats.bytes_fetched, remote_clip.stats.requests
    return decoded
