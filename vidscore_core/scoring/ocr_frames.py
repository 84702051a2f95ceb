"""Text on screen (`ocr_scores`): Open-Sora's sampling, PP-OCRv4 detection, one job of the shared pass.

Open-Sora's OCR score reads the frame at index 10 (an image: itself), resizes it so the shorter side
is 1024 and centre-crops 1024×1024, and counts the text boxes the detector finds with confidence
above 0.3; `ocr_area` adds the fraction of that 1024×1024 frame the boxes cover.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from vidscore_core.media.decode import DecodedFrames, FrameRequest
from vidscore_core.scoring import lineage
from vidscore_core.scoring.engine import Item, ItemResult
from vidscore_core.scoring.options import JobOptions
from vidscore_core.scoring.score_jobs import ScoreJob
from vidscore_core.scoring.shared_decode import ScorePart
from vidscore_core.settings import Settings

OCR_FRAME_INDEX = 10
OCR_SIZE = 1024
BOX_THRESHOLD = 0.3  # Open-Sora counts boxes with confidence above this
# A CPU forward at 1024×1024 holds ~0.5 GB of activations per frame: a few frames per forward bound the
# memory; on CUDA the run's batch size applies (an out-of-memory halves it).
CPU_FRAMES_PER_FORWARD = 4


def square_crop(frame: np.ndarray, size: int = OCR_SIZE) -> np.ndarray:
    """uint8 RGB [H, W, 3] -> [size, size, 3]: shorter side resized to `size` (bilinear), centre crop."""
    h, w = frame.shape[:2]
    scale = size / min(h, w)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    resized = np.asarray(Image.fromarray(frame).resize((new_w, new_h), Image.Resampling.BILINEAR))
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return np.ascontiguousarray(resized[top : top + size, left : left + size])


@dataclass(frozen=True)
class OcrSampler:
    """Worker side: frame 10 (clamped; an image is its own frame), as a 1024×1024 crop."""

    @property
    def request(self) -> FrameRequest:
        return FrameRequest(indices=(OCR_FRAME_INDEX,))

    def from_frames(self, decoded: DecodedFrames) -> dict[str, Any]:
        return {"crop": square_crop(decoded.frames[0]), "frame_index": decoded.indices[0],
                "num_frames": decoded.num_frames}  # fmt: skip

    def collate(self, payloads: list[dict[str, Any]]) -> dict[str, Any]:
        # numpy, not tensors: onnxruntime reads host memory, so nothing is pinned or moved.
        return {"crops": np.stack([p["crop"] for p in payloads]),
                "meta": [{k: v for k, v in p.items() if k != "crop"} for p in payloads]}  # fmt: skip


class OcrScorer:
    """Main-process side: one batched detector forward per batch of frames."""

    name = "ocr"

    def __init__(self, detector) -> None:
        self.detector = detector
        self.sampler = OcrSampler()

    def run(self, data: dict[str, Any], clips: list[Item]) -> list[dict[str, Any]]:
        from vidscore_core.models.ppocr_det import covered_fraction

        try:
            found = self.detector.detect(data["crops"])
        except Exception as exc:  # onnxruntime's own exception types; an allocation failure is an OOM
            if "Failed to allocate memory" in str(exc) or "out of memory" in str(exc).lower():
                import torch

                raise torch.cuda.OutOfMemoryError(str(exc)) from exc
            raise
        return [
            {**meta, "ocr": len(boxes), "ocr_area": covered_fraction(boxes, OCR_SIZE, OCR_SIZE),
             "box_scores": [round(b.score, 4) for b in boxes]}
            for meta, boxes in zip(data["meta"], found, strict=True)
        ]  # fmt: skip


class OcrJob(ScoreJob):
    """`ocr_scores`: PP-OCRv4 text detection on frame 10, float32 (onnxruntime, CPU or its CUDA provider)."""

    table = "ocr_scores"

    @cached_property
    def detector(self):
        from vidscore_core.models.ppocr_det import TextDetector

        return TextDetector(device=self.device, box_threshold=BOX_THRESHOLD)

    def part(self) -> ScorePart:
        limit = None if self.device.startswith("cuda") else CPU_FRAMES_PER_FORWARD
        return ScorePart(self.table, OcrScorer(self.detector), max_clips=limit)

    def rows(self, results: Sequence[ItemResult], batch: str) -> pd.DataFrame:
        from vidscore_core.models.ppocr_det import BINARY_THRESHOLD, UNCLIP_RATIO

        path = self.detector.path
        params = {
            "frame_index": OCR_FRAME_INDEX,
            "resolution": [OCR_SIZE, OCR_SIZE],
            "preprocess": "pil-bilinear-shorter-side-centercrop",
            "box_threshold": BOX_THRESHOLD,
            "binary_threshold": BINARY_THRESHOLD,
            "unclip_ratio": UNCLIP_RATIO,
            "device": self.device,
            "precision": "fp32",
            "model_sha256": lineage.file_sha256(path),
        }
        # The model file's sha256 is in params: it ships in a package, not the weights registry (scores.OCR).
        return self.stamp(self.value_rows(results), batch, model=f"ppocrv4-det:{path.name}", shas={}, params=params)


def ocr_job(settings: Settings, options: JobOptions) -> OcrJob:
    """The job of `ocr_scores`."""
    return OcrJob(settings, options)
