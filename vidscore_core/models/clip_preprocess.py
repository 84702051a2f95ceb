"""OpenAI CLIP's image geometry (resize short side, centre crop, RGB) on uint8 frames.

This is the PIL half of openai-clip's ``_transform``: it runs in DataLoader workers and
returns a small uint8 array; the float half (ToTensor + Normalize) is
``ClipModel.normalize_uint8``, run on the batch on the model's device. Split that way, the
pair is bit-identical to ``Compose([Resize(S, BICUBIC), CenterCrop(S), to RGB, ToTensor(),
Normalize(mean, std)])`` on a PIL image.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["clip_crop", "resized_size", "crop_box"]


def resized_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) after torchvision's ``Resize(size)`` with an int: short side to ``size``.

    The long side is truncated, not rounded (``int(size * long / short)``), as torchvision does.
    """
    if width <= 0 or height <= 0:
        raise ValueError(f"image has no pixels: {width}x{height}")
    if width <= height:
        return size, int(size * height / width)
    return int(size * width / height), size


def crop_box(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """PIL crop box (left, top, right, bottom) of torchvision's ``CenterCrop(size)``.

    torchvision rounds the offset with Python's ``round`` (half to even), so we do too.
    """
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return left, top, left + size, top + size


def clip_crop(frame: np.ndarray | Image.Image, size: int = 224) -> np.ndarray:
    """Resize the short side to ``size`` (PIL bicubic), centre-crop ``size``², convert to RGB.

    ``frame`` is a PIL image in any mode, or a uint8 array (H, W, 3) RGB / (H, W) grey.
    Returns a C-contiguous uint8 array of shape (size, size, 3).
    """
    if size < 1:
        raise ValueError(f"crop size must be positive, got {size}")
    image = _as_pil(frame)
    width, height = image.size
    new_w, new_h = resized_size(width, height, size)
    # torchvision skips the resize when the size already matches; PIL would copy anyway.
    if (new_w, new_h) != (width, height):
        # Resize happens in the image's own mode (P -> nearest, RGBA premultiplied), as in
        # openai-clip, where the RGB conversion comes after the crop.
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    image = image.crop(crop_box(new_w, new_h, size))
    if image.mode != "RGB":
        image = image.convert("RGB")
    # A writable copy: workers hand it to torch.from_numpy, which warns on read-only arrays.
    return np.array(image, dtype=np.uint8)


def _as_pil(frame: np.ndarray | Image.Image) -> Image.Image:
    if isinstance(frame, Image.Image):
        return frame
    if not isinstance(frame, np.ndarray):
        raise TypeError(f"expected a PIL image or a numpy array, got {type(frame).__name__}")
    if frame.dtype != np.uint8:
        raise ValueError(f"expected a uint8 frame, got dtype {frame.dtype}")
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] in (3, 4)):
        return Image.fromarray(frame)
    raise ValueError(f"expected a (H, W, 3) RGB frame, got shape {tuple(frame.shape)}")
