"""Files that are images, still or animated (GIF, WebP, APNG), read with PIL.

A still image is one frame. An animated image is a video: its frames, counted and read by PIL (which
composes each frame onto the canvas as its format says), sampled with the same index rules as a video,
so every score sees the same frames of it. A file is an image by its extension, by PIL's sniff when the
extension says nothing, or when FFmpeg opens a file with a video name through one of its image
demuxers (a PNG renamed .mp4): what a file holds decides how it is read, not what it is called.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

# FFmpeg's demuxers of image files (the others are named "<codec>_pipe", e.g. png_pipe, webp_pipe).
_IMAGE_DEMUXERS = frozenset({"image2", "gif", "apng"})


def is_image_demuxer(format_name: str | None) -> bool:
    """True when FFmpeg's demuxer name (VideoHeader.format) is one that reads image files."""
    names = (format_name or "").split(",")
    return any(n in _IMAGE_DEMUXERS or n.endswith("_pipe") for n in names)


class ImageUnreadable(Exception):
    """An image file PIL cannot read; `reason` is short, for an `error` column (decode turns it into
    a final DecodeError: this module stays below decode in the import graph)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@contextlib.contextmanager
def pil_errors() -> Iterator[None]:
    """PIL's many ways to fail on a bad file, as one ImageUnreadable with a short reason."""
    try:
        yield
    except UnidentifiedImageError:
        raise ImageUnreadable("cannot decode image: not a recognised image format") from None
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise ImageUnreadable(f"cannot decode image: {exc}") from None


def _frame_count(img: Image.Image) -> int:
    return max(1, int(getattr(img, "n_frames", 1)))


def _rgb_at(img: Image.Image, index: int) -> np.ndarray:
    img.seek(index)
    return np.array(img.convert("RGB"))


def read_image_frames(path: str, want: Callable[[int], list[int]]) -> tuple[list[np.ndarray], list[int], int]:
    """(frames, indices, n) of an image file: its one frame (n = 1), or, animated, the frames `want(n)`
    asks for out of its n frames, in request order."""
    with pil_errors(), Image.open(path) as img:
        n = _frame_count(img)
        if n == 1:
            return [np.array(img.convert("RGB"))], [0], 1
        indices = want(n)
        got = {i: _rgb_at(img, i) for i in sorted(set(indices))}
        return [got[i] for i in indices], list(indices), n


def probe_image(path: str) -> dict[str, Any]:
    """The `videos` facts of an image file; an animated one is a video (frames, fps, duration).

    Every frame is decoded (the last one of an animation needs all before it), so a truncated file
    is reported here rather than when it is scored.
    """
    info: dict[str, Any] = {}
    with pil_errors(), Image.open(path) as img:
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
