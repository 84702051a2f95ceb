"""Frame-level signals of the aesthetic frames: brightness (`lum`) and sharpness (`blur`).

Both read the frames at 10/50/90 % (an image: itself), the ones `clip_embeddings` reads, so in a run
with CLIP the shared pass decodes them once for all. The statistic is computed in the decoding
workers (a few milliseconds a frame, no model): the payload is already the values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from vidscore_core.media.decode import DecodedFrames, FrameRequest
from vidscore_core.models.frame_stats import BLUR_SHORT_SIDE, laplacian_variance, mean_luma
from vidscore_core.scoring.clip_frames import AESTHETIC_POINTS
from vidscore_core.scoring.engine import Item, ItemResult
from vidscore_core.scoring.options import JobOptions
from vidscore_core.scoring.score_jobs import ScoreJob
from vidscore_core.scoring.shared_decode import ScorePart
from vidscore_core.settings import Settings


@dataclass(frozen=True)
class FrameStatSampler:
    """Worker side: `statistic` of each frame at `points`."""

    statistic: Callable[[np.ndarray], float]
    points: tuple[float, ...] = AESTHETIC_POINTS

    @property
    def request(self) -> FrameRequest:
        return FrameRequest(points=self.points)

    def from_frames(self, decoded: DecodedFrames) -> dict[str, Any]:
        return {
            "values": [self.statistic(frame) for frame in decoded.frames],
            "indices": list(decoded.indices),
            "num_frames": decoded.num_frames,
        }

    def collate(self, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return payloads


class FrameStatScorer:
    """Main-process side: nothing left to compute, the values came with the payloads."""

    def __init__(self, name: str, sampler: FrameStatSampler) -> None:
        self.name = name
        self.sampler = sampler

    def run(self, data: list[dict[str, Any]], clips: list[Item]) -> list[dict[str, Any]]:
        return [dict(payload) for payload in data]


class FrameStatJob(ScoreJob):
    """One frame statistic's table: the score (mean over the frames), the per-frame values."""

    def __init__(self, settings: Settings, options: JobOptions, *, table: str, column: str,
                 statistic: Callable[[np.ndarray], float], model: str, params: dict) -> None:  # fmt: skip
        super().__init__(settings, options)
        self.table, self.column, self.model, self.params = table, column, model, params
        self.sampler = FrameStatSampler(statistic)

    def part(self) -> ScorePart:
        return ScorePart(self.table, FrameStatScorer(self.table, self.sampler))

    def rows(self, results: Sequence[ItemResult], batch: str) -> pd.DataFrame:
        def values(v: dict[str, Any]) -> dict[str, Any]:
            return {self.column: np.mean(v["values"]), f"{self.column}_frames": v["values"], "frame_indices": v["indices"]}

        params = {"points": list(self.sampler.points), **self.params}
        return self.stamp(self.value_rows(results, values), batch, model=self.model, shas={}, params=params)


def luminance_job(settings: Settings, options: JobOptions) -> FrameStatJob:
    return FrameStatJob(settings, options, table="luminance_scores", column="lum", statistic=mean_luma,
                        model="bt601-luma", params={"luma": "BT.601", "scale": "0-255"})  # fmt: skip


def blur_job(settings: Settings, options: JobOptions) -> FrameStatJob:
    return FrameStatJob(settings, options, table="blur_scores", column="blur", statistic=laplacian_variance,
                        model="laplacian-variance",
                        params={"luma": "BT.601", "short_side": BLUR_SHORT_SIDE, "laplacian": "3x3"})  # fmt: skip
