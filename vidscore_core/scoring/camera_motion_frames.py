"""Camera motion (`cmotion`) and object motion (`object_motion`) of a clip, in the shared pass.

`cmotion` is Open-Sora's Farnebäck label (models/camera_motion.py) of frames 0, 15, 30, …, computed
in the decoding workers from the full-resolution frames. `object_motion` is not computed here: the
flow part computes it from the flow fields it already has (models/global_motion.py), and this score
declares that it uses the flow part's results (`Score.uses`), so a run that asks for camera motion
runs the flow part too, once, whether or not it publishes `flow_scores`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from vidscore_core import scores
from vidscore_core.media.decode import DecodedFrames, FrameRequest
from vidscore_core.models.camera_motion import FARNEBACK, FRAME_STEP, STATIC_PX, ZOOM_BAND, camera_motion
from vidscore_core.models.global_motion import FIT_STRIDE, RANSAC_THRESHOLD_PX
from vidscore_core.scoring.engine import Item, ItemResult
from vidscore_core.scoring.flow_frames import STILL_IMAGE, NotAVideoError
from vidscore_core.scoring.options import JobOptions
from vidscore_core.scoring.score_jobs import FlowJob, ScoreJob
from vidscore_core.scoring.shared_decode import ScorePart
from vidscore_core.settings import Settings

FLOW_TABLE = scores.FLOW.table


class TooShortError(ValueError):
    """A clip with no frame 15: the reference would label it "pan/tilt" from no evidence at all."""

    def __init__(self, num_frames: int) -> None:
        self.reason = (f"too short for camera motion: {num_frames} frames, the label compares frame 0 "
                       f"with frame {FRAME_STEP} and later ones")  # fmt: skip
        super().__init__(self.reason)


@dataclass(frozen=True)
class CameraMotionSampler:
    """Worker side: frames 0, 15, 30, … at full resolution, labelled where they are decoded."""

    step: int = FRAME_STEP

    @property
    def request(self) -> FrameRequest:
        return FrameRequest(step=self.step)

    def from_frames(self, decoded: DecodedFrames) -> dict[str, Any]:
        if decoded.is_image:
            raise NotAVideoError(STILL_IMAGE)
        if len(decoded.frames) < 2:
            raise TooShortError(decoded.num_frames)
        label, pairs = camera_motion(decoded.frames)
        return {"cmotion": label, "cmotion_pairs": pairs, "indices": list(decoded.indices),
                "num_frames": decoded.num_frames}  # fmt: skip

    def collate(self, payloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return payloads


class CameraMotionScorer:
    name = "camera_motion_scores"

    def __init__(self) -> None:
        self.sampler = CameraMotionSampler()

    def run(self, data: list[dict[str, Any]], clips: list[Item]) -> list[dict[str, Any]]:
        return [dict(payload) for payload in data]


class CameraMotionJob(ScoreJob):
    """`camera_motion_scores`: the label from this part, object motion from the flow part's values
    (under FLOW_TABLE in each result, see `per_clip.score_videos`)."""

    table = "camera_motion_scores"

    def __init__(self, settings: Settings, options: JobOptions, flow_backend: str = "unimatch") -> None:
        super().__init__(settings, options)
        self.flow = FlowJob(settings, options, flow_backend)  # for its lineage: the flow fields' source

    def part(self) -> ScorePart:
        return ScorePart(self.table, CameraMotionScorer())

    def rows(self, results: Sequence[ItemResult], batch: str) -> pd.DataFrame:
        def values(v: dict[str, Any]) -> dict[str, Any]:
            flow = v[FLOW_TABLE]
            return {"object_motion": flow["object_motion"], "object_motion_pairs": flow["object_motion_pairs"],
                    "frame_indices": v["indices"]}  # fmt: skip

        params = {
            "cmotion": {"frame_step": FRAME_STEP, "farneback": list(FARNEBACK), "static_px": STATIC_PX,
                        "zoom_band": list(ZOOM_BAND)},
            "object_motion": {"flow_backend": self.flow.backend, "fit": "homography-ransac",
                              "fit_stride": FIT_STRIDE, "ransac_threshold_px": RANSAC_THRESHOLD_PX},
            "device": self.device,
        }  # fmt: skip
        rows = self.value_rows(results, values, backend=self.flow.backend)
        return self.stamp(rows, batch, model=f"opencv-farneback+{self.flow.model_name()}", shas=self.flow.weights_shas(),
                          params=params)  # fmt: skip


def camera_motion_job(settings: Settings, options: JobOptions) -> CameraMotionJob:
    """The job of `camera_motion_scores`; object motion comes from the flow backend the flow score's
    option chooses."""
    return CameraMotionJob(settings, options, options.option(scores.FLOW.name, "backend"))
