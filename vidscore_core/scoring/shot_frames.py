"""Cuts inside a clip (`shot_scores`): every frame at 48×27, TransNetV2 or PySceneDetect, one job of the shared pass.

`shots` is the number of shots, `cuts` the first frame of each shot after the first, `single_shot`
whether the clip is one shot. Backends: `transnetv2` (the network, threshold 0.5, on the device) and
`scenedetect` (PySceneDetect's adaptive detector, weight-free, run inside the decode workers), the
score's `detector` option; it is recorded per row. A still image has no shots to count: it gets an error, as for flow.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import torch

from vidscore_core import scores
from vidscore_core.media.decode import DecodedFrames, FrameRequest
from vidscore_core.scoring import lineage
from vidscore_core.scoring.engine import Item, ItemResult
from vidscore_core.scoring.options import JobOptions
from vidscore_core.scoring.score_jobs import ScoreJob
from vidscore_core.scoring.shared_decode import ScorePart
from vidscore_core.settings import Settings

BACKENDS: tuple[str, ...] = next(o for o in scores.SHOTS.options if o.name == "detector").choices
FRAME_SIZE = (48, 27)  # (width, height): TransNetV2's input, decoded at this size
THRESHOLD = 0.5
WINDOWS_PER_FORWARD = 64  # 100-frame windows per TransNetV2 forward (~0.3 GB of activations on CPU)


class StillImageError(ValueError):
    reason = "not a video: a still image has no shots to count"


def shot_values(shots: list[tuple[int, int]]) -> dict[str, Any]:
    return {"shots": len(shots), "cuts": [first for first, _ in shots[1:]], "single_shot": len(shots) == 1}


@dataclass(frozen=True)
class ShotSampler:
    """Worker side: every frame at 48×27 (scaled while converting to RGB); the PySceneDetect backend
    also finds the cuts here, on the worker's core."""

    backend: str = "transnetv2"

    @property
    def request(self) -> FrameRequest:
        return FrameRequest(size=FRAME_SIZE)

    def from_frames(self, decoded: DecodedFrames) -> dict[str, Any]:
        if decoded.is_image:
            raise StillImageError(StillImageError.reason)
        meta = {"num_frames": decoded.num_frames}
        if self.backend == "scenedetect":
            from vidscore_core.models.scenedetect_shots import shot_starts, shots_from_starts

            return {**meta, **shot_values(shots_from_starts(shot_starts(decoded.frames), decoded.num_frames))}
        return {**meta, "frames": torch.from_numpy(np.stack(decoded.frames))}

    def collate(self, payloads: list[dict[str, Any]]) -> dict[str, Any]:
        return {"frames": [p["frames"] for p in payloads if "frames" in p],
                "meta": [{k: v for k, v in p.items() if k != "frames"} for p in payloads]}  # fmt: skip


class ShotScorer:
    """Main-process side: every window of every clip of a batch through TransNetV2, in chunks."""

    name = "shots"

    def __init__(self, backend: str, model=None) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown shot detector {backend!r}: choose one of {', '.join(BACKENDS)}")
        self.backend = backend
        if self.backend == "transnetv2" and model is None:
            raise ValueError("the transnetv2 backend needs a loaded model")
        self.model = model
        self.sampler = ShotSampler(backend)

    def run(self, data: dict[str, Any], clips: list[Item]) -> list[dict[str, Any]]:
        if self.backend == "scenedetect":
            return [dict(m) for m in data["meta"]]
        from vidscore_core.models.transnetv2 import shots_from_probabilities, window_probabilities, windows

        per_clip = [windows(frames) for frames in data["frames"]]
        stacked = torch.cat(per_clip)
        logits = torch.cat([self.model(chunk) for chunk in stacked.split(WINDOWS_PER_FORWARD)])
        out, start = [], 0
        for meta, frames, clip_windows in zip(data["meta"], data["frames"], per_clip, strict=True):
            probabilities = window_probabilities(logits[start : start + len(clip_windows)], len(frames))
            start += len(clip_windows)
            out.append({**meta, **shot_values(shots_from_probabilities(probabilities, THRESHOLD))})
        return out


class ShotsJob(ScoreJob):
    """`shot_scores`: TransNetV2 in float32 on the device, or PySceneDetect in the workers."""

    table = "shot_scores"

    def __init__(self, settings: Settings, options: JobOptions) -> None:
        super().__init__(settings, options)
        self.backend = options.option("shots", "detector")  # the declared option (VIDSCORE_SHOTS_DETECTOR)

    @cached_property
    def weights_path(self):
        from vidscore_core.models.transnetv2 import weights_path

        return weights_path() if self.backend == "transnetv2" else None

    @cached_property
    def scorer(self) -> ShotScorer:
        model = None
        if self.backend == "transnetv2":
            from vidscore_core.models.transnetv2 import load_transnetv2

            model = load_transnetv2(self.weights_path, device=self.device)
        return ShotScorer(self.backend, model)

    def part(self) -> ScorePart:
        return ScorePart(self.table, self.scorer)  # float32: no precision region

    def rows(self, results: Sequence[ItemResult], batch: str) -> pd.DataFrame:
        params = {"frames": "all", "resolution": [FRAME_SIZE[1], FRAME_SIZE[0]], "scaling": "swscale-bicubic",
                  "detector": self.backend, "device": self.device, "precision": "fp32"}  # fmt: skip
        if self.backend == "transnetv2":
            params.update(threshold=THRESHOLD, window=100, stride=50)
            params.update(model_sha256=lineage.file_sha256(self.weights_path))
            model = f"transnetv2:{self.weights_path.name}"
        else:
            params.update(detector="adaptive", adaptive_threshold=3.0, min_scene_len=15)
            model = "pyscenedetect:adaptive"
        # The weights' sha256 is in params (they ship in a package, see scores.SHOTS).
        return self.stamp(self.value_rows(results, detector=self.backend), batch, model=model, shas={}, params=params)


def shots_job(settings: Settings, options: JobOptions) -> ShotsJob:
    """The job of `shot_scores`, with the detector its options name."""
    return ShotsJob(settings, options)
