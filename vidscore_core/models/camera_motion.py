"""Open-Sora's camera-motion labels (its `camera_motion_detect` tool), reproduced.

The reference reads every 15th frame in grayscale at full resolution and computes Farnebäck flow
from the *first* frame to each later one (it never advances its previous frame; kept, since the
labels are meant to equal the reference's). Per pair: the median flow magnitude and the median flow
angle (degrees, image axes: y points down), and the zoom-in factor, the share of pixels that the
flow carries farther from the frame centre. A pair is `static` below 1 px, a zoom outside the band
0.4–0.6, else a pan or tilt by its angle: content moving right means the camera pans left. The clip
takes the label of more than half of its pairs; else `unknown` when some pair was static, `pan/tilt`
when none was a zoom, `dynamic` otherwise.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import cv2
import numpy as np

FRAME_STEP = 15
# calcOpticalFlowFarneback(pyr_scale, levels, winsize, iterations, poly_n, poly_sigma, flags)
FARNEBACK = (0.5, 3, 15, 3, 5, 1.2, 0)
STATIC_PX = 1.0  # median magnitude below this: static
ZOOM_BAND = (0.4, 0.6)  # zoom-in factor below: zoom out, above: zoom in

PAIR_LABELS = ("static", "zoom in", "zoom out", "pan left", "pan right", "tilt up", "tilt down")
CLIP_LABELS = (*PAIR_LABELS, "pan/tilt", "dynamic", "unknown")


def gray(frame: np.ndarray) -> np.ndarray:
    """uint8 RGB -> uint8 BT.601 gray (the reference's BGR2GRAY of the same pixels)."""
    return cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY)


def pair_label(magnitude: float, angle: float, zoom_in: float) -> str:
    """The reference's label of one pair from its median magnitude (px), median angle (degrees) and
    zoom-in factor."""
    if magnitude < STATIC_PX:
        return "static"
    if zoom_in < ZOOM_BAND[0]:
        return "zoom out"
    if zoom_in > ZOOM_BAND[1]:
        return "zoom in"
    if angle < 45 or angle >= 315:
        return "pan left"
    if angle < 135:
        return "tilt up"
    if angle < 225:
        return "pan right"
    return "tilt down"


def pair_motion(first: np.ndarray, later: np.ndarray) -> tuple[float, float, float]:
    """(median magnitude, median angle, zoom-in factor) of the Farnebäck flow between two gray frames."""
    flow = cv2.calcOpticalFlowFarneback(first, later, None, *FARNEBACK)
    magnitude, angle = cv2.cartToPolar(flow[..., 0], flow[..., 1], angleInDegrees=True)
    height, width = first.shape
    # In float64, as the reference's integer pixel grid plus float32 flow is: the `>=` below
    # compares equal distances for pixels that did not move.
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    cx, cy = width / 2, height / 2
    before = _distance(xs - cx, ys - cy)
    after = _distance(xs + flow[..., 0] - cx, ys + flow[..., 1] - cy)
    zoom_in = np.count_nonzero(after >= before) / before.size
    return float(np.median(magnitude)), float(np.median(angle)), float(zoom_in)


def _distance(dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    return np.sqrt(np.square(dx) + np.square(dy))


def clip_label(labels: Sequence[str]) -> str:
    """The clip's label from its pairs' labels (see the module doc)."""
    if not labels:
        raise ValueError("a clip label needs at least one pair")
    counts = Counter(labels)
    label, count = counts.most_common(1)[0]
    if count > len(labels) / 2:
        return label
    if "static" in counts:
        return "unknown"
    if "zoom in" not in counts and "zoom out" not in counts:
        return "pan/tilt"
    return "dynamic"


def camera_motion(frames: Sequence[np.ndarray]) -> tuple[str, list[str]]:
    """(clip label, pair labels) of RGB frames 0, 15, 30, … of a clip (at least two)."""
    if len(frames) < 2:
        raise ValueError(f"camera motion needs at least two frames, got {len(frames)}")
    first = gray(frames[0])
    labels = [pair_label(*pair_motion(first, gray(frame))) for frame in frames[1:]]
    return clip_label(labels), labels


def label_check_params(settings: object = None) -> list[list[str]]:
    """The parameters of the `known_label` value check: the labels a clip can get."""
    return [list(CLIP_LABELS)]
