"""Images: which paths are images, and their one RGB frame exactly as the reference's PIL loader gives it."""

from __future__ import annotations

import os

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


def read_image(path: str) -> np.ndarray:
    """One RGB frame exactly as the reference's pil_loader sees it (`Image.convert("RGB")`)."""
    try:
        with Image.open(media_input(path)) as img:
            return np.array(img.convert("RGB"))
    except UnidentifiedImageError:
        raise DecodeError("cannot decode image: not a recognised image format", final=True) from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:  # PIL's ways to fail
        raise DecodeError(f"cannot decode image: {exc}", final=True) from None
