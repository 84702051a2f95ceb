"""The video decoders, tried in order until one decodes the wanted frames faithfully:

* sparse (PyAV, `media.sparse`): seeks and skips; 8-bit 4:2:0 limited-range video only.
* decord: the reference's reader, for every other pixel format.
* PyAV sequential: decodes everything, when neither of the others can.

A verdict about the file itself (`DecodeError.final`) stops the chain: the next decoder cannot mend
the file and may crash on its lies.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

import vidscore_core.media.sparse as sparse
from vidscore_core.media.container import (
    VideoHeader,
    VideoResult,
    count_packets,
    enable_ffmpeg_error_log,
    ffmpeg_reason,
    packet_span,
    read_header,
)
from vidscore_core.media.errors import DecodeError, DecoderDeclined
from vidscore_core.media.frames import Want, in_request_order
from vidscore_core.media.integrity import (
    check_declared,
    check_duration,
    check_transport_stream,
    frames_to_decode,
)
from vidscore_core.media.sources import media_input

BACKENDS = ("sparse", "decord", "pyav")
# decord fills frames it cannot decode with the last good one; a tiny *relative* fault tolerance makes
# its limit round down to 0, so the first such substitution raises instead.
_DECORD_NO_SUBSTITUTION = "1e-12"


def decode_video(
    path: str,
    want: Want,
    *,
    backends: Sequence[str] = BACKENDS,
    verify_last: bool = False,
    header: VideoHeader | None = None,
) -> VideoResult:
    """Decode the wanted frames with the first backend that can do it faithfully.

    `verify_last` also decodes the last frame (probe's check that the count is real).
    """
    header = header if header is not None else read_header(path)
    check_transport_stream(path, header)
    details: dict[str, str] = {}
    declined: set[str] = set()
    failure: DecodeError | None = None
    for name in backends:
        try:
            if name == "sparse":
                result = sparse.decode_sparse(path, header, want, verify_last)
            elif name == "decord":
                result = _decode_with_decord(path, header, want, verify_last)
            else:
                result = _decode_with_pyav(path, header, want)
        except DecodeError as exc:
            details[name] = exc.reason
            if isinstance(exc, DecoderDeclined):
                declined.add(name)
            if exc.final:  # a verdict about the file: no other decoder gets to try (and crash) on it
                raise DecodeError(exc.reason, details, final=True) from None
            # PyAV's reason (FFmpeg's own message) is more useful than a decord crash text.
            if failure is None or name == "pyav":
                failure = exc
            continue
        result.details = details
        result.fell_back = bool(set(details) - declined)  # details: the decoders that failed before this one
        return result
    assert failure is not None
    raise DecodeError(failure.reason, details)


def check_backends(backends: Sequence[str]) -> None:
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        raise ValueError(f"backends must be a non-empty subset of {BACKENDS}, got {list(backends)}")


def _decode_with_decord(path: str, header: VideoHeader, want: Want, verify_last: bool) -> VideoResult:
    # torch must be loaded before decord: in the other order the process's next CPU matmul in torch
    # segfaults (decord2 3.4 + torch 2.14.1: NVBLAS gets initialized without a CPU BLAS).
    import torch  # noqa: F401

    try:
        import decord
    except ImportError:
        raise DecoderDeclined("decord is not installed") from None
    if header.declares_duration:  # decord's count alone cannot show a cut: check before it reads
        check_duration(header, *packet_span(path))
    try:
        reader = decord.VideoReader(media_input(path), num_threads=1, fault_tol=_DECORD_NO_SUBSTITUTION)
        # decord's len() counts the stream's packets, demuxed when the reader opens.
        n = len(reader)
        check_declared(header, n, "present")
        wanted = want(n)
        needed = sorted(frames_to_decode(header, n, wanted, verify_last))
        batch = reader.get_batch(needed).asnumpy() if needed else np.empty((0, 1, 1, 3), np.uint8)
    except DecodeError:
        raise
    except Exception as exc:  # DECORDError, RuntimeError, AssertionError: decord's own ways of failing
        raise DecodeError(f"cannot decode: {_short_decord_message(exc)}") from None
    if batch.ndim != 4 or batch.shape[0] != len(needed) or batch.shape[-1] != 3:
        raise DecodeError(f"cannot decode: decord returned frames of shape {batch.shape}")
    row = {index: k for k, index in enumerate(needed)}
    frames = [np.array(batch[row[i]]) for i in wanted]  # copies: duplicates must not share memory
    return VideoResult(header, n, wanted, frames, "decord")


def _short_decord_message(exc: Exception) -> str:
    # decord messages carry a timestamp, a source location and a check expression; keep the tail.
    text = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
    for marker in ("Thread worker: ", ") "):
        if marker in text:
            text = text.rsplit(marker, 1)[-1]
    return text.strip() or type(exc).__name__


def _decode_with_pyav(path: str, header: VideoHeader, want: Want) -> VideoResult:
    """Sequential decode of the whole stream: it counts the frames that really decode (the verified n)
    and converts only the wanted ones. A second pass happens only when the provisional count was wrong."""
    enable_ffmpeg_error_log()
    if header.declares_duration:
        check_duration(header, *packet_span(path))
    guess = header.declared_frames or count_packets(path)
    wanted = set(want(guess)) if guess else set()
    n, got = _pyav_pass(path, header, wanted)
    indices = want(n)
    missing = set(indices) - got.keys()
    if missing:
        _, more = _pyav_pass(path, header, missing)
        got.update(more)
    return VideoResult(header, n, indices, in_request_order(got, indices), "pyav")


def _pyav_pass(path: str, header: VideoHeader, wanted: set[int]) -> tuple[int, dict[int, np.ndarray]]:
    import av

    got: dict[int, np.ndarray] = {}
    count = 0
    try:
        with av.logging.Capture(), av.open(media_input(path)) as container:
            stream = container.streams.best("video")
            if stream is None:
                raise DecodeError("no video stream")
            for frame in container.decode(stream):
                if count in wanted:
                    got[count] = frame.to_ndarray(format="rgb24")
                count += 1
    except (av.FFmpegError, ValueError, OSError) as exc:
        reason = ffmpeg_reason(exc)
        if count == 0 and not header.declared_frames:
            raise DecodeError(f"cannot decode: {reason}") from None
        check_declared(header, count, "decodable")
        raise DecodeError(f"cannot decode frame {count}: {reason}") from None
    check_declared(header, count, "decodable")
    if count == 0:
        raise DecodeError("no decodable video frames")
    return count, got


def decode_scaled(path: str, header: VideoHeader, size: tuple[int, int]) -> VideoResult:
    """Every frame as uint8 RGB of `size` (width, height), converted and scaled in one swscale step
    (bicubic, the `ffmpeg -s WxH` default), counted and held against the header as `_pyav_pass` does."""
    if header.declares_duration:
        check_duration(header, *packet_span(path))
    small, _ = _scaled_pass(path, header, size, set())
    check_declared(header, len(small), "decodable")
    if not small:
        raise DecodeError("no decodable video frames")
    return VideoResult(header, len(small), list(range(len(small))), small, "pyav-scaled")


def decode_joint(path: str, header: VideoHeader, want: Want, size: tuple[int, int]) -> tuple[VideoResult, VideoResult] | None:
    """One sequential decode serving full-size requests (`want`) and every frame scaled to `size`.
    Only for streams whose RGB the sparse decoder gives (8-bit 4:2:0, limited range), so the full-size
    frames are those `decode_video` gives; None when that does not hold (another pixel format, a frame
    count other than the header's or the packets' count): the caller decodes them apart then."""
    if header.declares_duration:
        check_duration(header, *packet_span(path))
    guess = header.declared_frames or count_packets(path)
    if not guess:
        return None
    passed = _scaled_pass(path, header, size, set(want(guess)), sparse_formats_only=True)
    if passed is None:
        return None
    small, full = passed
    n = len(small)
    check_declared(header, n, "decodable")
    if n != guess:
        return None
    indices = want(n)
    return (VideoResult(header, n, indices, in_request_order(full, indices), "pyav"),
            VideoResult(header, n, list(range(n)), small, "pyav-scaled"))  # fmt: skip


def _scaled_pass(
    path: str, header: VideoHeader, size: tuple[int, int], wanted: set[int], *, sparse_formats_only: bool = False
) -> tuple[list[np.ndarray], dict[int, np.ndarray]] | None:
    """Every frame scaled to `size`, and the `wanted` ones also at full size; None when
    `sparse_formats_only` and the stream is not one the sparse decoder takes."""
    import av

    enable_ffmpeg_error_log()
    width, height = size
    small: list[np.ndarray] = []
    full: dict[int, np.ndarray] = {}
    try:
        with av.logging.Capture(), av.open(media_input(path)) as container:
            stream = container.streams.best("video")
            if stream is None:
                raise DecodeError("no video stream", final=True)
            if sparse_formats_only and not sparse.takes(stream.codec_context):
                return None
            for frame in container.decode(stream):
                if len(small) in wanted:
                    full[len(small)] = frame.to_ndarray(format="rgb24")
                small.append(frame.reformat(width=width, height=height, format="rgb24", interpolation="BICUBIC")
                             .to_ndarray())  # fmt: skip
    except DecodeError:
        raise
    except (av.FFmpegError, ValueError, OSError) as exc:
        check_declared(header, len(small), "decodable")
        raise DecodeError(f"cannot decode frame {len(small)}: {ffmpeg_reason(exc)}") from None
    return small, full
