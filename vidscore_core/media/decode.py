"""Frame extraction with the reference's index semantics, and nothing silently invented.

The Open-Sora scores read frames with decord: ``index = int(p * n)`` (or a given index), clamped to
``n - 1``, where n is the reader's frame count. Here n is a *verified* count: a container that declares
more frames than it holds is an error, never a shorter clip. Three decoders, tried in order:

* sparse (PyAV): counts frames like decord, seeks to the keyframe before each wanted frame and skips
  the non-reference frames on the way: the fewest frames decoded. 8-bit 4:2:0 limited-range video
  only, where its RGB is decord's bit for bit (tested).
* decord: the reference's reader, for every other pixel format.
* PyAV sequential: decodes everything, when neither of the others can.

A frame that fails to decode raises `DecodeError`: no black, repeated or "nearest" frame is ever
substituted. A verdict about the file itself (cut: fewer frames than the header declares, packets
that stop short of the declared duration, an MPEG-TS that ends inside a packet; no video stream) is
final: the next decoder is not tried, since it cannot mend the file and may crash on its lies.

Decoders run in this process; `vidscore_core.media.isolation` runs them in supervised worker
processes, so that one that aborts, segfaults or hangs costs one clip, not the caller.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

import numpy as np
from PIL import Image, UnidentifiedImageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
# Extensions that go straight to the video decoders; anything unknown is sniffed by PIL first, because
# FFmpeg happily opens a JPEG as a one-frame MJPEG "video" with slightly different pixels than PIL's.
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".flv", ".wmv", ".mpg", ".mpeg", ".ts", ".3gp", ".ogv"}
)
BACKENDS = ("sparse", "decord", "pyav")
# The sparse decoder converts to RGB like decord does (same pixels, tested) for 8-bit 4:2:0 video in
# limited range, which is nearly all web video; anything else goes to decord.
SPARSE_PIXEL_FORMATS = frozenset({"yuv420p"})
_FULL_RANGE = 2  # AVCOL_RANGE_JPEG

# decord fills frames it cannot decode with the last good one; a tiny *relative* fault tolerance makes
# its limit round down to 0, so the first such substitution raises instead.
_DECORD_NO_SUBSTITUTION = "1e-12"

# (n) -> indices in request order; the indices depend on the verified count (FrameRequest.want).
Want = Callable[[int], list[int]]
T = TypeVar("T")


class DecodeError(Exception):
    """A file that yields no trustworthy frames. `reason` is short and meant for an `error` column.

    `final`: the verdict is about the file itself (missing, empty, cut, no video stream, an image
    PIL cannot read, a decode that hung), not about one decoder's limits or one frame, so nothing
    is decoded again: a second opinion cannot make a cut file whole, and a file that lies in its
    header is exactly what crashes decord (a claimed 3e9 frames → std::bad_alloc).
    """

    def __init__(self, reason: str, details: dict[str, str] | None = None, *, final: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        # Per-backend messages, for debugging; `reason` is what users see.
        self.details = dict(details or {})
        self.final = final

    def __reduce__(self):
        # Survives the trip back from a worker process with its details.
        return (_rebuild_decode_error, (type(self), self.reason, self.details, self.final))


def _rebuild_decode_error(cls: type[DecodeError], reason: str, details: dict[str, str], final: bool):
    return cls(reason, details, final=final)


class DecoderDeclined(DecodeError):
    """A decoder that does not take this file at all (its pixel format, or it is not installed),
    whatever frames are asked: the next decoder is simply the right one."""


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


def is_image_path(path: str | os.PathLike[str]) -> bool:
    return os.path.splitext(os.fspath(path))[1].lower() in IMAGE_EXTENSIONS


def frame_indices_at(n: int, points: Sequence[float]) -> list[int]:
    """decord semantics of the reference: int(p * n), clamped to n - 1."""
    if n < 1:
        raise ValueError(f"frame count must be >= 1, got {n}")
    out = []
    for p in points:
        if not p >= 0:  # also rejects NaN
            raise ValueError(f"sampling points must be >= 0, got {p}")
        out.append(min(int(p * n), n - 1))
    return out


def clamp_indices(n: int, indices: Sequence[int]) -> list[int]:
    """Indices >= n become n - 1 (the reference's rule for clips shorter than the flow's frame 30)."""
    if n < 1:
        raise ValueError(f"frame count must be >= 1, got {n}")
    out = []
    for i in indices:
        if int(i) != i or i < 0:
            raise ValueError(f"frame indices must be non-negative integers, got {i!r}")
        out.append(min(int(i), n - 1))
    return out


@dataclass(frozen=True)
class FrameRequest:
    """Which frames one score reads: sampling `points` (int(p·n), clamped) or fixed `indices`
    (clamped); all frames when neither is given. The indices depend on the verified count n.

    `size` (width, height): every frame, scaled by FFmpeg's swscale while converting to RGB, so no
    full-size RGB frame is ever made (shot detection reads every frame at 48×27).
    """

    points: tuple[float, ...] | None = None
    indices: tuple[int, ...] | None = None
    size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.points is not None and self.indices is not None:
            raise ValueError("give points or indices, not both")
        if self.size is not None and (self.points is not None or self.indices is not None):
            raise ValueError("a scaled request reads every frame: give no points or indices with size")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise ValueError(f"size must be (width, height) > 0, got {self.size}")
        self.want(1)  # validate before any decoding

    def want(self, n: int) -> list[int]:
        if self.points is not None:
            return frame_indices_at(n, self.points)
        if self.indices is not None:
            return clamp_indices(n, self.indices)
        return list(range(n))


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
    _check_backends(backends)
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
    _check_backends(backends)
    path = os.fspath(path)
    if any(r.size is not None for r in requests):
        return _with_scaled(path, requests, timeout_s, backends)
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


def _with_scaled(
    path: str, requests: Sequence[FrameRequest], timeout_s: float | None, backends: Sequence[str]
) -> list[DecodedFrames | DecodeError]:
    """`read_frame_sets` when some requests read every frame scaled. One sequential pass serves them
    all where its pixels are the sparse decoder's (`_read_joint`); otherwise the scaled frames come
    from their own pass (`read_scaled_frames`) and the others from the usual one."""
    if treat_as_image(path):  # one frame whatever is asked, full size
        return read_frame_sets(path, [FrameRequest()], timeout_s=timeout_s, backends=backends) * len(requests)
    plain = [i for i, r in enumerate(requests) if r.size is None]
    scaled = [i for i, r in enumerate(requests) if r.size is not None]
    out: list[DecodedFrames | DecodeError | None] = [None] * len(requests)
    joint = None
    if plain and len({requests[i].size for i in scaled}) == 1:
        try:
            joint = run_with_timeout(_read_joint, timeout_s, path, [requests[i] for i in plain], requests[scaled[0]].size)
        except DecodeError as exc:
            if exc.final:
                return [exc] * len(requests)
    if joint is not None:
        full, small = joint
        for i, got in zip(plain, full, strict=True):
            out[i] = got
        for i in scaled:
            out[i] = small
        return out  # type: ignore[return-value]
    if plain:
        for i, got in zip(plain, read_frame_sets(path, [requests[i] for i in plain], timeout_s=timeout_s,
                                                 backends=backends), strict=True):  # fmt: skip
            out[i] = got
    for i in scaled:
        try:
            out[i] = read_scaled_frames(path, requests[i].size, timeout_s=timeout_s)  # type: ignore[arg-type]
        except DecodeError as exc:
            out[i] = exc
    return out  # type: ignore[return-value]


def _read_joint(
    path: str, requests: Sequence[FrameRequest], size: tuple[int, int]
) -> tuple[list[DecodedFrames], DecodedFrames] | None:
    """One sequential decode for full-size requests and a scaled every-frame request: each frame is
    scaled to `size`, the wanted ones are also converted at full size. Only for the streams whose
    RGB the sparse decoder gives bit for bit (8-bit 4:2:0, limited range), so the full-size frames are
    those `read_frames` gives; None when that does not hold (an image, another pixel format, a frame
    count other than the header's or the packets' count), and the caller decodes them apart."""
    import av

    check_file(path)
    if treat_as_image(path):
        return None
    header = read_header(path)
    _check_transport_stream(path, header)
    if header.declares_duration:
        _check_duration(header, *packet_span(path))
    guess = header.declared_frames or count_packets(path)
    if not guess:
        return None
    wanted = {i for r in requests for i in r.want(guess)}
    _enable_ffmpeg_error_log()
    width, height = size
    small: list[np.ndarray] = []
    full: dict[int, np.ndarray] = {}
    try:
        with av.logging.Capture(), av.open(path) as container:
            stream = container.streams.best("video")
            if stream is None:
                raise DecodeError("no video stream", final=True)
            ctx = stream.codec_context
            if ctx.pix_fmt not in SPARSE_PIXEL_FORMATS or ctx.color_range == _FULL_RANGE:
                return None
            for frame in container.decode(stream):
                if len(small) in wanted:
                    full[len(small)] = frame.to_ndarray(format="rgb24")
                small.append(frame.reformat(width=width, height=height, format="rgb24", interpolation="BICUBIC")
                             .to_ndarray())  # fmt: skip
    except DecodeError:
        raise
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise DecodeError(f"cannot decode frame {len(small)}: {_ffmpeg_reason(exc)}") from None
    n = len(small)
    _check_declared(header, n, "decodable")
    if n != guess:
        return None
    decoded = []
    for request in requests:
        indices = request.want(n)
        frames = _in_request_order(full, indices)
        decoded.append(DecodedFrames(frames, indices, n, False, "pyav", frames[0].shape[1], frames[0].shape[0]))
    return decoded, DecodedFrames(small, list(range(n)), n, False, "pyav-scaled", width, height)


def read_scaled_frames(
    path: str | os.PathLike[str], size: tuple[int, int], *, timeout_s: float | None = 60.0
) -> DecodedFrames:
    """Every frame of a video as uint8 RGB of `size` (width, height), converted and scaled in one
    swscale step (bicubic, the `ffmpeg -s WxH` default); an image gives its one frame, full size.

    The frame count is the frames that decode, held against the header as `read_frames` does (a cut
    file is an error, never a shorter clip)."""
    return run_with_timeout(_read_scaled, timeout_s, os.fspath(path), tuple(size))


def _read_scaled(path: str, size: tuple[int, int]) -> DecodedFrames:
    import av

    check_file(path)
    if treat_as_image(path):
        frame = read_image(path)
        return DecodedFrames([frame], [0], 1, True, "pil", frame.shape[1], frame.shape[0])
    header = read_header(path)
    _check_transport_stream(path, header)
    if header.declares_duration:
        _check_duration(header, *packet_span(path))
    _enable_ffmpeg_error_log()
    width, height = size
    frames: list[np.ndarray] = []
    try:
        with av.logging.Capture(), av.open(path) as container:
            stream = container.streams.best("video")
            if stream is None:
                raise DecodeError("no video stream", final=True)
            for frame in container.decode(stream):
                scaled = frame.reformat(width=width, height=height, format="rgb24", interpolation="BICUBIC")
                frames.append(scaled.to_ndarray())
    except DecodeError:
        raise
    except (av.FFmpegError, ValueError, OSError) as exc:
        _check_declared(header, len(frames), "decodable")
        raise DecodeError(f"cannot decode frame {len(frames)}: {_ffmpeg_reason(exc)}") from None
    _check_declared(header, len(frames), "decodable")
    if not frames:
        raise DecodeError("no decodable video frames")
    return DecodedFrames(frames, list(range(len(frames))), len(frames), False, "pyav-scaled", width, height)


def _check_backends(backends: Sequence[str]) -> None:
    unknown = [b for b in backends if b not in BACKENDS]
    if unknown or not backends:
        raise ValueError(f"backends must be a non-empty subset of {BACKENDS}, got {list(backends)}")


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


def check_file(path: str) -> int:
    """Size of a readable regular file, else DecodeError with the plain reason."""
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


def sniff_image(path: str) -> bool:
    """True when PIL recognises the file as an image (reads the header only)."""
    try:
        with Image.open(path):
            return True
    except (UnidentifiedImageError, OSError, ValueError):
        return False


def treat_as_image(path: str) -> bool:
    ext = os.path.splitext(path)[1].lower()
    if ext in IMAGE_EXTENSIONS:
        return True
    if ext in VIDEO_EXTENSIONS:
        return False
    return sniff_image(path)


def _read_frames(path: str, want: Want, backends: tuple[str, ...]) -> DecodedFrames:
    check_file(path)
    if treat_as_image(path):
        frame = read_image(path)
        h, w = frame.shape[:2]
        return DecodedFrames([frame], [0], 1, True, "pil", w, h)
    result = decode_video(path, want, backends=backends)
    h, w = (result.frames[0].shape[:2]) if result.frames else (result.header.height, result.header.width)
    return DecodedFrames(result.frames, result.indices, result.num_frames, False, result.backend, w, h,
                         result.fell_back)  # fmt: skip


def read_image(path: str) -> np.ndarray:
    """One RGB frame exactly as the reference's pil_loader sees it (`Image.convert("RGB")`)."""
    try:
        with Image.open(path) as img:
            return np.array(img.convert("RGB"))
    except UnidentifiedImageError:
        raise DecodeError("cannot decode image: not a recognised image format", final=True) from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:  # PIL's ways to fail
        raise DecodeError(f"cannot decode image: {exc}", final=True) from None


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
    _check_transport_stream(path, header)
    details: dict[str, str] = {}
    declined: set[str] = set()
    failure: DecodeError | None = None
    for name in backends:
        try:
            if name == "sparse":
                result = _decode_sparse(path, header, want, verify_last)
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


def read_header(path: str) -> VideoHeader:
    """The container's claims, via PyAV; an empty header when PyAV cannot open the file."""
    import av

    _enable_ffmpeg_error_log()
    try:
        with av.logging.Capture(), av.open(path) as container:
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
# cover by up to two frame durations (or 0.1 s) in an intact file (rounding, last-frame durations).
_DURATION_SLACK_FRAMES = 2
_DURATION_SLACK_S = 0.1


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


def _check_duration(header: VideoHeader, n: int, span: PacketSpan) -> None:
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


def packet_span(path: str) -> tuple[int, PacketSpan]:
    """Video packets (with data) and the reach of all packets, demuxed without decoding."""
    import av

    span = PacketSpan()
    count = 0
    try:
        with av.logging.Capture(), av.open(path) as container:
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


_TS_SYNC = 0x47
_TS_PACKET_SIZES = ((188, 0), (192, 4), (204, 0))  # (packet size, offset of the sync byte)


def _ts_packet_size(path: str) -> int | None:
    """The packet size of an MPEG transport stream (188; 192 for M2TS; 204 with FEC), from sync bytes."""
    with open(path, "rb") as fh:
        head = fh.read(204 * 4 + 4)
    for size, offset in _TS_PACKET_SIZES:
        positions = range(offset, len(head), size)
        if len(positions) >= 2 and all(head[i] == _TS_SYNC for i in positions):
            return size
    return None


def _check_transport_stream(path: str, header: VideoHeader) -> None:
    """MPEG-TS declares neither a frame count nor a duration (FFmpeg estimates one from the last
    timestamps it finds, so a cut file looks consistent). What does show a cut: a transport stream
    is a sequence of whole fixed-size packets, and a cut at an arbitrary byte ends inside one.
    (A cut that happens to fall on a packet boundary cannot be told from a shorter recording.)"""
    if header.format != "mpegts":
        return
    size = os.path.getsize(path)
    packet = _ts_packet_size(path)
    if packet and size % packet:
        raise DecodeError(
            f"truncated: MPEG-TS file ends inside a packet ({size} bytes is not a whole number of "
            f"{packet}-byte packets)",
            final=True,
        )


def _check_declared(header: VideoHeader, n: int, what: str) -> None:
    # A header count above what the file holds means data is missing (a cut download or copy). Using
    # the smaller count would move every int(p * n) frame, so the clip is refused instead.
    if header.declared_frames and n < header.declared_frames:
        raise DecodeError(
            f"truncated: container declares {header.declared_frames} frames, only {n} {what}", final=True
        )


def _frames_to_decode(header: VideoHeader, n: int, wanted: list[int], verify_last: bool) -> set[int]:
    # Without a declared count (Matroska) nothing else vouches for n: decode the last frame too.
    return set(wanted) | ({n - 1} if verify_last or not header.declared_frames else set())


def _in_request_order(got: dict[int, np.ndarray], indices: list[int]) -> list[np.ndarray]:
    # Copies for repeated indices: duplicates must not share memory.
    return [got[i].copy() if indices.count(i) > 1 else got[i] for i in indices]


def _decode_with_decord(path: str, header: VideoHeader, want: Want, verify_last: bool) -> VideoResult:
    # torch must be loaded before decord: in the other order the process's next CPU matmul in torch
    # segfaults (decord2 3.4 + torch 2.14.1: NVBLAS gets initialized without a CPU BLAS).
    import torch  # noqa: F401

    try:
        import decord
    except ImportError:
        raise DecoderDeclined("decord is not installed") from None
    if header.declares_duration:  # decord's count alone cannot show a cut: check before it reads
        _check_duration(header, *packet_span(path))
    try:
        reader = decord.VideoReader(path, num_threads=1, fault_tol=_DECORD_NO_SUBSTITUTION)
        # decord's len() counts the stream's packets, demuxed when the reader opens.
        n = len(reader)
        _check_declared(header, n, "present")
        wanted = want(n)
        needed = sorted(_frames_to_decode(header, n, wanted, verify_last))
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


def _decode_sparse(path: str, header: VideoHeader, want: Want, verify_last: bool) -> VideoResult:
    """Decode only what the wanted frames need: seek to the keyframe before each, and skip the
    non-reference frames (most B-frames) on the way, since nothing else is built from them.

    Frame i is the i-th packet in presentation order, as decord counts, so n and the indices agree.
    """
    import av

    _enable_ffmpeg_error_log()
    try:
        with av.logging.Capture(), av.open(path) as container:
            stream = container.streams.best("video")
            if stream is None:
                raise DecodeError("no video stream", final=True)
            ctx = stream.codec_context
            if ctx.pix_fmt not in SPARSE_PIXEL_FORMATS or ctx.color_range == _FULL_RANGE:
                raise DecoderDeclined(f"sparse decoding does not take {ctx.pix_fmt} (range {ctx.color_range})")
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
            order = sorted(pts for pts, _ in packets if pts is not None)
            if len(order) != len(packets) or len(set(order)) != len(order):
                raise DecodeError("packets without distinct timestamps")
            n = len(order)
            _check_declared(header, n, "present")
            _check_duration(header, n, span)
            if n == 0:
                raise DecodeError("no video frames")
            wanted = want(n)
            targets = {order[i]: i for i in _frames_to_decode(header, n, wanted, verify_last)}
            keyframes = sorted(pts for pts, key in packets if key)
        try:
            got = _decode_targets(path, targets, keyframes)
        except DecodeError:
            if len(keyframes) < 2:  # nothing was sought: the stream itself is broken
                raise
            # Seeking by timestamp is approximate in some containers (MPEG-TS): read straight through.
            got = _decode_targets(path, targets, [])
    except DecodeError:
        raise
    except (av.FFmpegError, ValueError, OSError) as exc:
        raise DecodeError(f"cannot decode: {_ffmpeg_reason(exc)}") from None
    return VideoResult(header, n, wanted, _in_request_order(got, wanted), "sparse")


def _decode_targets(path: str, targets: dict[int, int], keyframes: list[int]) -> dict[int, np.ndarray]:
    """{frame index: RGB} for the `targets` ({pts: index}), reading forward from the start of a fresh
    reader and seeking ahead to `keyframes` (none: no seeking)."""
    import av

    with av.logging.Capture(), av.open(path) as container:
        stream = container.streams.best("video")
        stream.codec_context.thread_count = 1  # the skip setting must apply to the packet at hand
        return _read_targets(container, stream, targets, keyframes)


def _read_targets(container, stream, targets: dict[int, int], keyframes: list[int]) -> dict[int, np.ndarray]:
    import bisect

    ctx = stream.codec_context
    remaining = sorted(targets)
    got: dict[int, np.ndarray] = {}
    sent: set[int] = set()  # targets handed to the decoder whose picture has not come out yet
    read_up_to: int | None = None  # highest pts demuxed since the last seek; None: nothing read yet
    while remaining:
        k = bisect.bisect_right(keyframes, remaining[0]) - 1
        start = keyframes[k] if k >= 0 else None
        # Reading from the start reaches the first keyframe anyway: seek only past what was read.
        if start is not None and start > (read_up_to if read_up_to is not None else keyframes[0]):
            container.seek(start, stream=stream, backward=True)
            read_up_to, sent = None, set()
        for packet in container.demux(stream):
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
            # The next target lies past a keyframe not read yet: seek there rather than decode the gap.
            k = bisect.bisect_right(keyframes, remaining[0]) - 1
            if not sent and k >= 0 and keyframes[k] > read_up_to:
                break
        else:
            missing = sorted(targets[pts] for pts in remaining)
            raise DecodeError(f"cannot decode frame {missing[0]}")
    return got


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
    _enable_ffmpeg_error_log()
    if header.declares_duration:
        _check_duration(header, *packet_span(path))
    guess = header.declared_frames or count_packets(path)
    wanted = set(want(guess)) if guess else set()
    n, got = _pyav_pass(path, header, wanted)
    indices = want(n)
    missing = set(indices) - got.keys()
    if missing:
        _, more = _pyav_pass(path, header, missing)
        got.update(more)
    return VideoResult(header, n, indices, _in_request_order(got, indices), "pyav")


def _pyav_pass(path: str, header: VideoHeader, wanted: set[int]) -> tuple[int, dict[int, np.ndarray]]:
    import av

    got: dict[int, np.ndarray] = {}
    count = 0
    try:
        with av.logging.Capture(), av.open(path) as container:
            stream = container.streams.best("video")
            if stream is None:
                raise DecodeError("no video stream")
            for frame in container.decode(stream):
                if count in wanted:
                    got[count] = frame.to_ndarray(format="rgb24")
                count += 1
    except (av.FFmpegError, ValueError, OSError) as exc:
        reason = _ffmpeg_reason(exc)
        if count == 0 and not header.declared_frames:
            raise DecodeError(f"cannot decode: {reason}") from None
        _check_declared(header, count, "decodable")
        raise DecodeError(f"cannot decode frame {count}: {reason}") from None
    _check_declared(header, count, "decodable")
    if count == 0:
        raise DecodeError("no decodable video frames")
    return count, got


def count_packets(path: str) -> int:
    """Packets of the best video stream, demuxed without decoding (Matroska declares no frame count)."""
    import av

    try:
        with av.logging.Capture(), av.open(path) as container:
            stream = container.streams.best("video")
            if stream is None:
                return 0
            return sum(1 for packet in container.demux(stream) if packet.size)
    except av.FFmpegError:
        return 0


def _ffmpeg_reason(exc: Exception) -> str:
    # With FFmpeg's error log enabled, PyAV attaches the decoder's own line ("moov atom not found"),
    # which says more than the generic errno text.
    log = getattr(exc, "log", None)
    if log and len(log) == 3 and str(log[2]).strip():
        return str(log[2]).strip()
    return getattr(exc, "strerror", None) or str(exc)


_log_lock = threading.Lock()


def _enable_ffmpeg_error_log() -> None:
    # PyAV leaves FFmpeg's log off by default, and then errors carry no FFmpeg detail. ERROR level is
    # enough; our calls wrap decoding in av.logging.Capture so nothing reaches stderr from them.
    import av.logging

    with _log_lock:
        if av.logging.get_level() is None:
            av.logging.set_level(av.logging.ERROR)
