"""Optical-flow score: frame preparation, score math and the two flow backends.

The score reproduces Open-Sora's: frames 0/10/20/30 (clamped), portrait frames transposed to
landscape, bilinear resize to 320x576 (align_corners=True), flow of consecutive pairs, and the mean
absolute flow over pairs, both components and all pixels.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vidscore_core.media.frames import clamp_indices
from vidscore_core.models.unimatch import UniMatch

FLOW_FRAME_INDICES = (0, 10, 20, 30)
FLOW_SIZE = (320, 576)  # (height, width) fed to the flow network


def flow_frame_indices(num_frames: int) -> list[int]:
    """The frames the score reads: absolute indices 0/10/20/30, clamped to the clip's last frame."""
    return clamp_indices(num_frames, FLOW_FRAME_INDICES)


def prepare_flow_frames(frames: Tensor) -> Tensor:
    """uint8 RGB frames [T, H, W, 3] (CPU or CUDA) -> float32 [T, 3, 320, 576] in 0..255."""
    if frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames [T, H, W, 3], got {tuple(frames.shape)}")
    x = frames.permute(0, 3, 1, 2)  # [T, 3, H, W] view of the HWC pixels
    if x.shape[-2] > x.shape[-1]:
        # The reference swaps the axes of portrait frames (a transpose, not a rotation).
        x = x.transpose(-2, -1)
    # Resized in channels-last layout, where torch's bilinear kernel is ~3× faster on CPU than on the
    # NCHW copy, with bit-identical values (bench/results/shared-decode-cpu-2core.md).
    x = x.contiguous(memory_format=torch.channels_last).float()
    return F.interpolate(x, size=FLOW_SIZE, mode="bilinear", align_corners=True).contiguous()


def flow_score(pair_flows: Tensor) -> tuple[float, list[float]]:
    """Given one clip's pair flows [P, 2, H, W], return (mean |flow| over everything, per-pair means)."""
    if pair_flows.dim() != 4 or pair_flows.shape[0] == 0 or pair_flows.shape[1] != 2:
        raise ValueError(f"expected pair flows [P>0, 2, H, W], got {tuple(pair_flows.shape)}")
    magnitude = pair_flows.float().abs()
    per_pair = magnitude.mean(dim=(1, 2, 3))
    return float(magnitude.mean()), [float(v) for v in per_pair]


def _consecutive_pairs(frames: Tensor) -> tuple[Tensor, Tensor]:
    if frames.dim() != 4 or frames.shape[0] < 2:
        raise ValueError(f"need at least two prepared frames [T, 3, H, W], got {tuple(frames.shape)}")
    return frames[:-1], frames[1:]


class DISFlow:
    """OpenCV DIS dense flow (PRESET_MEDIUM) on grayscale versions of the prepared frames.

    A weight-free CPU backend: same frames and score definition as UniMatch, different estimator.
    """

    name = "dis"

    def __init__(self) -> None:
        self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)

    @staticmethod
    def _gray(frames: Tensor) -> np.ndarray:
        # [T, 3, H, W] float 0..255 -> [T, H, W] uint8 with BT.601 luma weights (as cv2's RGB2GRAY).
        rgb = frames.detach().to("cpu", torch.float32).clamp(0, 255).round().to(torch.uint8)
        hwc = np.ascontiguousarray(rgb.permute(0, 2, 3, 1).numpy())
        return np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in hwc])

    def batch_pair_flows(self, img0: Tensor, img1: Tensor) -> Tensor:
        """Flows [N, 2, H, W] for N independent pairs of prepared frames [N, 3, H, W]."""
        g0, g1 = self._gray(img0), self._gray(img1)
        flows = [self._dis.calc(a, b, None) for a, b in zip(g0, g1, strict=True)]  # each [H, W, 2]
        return torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).contiguous()

    def pair_flows(self, frames: Tensor) -> Tensor:
        """Flows [T-1, 2, H, W] of consecutive pairs of one clip's prepared frames [T, 3, H, W]."""
        return self.batch_pair_flows(*_consecutive_pairs(frames))


class UniMatchFlow:
    """The reference estimator: a loaded UniMatch network on prepared frames."""

    name = "unimatch"

    def __init__(self, model: UniMatch) -> None:
        self.model = model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def batch_pair_flows(self, img0: Tensor, img1: Tensor) -> Tensor:
        """Flows [N, 2, H, W] (float32, on the model's device) for N pairs of prepared frames."""
        return self.model.estimate_flow(img0.to(self.device), img1.to(self.device)).float()

    def pair_flows(self, frames: Tensor) -> Tensor:
        """Flows of pairs (0,1), (1,2), ... of one clip, computed in a single batched forward."""
        return self.batch_pair_flows(*_consecutive_pairs(frames))
