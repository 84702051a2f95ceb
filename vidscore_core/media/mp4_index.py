"""The frames of an MP4/MOV clip from its sample tables (the `moov` index), without reading a payload.

The sparse decoder needs every video packet's timestamp (frame i is the i-th in presentation order)
and the keyframes it may seek to. A full demux gets them by reading every packet, so a remote clip
costs its whole size before one frame is decoded. An MP4 lists all of it in its index: FFmpeg's own
MOV demuxer builds the packets from the sample tables, so it is run here over a file whose sample
payloads read as zeros (`HollowFile`): the same packets, timestamps and order as a full demux, and
only the bytes outside the samples (the boxes) are read. The keyframes are the index's sync samples
(`stss`), not FFmpeg's H.264 parser flags, which come from payloads; the decoder checks each one it
seeks to against the parser (`media.sparse`).

The index is trusted only where it is the whole story; otherwise `index_packets` returns None and
the caller demuxes every packet as before:
* the video track's index holds exactly its declared sample count (no fragments still to be read);
* no sample is discarded (no edit list cuts frames out: FFmpeg counts them, the decoder drops them);
* every sample of every track lies inside the file (a cut file is the full demux's to judge);
* not every sample is a sync sample unless there is only one (a missing `stss` makes FFmpeg call
  every sample a keyframe, which an inter-coded stream is not);
* the demuxed packets are the index's entries, one for one, with the same decode timestamps.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import BinaryIO

from vidscore_core.media.seekable import SeekableReader
from vidscore_core.media.sources import file_size, media_input

MOV_FORMAT = "mov"  # FFmpeg's MOV demuxer reads .mov, .mp4, .m4v, .3gp: "mov,mp4,m4a,3gp,3g2,mj2"


def is_mov(format_name: str | None) -> bool:
    return MOV_FORMAT in (format_name or "").split(",")


class HollowFile(SeekableReader):
    """A seekable file whose byte ranges set by `hollow` read as zeros without being read from `base`."""

    def __init__(self, base: BinaryIO, size: int) -> None:
        super().__init__()
        self._base, self._size = base, size
        self._holes: list[tuple[int, int]] = []  # sorted, disjoint [start, end)
        self._starts: list[int] = []

    @property
    def size(self) -> int:
        return self._size

    def hollow(self, ranges: list[tuple[int, int]]) -> None:
        merged: list[list[int]] = []
        for start, end in sorted(r for r in ranges if r[1] > r[0]):
            if merged and start <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        self._holes = [(start, end) for start, end in merged]
        self._starts = [start for start, _ in merged]

    def readinto(self, buffer) -> int:
        view = memoryview(buffer).cast("B")
        start = self._pos
        end = min(start + len(view), self._size)
        if end <= start:
            return 0
        cursor = start
        k = max(bisect.bisect_right(self._starts, start) - 1, 0)
        while k < len(self._holes) and self._holes[k][0] < end:
            hole_start, hole_end = max(self._holes[k][0], start), min(self._holes[k][1], end)
            if hole_end > hole_start:
                self._read_base(view, start, cursor, hole_start)
                view[hole_start - start : hole_end - start] = bytes(hole_end - hole_start)
                cursor = max(cursor, hole_end)
            k += 1
        self._read_base(view, start, cursor, end)
        self._pos = end
        return end - start

    def _read_base(self, view: memoryview, origin: int, start: int, end: int) -> None:
        while start < end:
            self._base.seek(start)
            got = self._base.readinto(view[start - origin : end - origin])
            if not got:
                raise OSError(f"file ends at {start}, before its {self._size} bytes")
            start += got

    def close(self) -> None:
        self._base.close()
        super().close()


class IndexMismatch(Exception):
    """The stream is not what its index says (a demuxed packet, or a keyframe the parser rejects):
    the clip is counted and sought as a full demux does instead."""


def hollow_file(path: str) -> HollowFile:
    """The clip as a `HollowFile` (no holes yet), local or remote."""
    source = media_input(path)
    base = source if not isinstance(source, str) else open(source, "rb", buffering=0)  # noqa: SIM115 (closed with it)
    return HollowFile(base, file_size(path))


# Samples past a target, in decode order, fetched with its GOP: a B-frame's picture comes out of the
# decoder a few packets after its own (more is read on demand, as ever).
REORDER_SAMPLES = 4


@dataclass
class IndexedPackets:
    """The video packets of a clip counted from its index, in file order."""

    packets: list[tuple[int, bool]]  # (pts, is a sync sample)
    spans: list[tuple[int, int]]  # each packet's sample bytes [start, end) in the file

    def byte_ranges(self, targets: list[int], keyframes: list[int]) -> list[tuple[int, int]]:
        """The bytes a sparse decode of the frames at pts `targets` reads: for each, the samples from
        the keyframe it is decoded from (the last at or before it, as the decoder seeks) to a few past it."""
        place = {pts: k for k, (pts, _) in enumerate(self.packets)}
        ranges = []
        for pts in targets:
            j = bisect.bisect_right(keyframes, pts) - 1
            first = place[keyframes[j]] if j >= 0 else 0
            last = min(max(place[pts], first) + REORDER_SAMPLES, len(self.spans) - 1)
            gop = self.spans[first : last + 1]
            ranges.append((min(start for start, _ in gop), max(end for _, end in gop)))
        return ranges


def index_packets(container, stream, hollow: HollowFile) -> IndexedPackets | None:
    """Each video packet with data (its pts, whether it is a sync sample, its bytes), in file order,
    from the MP4/MOV index of `container` (opened on `hollow`, nothing demuxed yet), without reading a sample payload.

    None where the index is not to be trusted (module doc), before anything is demuxed: the caller
    demuxes `container` as usual. IndexMismatch where the demuxed packets are not the index's.
    """
    if not is_mov(container.format.name):
        return None
    # Plain tuples: an IndexEntry points into FFmpeg's stream and must not outlive the container.
    entries = [(e.timestamp, e.pos, e.size, e.is_keyframe, e.is_discard) for e in stream.index_entries]
    if not entries or len(entries) != stream.frames or any(discard for *_, discard in entries):
        return None
    samples = [(e.pos, e.pos + e.size) for s in container.streams for e in s.index_entries]
    if any(end > hollow.size for _, end in samples):
        return None
    if len(entries) > 1 and all(key for _, _, _, key, _ in entries):
        return None
    hollow.hollow(samples)
    packets = [(packet.pts, packet.dts) for packet in container.demux(stream) if packet.size]
    with_data = [(dts, key, pos, pos + size) for dts, pos, size, key, _ in entries if size]
    if len(packets) != len(with_data) or any(p[1] != e[0] for p, e in zip(packets, with_data, strict=False)):
        raise IndexMismatch("the demuxed packets are not the index's samples")
    return IndexedPackets(
        packets=[(pts, key) for (pts, _), (_, key, _, _) in zip(packets, with_data, strict=True)],
        spans=[(start, end) for _, _, start, end in with_data],
    )
