"""Container integrity: a file that was cut (a copy or download that stopped) is refused, never read
as a shorter clip, since a smaller frame count would move every int(p * n) frame.

A header count above what the file holds, packets that stop short of the declared duration, an
MPEG-TS that ends inside a packet: each is a final verdict about the file (`DecodeError(final=True)`).
"""

from __future__ import annotations

import os

from vidscore_core.media.container import PacketSpan, VideoHeader
from vidscore_core.media.errors import DecodeError
from vidscore_core.media.sources import file_size, is_remote, read_head


def check_file(path: str) -> int:
    """Size of a readable regular file or object, else DecodeError with the plain reason."""
    if is_remote(path):
        size = file_size(path)  # RemoteError: missing, denied, bad URL, or the store kept failing
        if size == 0:
            raise DecodeError("empty file (0 bytes)", final=True)
        return size
    if not os.path.lexists(path):
        raise DecodeError("file not found", final=True)
    if not os.path.exists(path):
        raise DecodeError("file not found (broken symlink)", final=True)
    if os.path.isdir(path):
        raise DecodeError("not a file (is a directory)", final=True)
    size = os.path.getsize(path)
    if size == 0:
        raise DecodeError("empty file (0 bytes)", final=True)
    if not os.access(path, os.R_OK):
        raise DecodeError("permission denied", final=True)
    return size


_DURATION_SLACK_FRAMES = 2
_DURATION_SLACK_S = 0.1


def check_duration(header: VideoHeader, n: int, span: PacketSpan) -> None:
    """For containers without a frame count: a file whose packets stop well before the duration its
    header declares was cut (a copy or download that stopped), even though every packet left decodes."""
    if not header.declares_duration:
        return
    frame_s = 1.0 / header.fps if header.fps else 0.0
    slack = max(_DURATION_SLACK_FRAMES * frame_s, _DURATION_SLACK_S)
    if header.declared_video_s is not None:
        declared, seen, what = header.declared_video_s, span.video_s, "of video"
    else:
        declared, seen, what = header.declared_total_s, span.all_s, "in all"
    if declared is None or seen is None or declared - seen <= slack:
        return
    raise DecodeError(
        f"truncated: container declares {declared:.3f} s {what}, only {n} frames ({seen:.3f} s) present",
        final=True,
    )


_TS_SYNC = 0x47
_TS_PACKET_SIZES = ((188, 0), (192, 4), (204, 0))  # (packet size, offset of the sync byte)


def _ts_packet_size(path: str) -> int | None:
    """The packet size of an MPEG transport stream (188; 192 for M2TS; 204 with FEC), from sync bytes."""
    head = read_head(path, 204 * 4 + 4)
    for size, offset in _TS_PACKET_SIZES:
        positions = range(offset, len(head), size)
        if len(positions) >= 2 and all(head[i] == _TS_SYNC for i in positions):
            return size
    return None


def check_transport_stream(path: str, header: VideoHeader) -> None:
    """MPEG-TS declares neither a frame count nor a duration (FFmpeg estimates one from the last
    timestamps it finds, so a cut file looks consistent). What does show a cut: a transport stream
    is a sequence of whole fixed-size packets, and a cut at an arbitrary byte ends inside one.
    (A cut that happens to fall on a packet boundary cannot be told from a shorter recording.)"""
    if header.format != "mpegts":
        return
    size = file_size(path)
    packet = _ts_packet_size(path)
    if packet and size % packet:
        raise DecodeError(
            f"truncated: MPEG-TS file ends inside a packet ({size} bytes is not a whole number of "
            f"{packet}-byte packets)",
            final=True,
        )


def check_declared(header: VideoHeader, n: int, what: str) -> None:
    # A header count above what the file holds means data is missing (a cut download or copy). Using
    # the smaller count would move every int(p * n) frame, so the clip is refused instead.
    if header.declared_frames and n < header.declared_frames:
        raise DecodeError(
            f"truncated: container declares {header.declared_frames} frames, only {n} {what}", final=True
        )


def frames_to_decode(header: VideoHeader, n: int, wanted: list[int], verify_last: bool) -> set[int]:
    # Without a declared count (Matroska) nothing else vouches for n: decode the last frame too.
    return set(wanted) | ({n - 1} if verify_last or not header.declared_frames else set())
