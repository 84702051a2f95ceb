"""Brightness and sharpness of a frame: BT.601 luma, and the variance of its Laplacian.

`lum` is the mean luma on the 0–255 scale of the decoded RGB (BT.601 weights, as OpenCV's and PIL's
RGB-to-gray); `blur` is the classic focus measure, the variance of the 3×3 Laplacian of the luma,
taken at one working resolution so that clips of any size are comparable (a 4K frame is not
"sharper" because it has more pixels, a thumbnail not blurrier because it has fewer).
"""

from __future__ import annotations

import cv2
import numpy as np

LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114])  # BT.601 R, G, B
# The luma's shorter side is resized to this (aspect kept) before the Laplacian.
BLUR_SHORT_SIDE = 360


def luma(frame: np.ndarray) -> np.ndarray:
    """uint8 RGB [H, W, 3] -> float64 BT.601 luma [H, W] in 0..255 (not rounded)."""
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"expected an RGB frame [H, W, 3], got {frame.shape}")
    return frame.astype(np.float64) @ LUMA_WEIGHTS


def mean_luma(frame: np.ndarray) -> float:
    """Mean BT.601 luma of an RGB frame, 0 (black) .. 255 (white)."""
    return float(luma(frame).mean())


def working_luma(frame: np.ndarray, short_side: int = BLUR_SHORT_SIDE) -> np.ndarray:
    """The luma resized so its shorter side is `short_side` (area averaging down, bilinear up)."""
    y = luma(frame)
    height, width = y.shape
    scale = short_side / min(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if size == (width, height):
        return y
    return cv2.resize(y, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)


def laplacian_variance(frame: np.ndarray, short_side: int = BLUR_SHORT_SIDE) -> float:
    """Variance of the 3×3 Laplacian (OpenCV's aperture 1, mirrored borders) of the working luma:
    high for sharp detail, near 0 for a blurred or flat frame."""
    return float(cv2.Laplacian(working_luma(frame, short_side), cv2.CV_64F).var())
