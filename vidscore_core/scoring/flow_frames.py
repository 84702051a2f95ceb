"""Optical-flow scoring on the engine: UniMatch on the device, or OpenCV DIS inside the workers.

When camera motion is scored in the same pass, each clip's values also carry its object motion
(models/global_motion.py), computed from the same flow fields while they exist: camera motion's
`object_motion` reads it, and no flow is computed twice. A run without camera motion skips the fit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from vidscore_core import scores
from vidscore_core.media.decode import DecodedFrames
from vidscore_core.media.frames import FrameRequest
from vidscore_core.models.flow import (
    FLOW_FRAME_INDICES,
    DISFlow,
    UniMatchFlow,
    flow_score,
    prepare_flow_frames,
)
from vidscore_core.models.global_motion import object_motion, object_motion_batch
from vidscore_core.scoring.engine import Item

BACKENDS = next(o for o in scores.FLOW.options if o.name == "backend").choices


class NotAVideoError(ValueError):
    """A clip flow cannot score (a media error: its row's `error`, the batch goes on)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


STILL_IMAGE = "not a video: a still image has no motion to score"
ONE_FRAME = "one frame: flow needs at least two distinct frames"


@dataclass(frozen=True)
class FlowSampler:
    """Worker side: frames 0, 10, 20, 30 (clamped), resized to 320×576 in float32.

    The resize happens here, on the CPU, in float32 exactly as the reference does it; clips of any
    size then stack into one batch. With the DIS backend the flow itself is computed here too, so
    the weight-free path uses every worker core.
    """

    indices: tuple[int, ...] = FLOW_FRAME_INDICES
    backend: str = "unimatch"
    object_motion: bool = False  # DIS: also fit the camera's motion here and return what is left

    @property
    def request(self) -> FrameRequest:
        return FrameRequest(indices=self.indices)

    def from_frames(self, decoded: DecodedFrames) -> dict[str, Any]:
        """The payload of this clip's frames (those of `request`, from the shared pass)."""
        if decoded.is_image:
            raise NotAVideoError(STILL_IMAGE)
        if decoded.num_frames < 2:  # frames 0/10/20/30 would all be frame 0: no motion, not a score of 0
            raise NotAVideoError(ONE_FRAME)
        frames = prepare_flow_frames(torch.from_numpy(np.stack(decoded.frames)))
        meta = {"indices": list(decoded.indices), "num_frames": decoded.num_frames}
        if self.backend == "dis":
            flows = DISFlow().pair_flows(frames)
            score, pairs = flow_score(flows)
            if not self.object_motion:
                return {**meta, "flow": score, "flow_pairs": pairs}
            residual, residual_pairs = object_motion(flows)
            return {**meta, "flow": score, "flow_pairs": pairs, "object_motion": residual,
                    "object_motion_pairs": residual_pairs}  # fmt: skip
        return {**meta, "frames": frames}

    def collate(self, payloads: list[dict[str, Any]]) -> dict[str, Any]:
        if self.backend == "dis":
            return {"meta": payloads}
        # Payloads are left intact: after a CUDA out-of-memory the engine collates halves of them again.
        return {
            "frames": torch.stack([p["frames"] for p in payloads]),
            "meta": [{k: v for k, v in p.items() if k != "frames"} for p in payloads],
        }


class FlowScorer:
    """Main-process side: all consecutive pairs of a batch through UniMatch in one forward; with
    `object_motion`, each clip's object motion from the same fields (camera motion reads it)."""

    name = "flow"

    def __init__(self, backend: str, model: UniMatchFlow | None = None, *, object_motion: bool = False) -> None:
        if backend not in BACKENDS:
            raise ValueError(f"unknown flow backend {backend!r}: use one of {', '.join(BACKENDS)}")
        if backend == "unimatch" and model is None:
            raise ValueError("the unimatch backend needs a loaded model")
        self.backend = backend
        self.model = model
        self.object_motion = object_motion
        self.sampler = FlowSampler(backend=backend, object_motion=object_motion)

    def run(self, data: dict[str, Any], clips: list[Item]) -> list[dict[str, Any]]:
        if self.backend == "dis":
            return [dict(m) for m in data["meta"]]
        frames = data["frames"]  # [B, T, 3, 320, 576]
        b, t = frames.shape[:2]
        img0 = frames[:, :-1].reshape(b * (t - 1), *frames.shape[2:])
        img1 = frames[:, 1:].reshape(b * (t - 1), *frames.shape[2:])
        flows = self.model.batch_pair_flows(img0, img1).float().reshape(b, t - 1, 2, *frames.shape[3:])
        out = []
        for i, meta in enumerate(data["meta"]):
            score, pairs = flow_score(flows[i])
            out.append({**meta, "flow": score, "flow_pairs": pairs})
        if self.object_motion:  # camera motion's object motion, from the same fields
            for values, residuals in zip(out, object_motion_batch(flows), strict=True):
                values.update(object_motion=float(np.mean(residuals)), object_motion_pairs=residuals)
        return out
