"""What a video container declares and holds, read with PyAV without decoding (header, packets), and
`VideoResult`, what a decoder found in it."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field

import numpy as np

from vidscore_core.media.sources import media_input


@dataclass
class VideoHeader:
    """What the container claims (PyAV); `declared_frames` is 0 when it does not say (Matroska).

    For containers without a frame count, the length they *declare* (not one FFmpeg estimated from
    the timestamps it could read) is what a cut shows against: `declared_video_s` is the video
    stream's own duration (Matroska's per-track DURATION tag), `declared_total_s` the container's
    (Matroska's segment duration, all streams). `format` is FFmpeg's demuxer name.
    """

    declared_frames: int = 0
    fps: float | None = None
    width: int | None = None
    height: int | None = None
    duration_s: float | None = None
    codec: str | None = None
    format: str | None = None
    declared_video_s: float | None = None
    declared_total_s: float | None = None

    @property
    def declares_duration(self) -> bool:
        return not self.declared_frames and (self.declared_video_s or self.declared_total_s) is not None


@dataclass
class VideoResult:
    header: VideoHeader
    num_frames: int
    indices: list[int]
    frames: list[np.ndarray]
    backend: str
    details: dict[str, str] = field(default_factory=dict)
    fell_back: bool = False  # an earlier decoder failed on the frames asked (not merely declined the file)


def read_header(path: str) -> VideoHeader:
    """The container's claims, via PyAV; an empty header when PyAV cannot open the file."""
    import av

    enable_ffmpeg_error_log()
    try:
        with av.logging.Capture(), av.open(media_input(path)) as container:
            stream = container.streams.best("video")
            if stream is None:
                return VideoHeader()
            rate = stream.average_rate or stream.guessed_rate
            if stream.duration is not None and stream.time_base is not None:
                duration = float(stream.duration * stream.time_base)
            elif container.duration is not None:
                duration = container.duration / 1_000_000  # AV_TIME_BASE
            else:
                duration = None
            declared_frames = max(int(stream.frames or 0), 0)
            fmt = container.format.name if container.format is not None else None
            declared_video = declared_total = None
            if not declared_frames and fmt and "matroska" in fmt.split(","):
                # Matroska writes its durations into the header when the file is finished; FFmpeg
                # does not estimate them. Other containers without a count (MPEG-TS) have none.
                declared_video = _parse_duration_tag(stream.metadata.get("DURATION"))
                if declared_video is None and container.duration is not None:
                    declared_total = container.duration / 1_000_000
            return VideoHeader(
                declared_frames=declared_frames,
                fps=float(rate) if rate else None,
                width=stream.codec_context.width or None,
                height=stream.codec_context.height or None,
                duration_s=duration,
                codec=stream.codec_context.name,
                format=fmt,
                declared_video_s=declared_video,
                declared_total_s=declared_total,
            )
    except (av.FFmpegError, OSError, ValueError):
        return VideoHeader()


_DURATION_TAG = re.compile(r"^\s*(\d+):(\d{1,2}):(\d{1,2}(?:\.\d*)?)\s*$")


def _parse_duration_tag(value: str | None) -> float | None:
    """Seconds of a Matroska DURATION tag ("HH:MM:SS.nnnnnnnnn"); None when absent or malformed."""
    match = _DURATION_TAG.match(value or "")
    if match is None:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


# A cut is told from timing jitter by this margin: the declared length may exceed what the packets


@dataclass
class PacketSpan:
    """How far the demuxed packets reach, in seconds: the video stream's and all streams' (audio too)."""

    video_start: float | None = None
    video_end: float | None = None
    all_start: float | None = None
    all_end: float | None = None

    def add(self, packet, is_video: bool) -> None:
        if packet.pts is None or packet.time_base is None:
            return
        start = float(packet.pts * packet.time_base)
        end = float((packet.pts + (packet.duration or 0)) * packet.time_base)
        self.all_start = start if self.all_start is None else min(self.all_start, start)
        self.all_end = end if self.all_end is None else max(self.all_end, end)
        if is_video:
            self.video_start = start if self.video_start is None else min(self.video_start, start)
            self.video_end = end if self.video_end is None else max(self.video_end, end)

    @staticmethod
    def _reach(start: float | None, end: float | None) -> float | None:
        # Lenient on purpose: the end timestamp, or the span when the stream starts before 0.
        return None if end is None else end - min(start or 0.0, 0.0)

    @property
    def video_s(self) -> float | None:
        return self._reach(self.video_start, self.video_end)

    @property
    def all_s(self) -> float | None:
        return self._reach(self.all_start, self.all_end)


def packet_span(path: str) -> tuple[int, PacketSpan]:
    """Video packets (with data) and the reach of all packets, demuxed without decoding."""
    import av

    span = PacketSpan()
    count = 0
    try:
        with av.logging.Capture(), av.open(media_input(path)) as container:
            stream = container.streams.best("video")
            if stream is None:
                return 0, span
            for packet in container.demux():
                if not packet.size:
                    continue
                is_video = packet.stream.index == stream.index
                count += is_video
                span.add(packet, is_video)
    except av.FFmpegError:
        pass  # a demuxing error ends the span where it happened: that is the part that is there
    return count, span


def count_packets(path: str) -> int:
    """Packets of the best video stream, demuxed without decoding (Matroska declares no frame count)."""
    import av

    try:
        with av.logging.Capture(), av.open(media_input(path)) as container:
            stream = container.streams.best("video")
            if stream is None:
                return 0
            return sum(1 for packet in container.demux(stream) if packet.size)
    except av.FFmpegError:
        return 0


def ffmpeg_reason(exc: Exception) -> str:
    # With FFmpeg's error log enabled, PyAV attaches the decoder's own line ("moov atom not found"),
    # which says more than the generic errno text.
    log = getattr(exc, "log", None)
    if log and len(log) == 3 and str(log[2]).strip():
        return str(log[2]).strip()
    return getattr(exc, "strerror", None) or str(exc)


_log_lock = threading.Lock()


def enable_ffmpeg_error_log() -> None:
    # PyAV leaves FFmpeg's log off by default, and then errors carry no FFmpeg detail. ERROR level is
    # enough; our calls wrap decoding in av.logging.Capture so nothing reaches stderr from them.
    import av.logging

    with _log_lock:
        if av.logging.get_level() is None:
            av.logging.set_level(av.logging.ERROR)
