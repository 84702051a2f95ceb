"""CLIP image embeddings of sampled frames: the one image-tower pass behind aesthetic and matching."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vidscore_core import scores
from vidscore_core.media.decode import DecodedFrames
from vidscore_core.media.frames import FrameRequest
from vidscore_core.models.clip import ClipModel
from vidscore_core.models.clip_preprocess import clip_crop
from vidscore_core.scoring.engine import Item

# Frame points of the reference aesthetic script; 0.5 is also the matching script's frame (declared
# with the scores); `clip_embeddings` embeds the aesthetic points, which include matching's.
AESTHETIC_POINTS: tuple[float, ...] = scores.AESTHETIC.frame_points
MATCHING_POINTS: tuple[float, ...] = scores.MATCHING.frame_points


@dataclass(frozen=True)
class ClipFrameSampler:
    """Worker side: the frames at `points`, cropped to the CLIP input size (uint8)."""

    points: tuple[float, ...] = AESTHETIC_POINTS
    image_size: int = 224

    @property
    def request(self) -> FrameRequest:
        return FrameRequest(points=self.points)

    def from_frames(self, decoded: DecodedFrames) -> dict[str, Any]:
        """The payload of this clip's frames (those of `request`, from the shared pass)."""
        crops = np.stack([clip_crop(frame, self.image_size) for frame in decoded.frames])
        # A still image is one frame; it is recorded at 0.5, the "middle frame" matching uses.
        points = [0.5] if decoded.is_image else list(self.points)
        return {
            "crops": crops,
            "indices": list(decoded.indices),
            "points": points,
            "num_frames": decoded.num_frames,
            "backend": decoded.backend,
        }

    def collate(self, payloads: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "crops": torch.from_numpy(np.concatenate([p["crops"] for p in payloads])),
            "meta": [{k: v for k, v in p.items() if k != "crops"} for p in payloads],
        }


class ClipImageScorer:
    """Main-process side: run the CLIP image tower once per sampled frame."""

    name = "clip_embeddings"

    def __init__(self, model: ClipModel, sampler: ClipFrameSampler | None = None) -> None:
        self.model = model
        self.sampler = sampler or ClipFrameSampler(image_size=model.image_size)
        self.image_tower_frames = 0  # counted so tests can prove one pass per frame

    def run(self, data: dict[str, Any], clips: list[Item]) -> list[dict[str, Any]]:
        pixels = self.model.normalize_uint8(data["crops"])
        # One forward per frame point: a frame's embedding never depends on which other points were
        # asked for, so `score matching` (0.5 only) and `score all` (0.1/0.5/0.9) give the same bits.
        points = np.array([p for meta in data["meta"] for p in meta["points"]])
        if len(points) != len(pixels):
            raise RuntimeError(f"{len(pixels)} frames for {len(points)} frame points")
        embeddings: np.ndarray | None = None
        for point in np.unique(points):
            rows = np.flatnonzero(points == point)
            out = self.model.encode_images(pixels[torch.from_numpy(rows)]).float().cpu().numpy()
            if embeddings is None:
                embeddings = np.empty((len(points), out.shape[1]), dtype=out.dtype)
            embeddings[rows] = out
        assert embeddings is not None
        self.image_tower_frames += len(embeddings)
        out: list[dict[str, Any]] = []
        start = 0
        for meta in data["meta"]:
            count = len(meta["indices"])
            out.append({**meta, "embeddings": embeddings[start : start + count]})
            start += count
        return out
