"""Flow from feature matching: softmax-weighted average of candidate displacements."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .geometry import pixel_grid, window_correlation, window_offsets
from .precision import float32_region

# Score given to window candidates that fall outside the image (the reference's value).
_OUTSIDE = -1e9


def global_matching(feature0: Tensor, feature1: Tensor) -> Tensor:
    """Match every pixel against all pixels of the other image; returns flow [B, 2, H, W].

    softmax(f0 f1^T / sqrt(C)) @ coordinates is exactly attention with the pixel grid as values.
    """
    b, c, h, w = feature0.shape
    grid = pixel_grid(h, w, feature0.device)  # [2, H, W]
    with float32_region(feature0.device):
        q = feature0.float().flatten(2).transpose(1, 2)  # [B, HW, C]
        k = feature1.float().flatten(2).transpose(1, 2)
        v = grid.flatten(1).t().expand(b, -1, -1)  # [B, HW, 2]
        target = F.scaled_dot_product_attention(q, k, v)  # [B, HW, 2]
        return target.transpose(1, 2).reshape(b, 2, h, w) - grid


def local_matching(feature0: Tensor, feature1: Tensor, radius: int) -> Tensor:
    """Match every pixel against a (2r+1)^2 neighbourhood at the same place; returns flow [B, 2, H, W]."""
    b, _, h, w = feature0.shape
    device = feature0.device
    corr = window_correlation(feature0, feature1, radius).float()  # [B, HW, K]
    offsets = window_offsets(radius, device)  # [K, 2]
    pos = pixel_grid(h, w, device).view(2, h * w, 1) + offsets.t().unsqueeze(1)  # [2, HW, K]
    inside = (pos[0] >= 0) & (pos[0] < w) & (pos[1] >= 0) & (pos[1] < h)  # [HW, K]
    corr = corr.masked_fill(~inside, _OUTSIDE)
    prob = torch.softmax(corr, dim=-1)
    # Expected offset directly (the reference averages absolute positions and subtracts the pixel).
    flow = prob @ offsets  # [B, HW, 2]
    return flow.transpose(1, 2).reshape(b, 2, h, w)
