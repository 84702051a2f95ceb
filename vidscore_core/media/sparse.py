"""The sparse decoder (PyAV): counts frames like decord, seeks to the keyframe before each wanted
frame and skips the non-reference frames on the way: the fewest frames decoded. 8-bit 4:2:0
limited-range video only, where its RGB is decord's bit for bit (tested)."""

from __future__ import annotations

import bisect

import numpy as np

from vidscore_core.media.container import (
    PacketSpan,
    VideoHeader,
    VideoResult,
    enable_ffmpeg_error_log,
    ffmpeg_reason,
)
from vidscore_core.media.errors import DecodeError, DecoderDeclined
from vidscore_core.media.frames import Want, in_request_order
from vidscore_core.media.integrity import check_declared, check_duration, frames_to_decode
from vidscore_core.media.mp4_index import IndexMismatch, hollow_file, index_packets, is_mov
from vidscore_core.media.sources import media_input, prefetch

# The sparse decoder converts to RGB like decord does (same pixels, tested) for 8-bit 4:2:0 video in
# limited range, which is nearly all web video; anything else goes to decord.
SPARSE_PIXEL_FORMATS = frozenset({"yuv420p"})
_FULL_RANGE = 2  # AVCOL_RANGE_JPEG


def takes(ctx) -> bool:
    """Whether a stream's RGB (PyAV's conversion) is decord's bit for bit: 8-bit 4:2:0, limited range."""
    return ctx.pix_fmt in SPARSE_PIXEL_FORMATS and ctx.color_range != _FULL_RANGE


def decode_sparse(
    path: str, header: VideoHeader, want: Want, verify_last: bool, *, from_index: bool = True
) -> VideoResult:
    """Decode only what the wanted frames need: seek to the keyframe before each, and skip the
    non-reference frames (most B-frames) on the way, since nothing else is built from them.

    Frame i is the i-th packet in presentation order, as decord counts, so n and the indices agree.
    The packets come from an MP4/MOV's index where it can be trusted (`media.mp4_index`: no sample
    payload is read for them), else from demuxing every packet. `from_index=False`: always the latter.
    """
    try:
        return _decode_sparse(path, header, want, verify_last, from_index and is_mov(header.format))
    except IndexMismatch:  # the stream is not what its index says: count and seek as a full demux does
        return _decode_sparse(path, header, want, verify_last, False)


def _decode_sparse(
    path: str, header: VideoHeader, want: Want, verify_last: bool, from_index: bool
) -> VideoResult:
    import av

    enable_ffmpeg_error_log()
    try:
        source = hollow_file(path) if from_index else media_input(path)
        with av.logging.Capture(), av.open(source) as container:
            stream = container.streams.best("video")
            if stream is None:
                raise DecodeError("no video stream", final=True)
            ctx = stream.codec_context
            if not takes(ctx):
                raise DecoderDeclined(
                    f"sparse decoding does not take {ctx.pix_fmt} (range {ctx.color_range})"
                )
            indexed = index_packets(container, stream, source) if from_index else None
            packets = indexed.packets if indexed is not None else _demux_packets(container, stream, header)
            order = sorted(pts for pts, _ in packets if pts is not None)
            if len(order) != len(packets) or len(set(order)) != len(order):
                raise DecodeError("packets without distinct timestamps")
            n = len(order)
            check_declared(header, n, "present")
            if n == 0:
                raise DecodeError("no video frames")
            wanted = want(n)
            targets = {order[i]: i for i in frames_to_decode(header, n, wanted, verify_last)}
            keyframes = sorted(pts for pts, key in packets if key)
        if indexed is not None:  # a remote clip fetches every GOP the decode will read at once
            prefetch(path, indexed.byte_ranges(sorted(targets), keyframes))
        # Keyframes from the index are checked against the parser where the decoder lands on one.
        checked = indexed is not None
        try:
            got = _decode_targets(path, targets, keyframes, checked)
        except DecodeError:
            if len(keyframes) < 2:  # nothing was sought: the stream itself is broken
                raise
            # Seeking by timestamp is approximate in some containers (MPEG-TS): read straight through.
            got = _decode_targets(path, targets, [], False)
    except DecodeError:
        raise
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise DecodeError(f"cannot decode: {ffmpeg_reason(exc)}") from None
    return VideoResult(header, n, wanted, in_request_order(got, wanted), "sparse")


def _demux_packets(container, stream, header: VideoHeader) -> list[tuple[int | None, bool]]:
    """(pts, keyframe) of every video packet with data, demuxed; the parser sets the keyframe flags."""
    span = PacketSpan()
    packets = []
    # Containers that declare a duration but no count: all streams are demuxed (the same bytes
    # are read either way) so the packets' reach can be held against the declared duration.
    for packet in container.demux() if header.declares_duration else container.demux(stream):
        if not packet.size:
            continue
        is_video = packet.stream.index == stream.index
        span.add(packet, is_video)
        if is_video:
            packets.append((packet.pts, packet.is_keyframe))
    check_duration(header, len(packets), span)
    return packets


def _decode_targets(
    path: str, targets: dict[int, int], keyframes: list[int], checked: bool
) -> dict[int, np.ndarray]:
    """{frame index: RGB} for the `targets` ({pts: index}), reading forward from the start of a fresh
    reader and seeking ahead to `keyframes` (none: no seeking). `checked`: each keyframe sought must be
    one to FFmpeg's parser too (IndexMismatch if not)."""
    import av

    with av.logging.Capture(), av.open(media_input(path)) as container:
        stream = container.streams.best("video")
        stream.codec_context.thread_count = 1  # the skip setting must apply to the packet at hand
        return _read_targets(container, stream, targets, keyframes, checked)


def _read_targets(
    container, stream, targets: dict[int, int], keyframes: list[int], checked: bool
) -> dict[int, np.ndarray]:
    ctx = stream.codec_context
    remaining = sorted(targets)
    sought: int | None = None  # the last keyframe sought
    landing: int | None = None  # a keyframe just sought that the first packet read must be
    got: dict[int, np.ndarray] = {}
    sent: set[int] = set()  # targets handed to the decoder whose picture has not come out yet
    read_up_to: int | None = None  # highest pts demuxed since the last seek; None: nothing read yet
    while remaining:
        k = bisect.bisect_right(keyframes, remaining[0]) - 1
        start = keyframes[k] if k >= 0 else None
        # Reading from the start reaches the first keyframe anyway: seek only past what was read.
        if start is not None and start > (read_up_to if read_up_to is not None else keyframes[0]):
            container.seek(start, stream=stream, backward=True)
            read_up_to, sent, sought = None, set(), start
            landing = start if checked else None
        for packet in container.demux(stream):
            if landing is not None and packet.size:
                if packet.pts != landing or not packet.is_keyframe:
                    raise IndexMismatch(f"the index's keyframe at pts {landing} is not one to the parser")
                landing = None
            pts = packet.pts
            if pts is not None:
                read_up_to = pts if read_up_to is None else max(read_up_to, pts)
            ctx.skip_frame = "DEFAULT" if pts is None or pts in targets else "NONREF"
            if pts in targets:
                sent.add(pts)
            for frame in ctx.decode(packet):
                if frame.pts in targets and targets[frame.pts] not in got:
                    got[targets[frame.pts]] = frame.to_ndarray(format="rgb24")
                    remaining.remove(frame.pts)
                    sent.discard(frame.pts)
            if not remaining:
                break
            # The next target lies past a keyframe not read yet: seek there rather than decode the gap
            # (unless that seek was just made: the container landed before it and reads on to it).
            k = bisect.bisect_right(keyframes, remaining[0]) - 1
            if not sent and k >= 0 and keyframes[k] > read_up_to and keyframes[k] != sought:
                break
        else:
            missing = sorted(targets[pts] for pts in remaining)
            raise DecodeError(f"cannot decode frame {missing[0]}")
    return got
