"""Object motion: what is left of a flow field once the camera's motion is taken out.

For each flow pair the flow score already computed, the camera's motion is fitted as one
homography (it covers pan, tilt, zoom and roll, and the perspective of a turning camera) with
OpenCV's RANSAC on a grid of the field's points, so moving objects are outliers that do not bend the
fit. The residual flow (the field minus the homography's flow) is averaged like the flow score (mean
absolute value over both components), over the pixels the fitted camera motion keeps in view:
content that enters at a border has no true flow to compare with.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
from torch import Tensor

FIT_STRIDE = 8  # grid step of the points the homography is fitted on (px of the flow field)
RANSAC_THRESHOLD_PX = 1.0  # a point within this of the fitted motion is an inlier


def fit_camera_motion(grid_flow: np.ndarray, stride: int = FIT_STRIDE) -> np.ndarray:
    """The 3×3 homography mapping a pixel of the first frame to the second, fitted robustly to a
    flow field sampled every `stride` px (`flow[:, ::stride, ::stride]`, [2, h, w]); a pure
    translation by the median flow when no homography can be fitted."""
    ys, xs = np.mgrid[0 : grid_flow.shape[1], 0 : grid_flow.shape[2]] * stride
    src = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.float32)
    moved = grid_flow.reshape(2, -1).T.astype(np.float32)
    homography, _ = cv2.findHomography(src, src + moved, cv2.RANSAC, RANSAC_THRESHOLD_PX)
    if homography is None:  # degenerate (too few distinct points): a translation
        homography = np.eye(3)
        homography[:2, 2] = np.median(moved, axis=0)
    return homography


def residual_means(flows: Tensor, homographies: Tensor) -> Tensor:
    """Mean |flow − camera flow| of each field [N, 2, H, W] given its homography [N, 3, 3], over
    both components and the pixels the homography keeps inside the frame (all pixels if none)."""
    n, _, height, width = flows.shape
    ys, xs = torch.meshgrid(
        torch.arange(height, device=flows.device, dtype=torch.float64),
        torch.arange(width, device=flows.device, dtype=torch.float64),
        indexing="ij",
    )
    points = torch.stack([xs, ys, torch.ones_like(xs)]).reshape(3, -1)  # [3, H·W]
    mapped = homographies.to(flows.device, torch.float64) @ points  # [N, 3, H·W]
    target = mapped[:, :2] / mapped[:, 2:].clamp_min(1e-12)  # a point sent behind the camera drops out below
    in_view = (mapped[:, 2] > 0) & (target[:, 0] >= 0) & (target[:, 0] <= width - 1)
    in_view &= (target[:, 1] >= 0) & (target[:, 1] <= height - 1)
    in_view |= ~in_view.any(dim=1, keepdim=True)
    camera = (target - points[:2]).reshape(n, 2, height, width)
    residual = (flows.double() - camera).abs().sum(dim=1).reshape(n, -1)  # |dx| + |dy| per pixel
    return (residual * in_view).sum(dim=1) / (2 * in_view.sum(dim=1))


def object_motion(pair_flows: Tensor) -> tuple[float, list[float]]:
    """(mean over pairs, per-pair values) of one clip's residual motion, from its pair flows
    [P, 2, H, W] (the fields `flow_score` reads), in the flow score's units."""
    values = object_motion_batch(pair_flows.unsqueeze(0))[0]
    return float(np.mean(values)), values


def object_motion_batch(flows: Tensor) -> list[list[float]]:
    """Per-pair residual motion of a batch of clips' pair flows [B, P, 2, H, W] (on any device):
    the fields stay where they are, only the fitting grid goes to the CPU."""
    b, p = flows.shape[:2]
    fields = flows.reshape(b * p, *flows.shape[2:]).float()
    grid = fields[:, :, ::FIT_STRIDE, ::FIT_STRIDE].detach().cpu().numpy()
    homographies = torch.from_numpy(np.stack([fit_camera_motion(f) for f in grid]))
    means = residual_means(fields, homographies).cpu().numpy().reshape(b, p)
    return [[float(v) for v in row] for row in means]
