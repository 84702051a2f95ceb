"""PP-OCRv4 text detection (DBNet) with onnxruntime: the model file PyPI's `rapidocr-onnxruntime` ships.

The network maps a normalised BGR image to a per-pixel text probability map of the same size. Boxes
come from Differentiable Binarization's post-processing, written here after the PaddleOCR/RapidOCR
defaults: binarise the map at 0.3, dilate by 2×2, take each connected contour's minimum-area
rectangle, score it by the mean probability inside, keep boxes scoring above the box threshold,
grow each kept box by area·1.6/perimeter (pyclipper's round offset, "unclipping" the shrunk text
kernel the network was trained to predict), and take the grown polygon's minimum-area rectangle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from vidscore_core.models.packaged import packaged_file

MODEL_PACKAGE = "rapidocr_onnxruntime"
MODEL_FILE = "models/ch_PP-OCRv4_det_infer.onnx"
MEAN = STD = 0.5  # on pixels scaled to 0..1, every channel
BINARY_THRESHOLD = 0.3  # probability that marks a pixel as text
UNCLIP_RATIO = 1.6
MIN_SIDE = 3  # px of the probability map: shorter boxes are noise
MAX_CANDIDATES = 1000  # contours looked at per image


def model_path() -> Path:
    """The ONNX file inside the installed `rapidocr-onnxruntime` wheel."""
    return packaged_file(MODEL_PACKAGE, MODEL_FILE, what="the PP-OCRv4 detection model",
                         requirement="rapidocr-onnxruntime==1.4.4")  # fmt: skip


@dataclass(frozen=True)
class TextBox:
    points: np.ndarray  # [4, 2] int32 corners (x, y) in the input image, clockwise from top-left
    score: float  # mean text probability inside the box, before growing it


def providers_for(device: str) -> list:
    """onnxruntime's provider for `device`: CUDA on that GPU (RuntimeError when onnxruntime has no
    CUDA provider: never a silent fall back to the CPU), else the CPU."""
    import onnxruntime as ort

    if not device.startswith("cuda"):
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        raise RuntimeError("device is CUDA but onnxruntime has no CUDAExecutionProvider: install onnxruntime-gpu")
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    return [("CUDAExecutionProvider", {"device_id": index})]


class TextDetector:
    """PP-OCRv4 detection on uint8 RGB images whose sides are multiples of 32 (1024×1024 here)."""

    def __init__(self, path: Path | None = None, device: str = "cpu", box_threshold: float = 0.3) -> None:
        import onnxruntime as ort

        self.path = Path(path) if path else model_path()
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(self.path), options, providers=providers_for(device))
        self.input_name = self.session.get_inputs()[0].name
        self.box_threshold = box_threshold

    @staticmethod
    def normalize(images: np.ndarray) -> np.ndarray:
        """uint8 RGB [B, H, W, 3] -> float32 BGR [B, 3, H, W] in -1..1 (PaddleOCR reads images as BGR)."""
        if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] % 32 or images.shape[2] % 32:
            raise ValueError(f"expected uint8 RGB [B, H, W, 3] with sides multiple of 32, got {images.shape}")
        bgr = images[..., ::-1].astype(np.float32) / 255.0
        return np.ascontiguousarray(((bgr - MEAN) / STD).transpose(0, 3, 1, 2))

    def probability_maps(self, images: np.ndarray) -> np.ndarray:
        """Text probability [B, H, W] of uint8 RGB images [B, H, W, 3], one batched forward."""
        return self.session.run(None, {self.input_name: self.normalize(images)})[0][:, 0]

    def detect(self, images: np.ndarray) -> list[list[TextBox]]:
        """Boxes of each image with score above the box threshold."""
        return [boxes_from_map(p, self.box_threshold) for p in self.probability_maps(images)]


def boxes_from_map(probability: np.ndarray, box_threshold: float) -> list[TextBox]:
    """DB post-processing of one probability map [H, W] (the input image's size)."""
    mask = cv2.dilate((probability > BINARY_THRESHOLD).astype(np.uint8), np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(mask * 255, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    height, width = probability.shape
    boxes = []
    for contour in contours[:MAX_CANDIDATES]:
        corners, short_side = _min_area_box(contour)
        if short_side < MIN_SIDE:
            continue
        score = _mean_inside(probability, corners)
        if not score > box_threshold:
            continue
        grown, short_side = _min_area_box(_unclip(corners))
        if short_side < MIN_SIDE + 2:
            continue
        # Corners on the image's last pixel at most; a box 3 px or thinner there is dropped.
        grown = np.clip(np.round(grown), 0, [width - 1, height - 1])
        if min(np.linalg.norm(grown[0] - grown[1]), np.linalg.norm(grown[0] - grown[3])) < MIN_SIDE + 1:
            continue
        boxes.append(TextBox(grown.astype(np.int32), score))
    return boxes


def _min_area_box(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Corners of the minimum-area rectangle, ordered top-left, top-right, bottom-right, bottom-left
    (by x, then y within each side), and its shorter side."""
    rect = cv2.minAreaRect(points.reshape(-1, 1, 2).astype(np.float32))
    corners = cv2.boxPoints(rect)
    corners = corners[np.argsort(corners[:, 0], kind="stable")]
    left, right = corners[:2], corners[2:]
    top_left, bottom_left = (left[0], left[1]) if left[1][1] > left[0][1] else (left[1], left[0])
    top_right, bottom_right = (right[0], right[1]) if right[1][1] > right[0][1] else (right[1], right[0])
    return np.array([top_left, top_right, bottom_right, bottom_left], np.float32), float(min(rect[1]))


def _mean_inside(probability: np.ndarray, corners: np.ndarray) -> float:
    """Mean probability over the pixels of the box (its bounding window, masked by the polygon)."""
    h, w = probability.shape
    x0, y0 = np.clip(np.floor(corners.min(axis=0)).astype(int), 0, [w - 1, h - 1])
    x1, y1 = np.clip(np.ceil(corners.max(axis=0)).astype(int), 0, [w - 1, h - 1])
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
    cv2.fillPoly(mask, [(corners - [x0, y0]).astype(np.int32)], 1)
    return float(cv2.mean(probability[y0 : y1 + 1, x0 : x1 + 1], mask)[0])


def _unclip(corners: np.ndarray) -> np.ndarray:
    """The box grown by area·ratio/perimeter with round joins (pyclipper works on integer points)."""
    import pyclipper

    area = abs(cv2.contourArea(corners))
    perimeter = cv2.arcLength(corners.reshape(-1, 1, 2), True)
    offset = pyclipper.PyclipperOffset()
    offset.AddPath(corners, pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON)
    return np.concatenate([np.array(path, np.float32) for path in offset.Execute(area * UNCLIP_RATIO / perimeter)])


def covered_fraction(boxes: list[TextBox], height: int, width: int) -> float:
    """The fraction of an image's pixels inside the union of the boxes (overlaps count once)."""
    if not boxes:
        return 0.0
    mask = np.zeros((height, width), np.uint8)
    cv2.fillPoly(mask, [b.points for b in boxes], 1)
    return float(mask.mean())
