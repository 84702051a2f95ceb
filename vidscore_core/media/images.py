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


@contextlib.contextmanager
def pil_errors() -> Iterator[None]:
    """PIL's many ways to fail on a bad file, as one final DecodeError with a short reason."""
    from vidscore_core.media.decode import DecodeError

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


def read_image_frames(path: str, want: Callable[[int], list[int]]):
    """`DecodedFrames` of an image file: its one frame (`is_image`), or, animated, the frames `want(n)`
    asks for out of its n frames, in request order (a video: `is_image` False)."""
    from vidscore_core.media.decode import DecodedFrames

    with pil_errors(), Image.open(path) as img:
        n = _frame_count(img)
        if n == 1:
            frame = np.array(img.convert("RGB"))
            return DecodedFrames([frame], [0], 1, True, "pil", frame.shape[1], frame.shape[0])
        indices = want(n)
        got = {i: _rgb_at(img, i) for i in sorted(set(indices))}
        frames = [got[i] for i in indices]
        return DecodedFrames(frames, list(indices), n, False, "pil", frames[0].shape[1], frames[0].shape[0])


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
