"""Files that are images, still or animated (GIF, WebP, APNG), read with PIL.

A still image is one frame, exactly as the reference's PIL loader gives it. An animated image is a
video: its frames, counted and read by PIL (which composes each frame onto the canvas as its format
says), sampled with the same index rules as a video, so every score sees the same frames of it. A file
is an image by its extension, by PIL's sniff when the extension says nothing, or when FFmpeg opens a
file with a video name through one of its image demuxers (a PNG renamed .mp4): what a file holds
decides how it is read, not what it is called.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from vidscore_core.media.errors import DecodeError
from vidscore_core.media.sources import media_input, safe_url

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
# Extensions that go straight to the video decoders; anything unknown is sniffed by PIL first, because
# FFmpeg happily opens a JPEG as a one-frame MJPEG "video" with slightly different pixels than PIL's.
VIDEO_EXTENSIONS = frozenset(
    {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".flv", ".wmv", ".mpg", ".mpeg", ".ts", ".3gp", ".ogv"}
)


def extension(path: str) -> str:
    """The lower-case file extension, of the URL's path for a URL (not of its query string)."""
    return os.path.splitext(safe_url(path))[1].lower()


def is_image_path(path: str | os.PathLike[str]) -> bool:
    return extension(os.fspath(path)) in IMAGE_EXTENSIONS


def sniff_image(path: str) -> bool:
    """True when PIL recognises the file as an image (reads the header only)."""
    try:
        with Image.open(media_input(path)):
            return True
    except (UnidentifiedImageError, OSError, ValueError):
        return False


def treat_as_image(path: str) -> bool:
    ext = extension(path)
    if ext in IMAGE_EXTENSIONS:
        return True
    if ext in VIDEO_EXTENSIONS:
        return False
    return sniff_image(path)


# FFmpeg's demuxers of image files (the others are named "<codec>_pipe", e.g. png_pipe, webp_pipe).
_IMAGE_DEMUXERS = frozenset({"image2", "gif", "apng"})


def is_image_demuxer(format_name: str | None) -> bool:
    """True when FFmpeg's demuxer name (VideoHeader.format) is one that reads image files."""
    names = (format_name or "").split(",")
    return any(n in _IMAGE_DEMUXERS or n.endswith("_pipe") for n in names)


@contextlib.contextmanager
def _pil_errors() -> Iterator[None]:
    """PIL's many ways to fail on a bad file, as one final DecodeError with a short reason."""
    try:
        yield
    except UnidentifiedImageError:
        raise DecodeError("cannot decode image: not a recognised image format", final=True) from None
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise DecodeError(f"cannot decode image: {exc}", final=True) from None


def _frame_count(img: Image.Image) -> int:
    return max(1, int(getattr(img, "n_frames", 1)))


def _rgb_at(img: Image.Image, index: int) -> np.ndarray:
    img.seek(index)
    return np.array(img.convert("RGB"))


def read_image_frames(path: str, want: Callable[[int], list[int]]) -> tuple[list[np.ndarray], list[int], int]:
    """(frames, indices, n) of an image file: its one frame (n = 1), or, animated, the frames `want(n)`
    asks for out of its n frames, in request order."""
    with _pil_errors(), Image.open(media_input(path)) as img:
        n = _frame_count(img)
        if n == 1:
            return [np.array(img.convert("RGB"))], [0], 1
        indices = want(n)
        got = {i: _rgb_at(img, i) for i in sorted(set(indices))}
        return [got[i] for i in indices], list(indices), n


def resize_frames(frames: list[np.ndarray], size: tuple[int, int]) -> list[np.ndarray]:
    """Frames scaled to `size` (width, height), bicubic (as a scaled video request gets them)."""
    return [np.asarray(Image.fromarray(f).resize(size, Image.Resampling.BICUBIC)) for f in frames]


def read_image(path: str) -> np.ndarray:
    """One RGB frame exactly as the reference's pil_loader sees it (`Image.convert("RGB")`)."""
    return read_image_frames(path, lambda n: [0])[0][0]


def probe_image(path: str) -> dict[str, Any]:
    """The `videos` facts of an image file; an animated one is a video (frames, fps, duration).

    Every frame is decoded (the last one of an animation needs all before it), so a truncated file
    is reported here rather than when it is scored.
    """
    info: dict[str, Any] = {}
    with _pil_errors(), Image.open(media_input(path)) as img:
        info["width"], info["height"] = img.size
        info["codec"] = (img.format or "").lower() or None
        n = _frame_count(img)
        durations_ms = []
        for i in range(n):
            _rgb_at(img, i)
            durations_ms.append(float(img.info.get("duration") or 0))
    info["num_frames"] = n
    info["media_type"] = "video" if n > 1 else "image"
    total_s = sum(durations_ms) / 1000
    if n > 1 and total_s > 0:
        info["duration_s"], info["fps"] = total_s, n / total_s
    return info
