"""Pixel grids, feature warping and correlation over local windows.

Coordinates are (x, y) in pixels; normalization to [-1, 1] follows the reference formulas exactly,
because grid_sample results depend on the rounding of the normalized coordinates.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .precision import float32_region


def pixel_grid(h: int, w: int, device: torch.device) -> Tensor:
    """[2, H, W] float32 grid holding (x, y) of every pixel."""
    y, x = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float32),
        torch.arange(w, device=device, dtype=torch.float32),
        indexing="ij",
    )
    return torch.stack((x, y), dim=0)


def window_offsets(radius: int, device: torch.device) -> Tensor:
    """[(2r+1)^2, 2] integer (dx, dy) offsets, dy-major like the reference's window grid."""
    r = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    dy, dx = torch.meshgrid(r, r, indexing="ij")
    return torch.stack((dx, dy), dim=-1).reshape(-1, 2)


def warp(feature: Tensor, flow: Tensor) -> Tensor:
    """Sample `feature` at pixel + flow (bilinear, zeros outside). feature [B, C, H, W], flow [B, 2, H, W].

    Runs in float32 even under autocast: bf16 sampling coordinates would be off by a third of a pixel.
    """
    _, _, h, w = feature.shape
    with float32_region(feature.device):
        pos = pixel_grid(h, w, flow.device) + flow.float()
        gx = 2 * pos[:, 0] / (w - 1) - 1
        gy = 2 * pos[:, 1] / (h - 1) - 1
        grid = torch.stack((gx, gy), dim=-1)
        out = F.grid_sample(feature.float(), grid, mode="bilinear", padding_mode="zeros", align_corners=True)
    return out.to(feature.dtype)


def _reference_positions(pos: Tensor, h: int, w: int) -> Tensor:
    """Round-trip pixel positions [B, 2, N] through [-1, 1] the way the reference's grid_sample sees them.

    The reference normalizes with (p - c) / c and grid_sample (CPU) maps back with (g + 1) * c; the
    result differs from p by ~1e-5 px, which decides floor() for near-integer positions.
    """
    half = torch.tensor([(w - 1) / 2.0, (h - 1) / 2.0], device=pos.device, dtype=torch.float32).view(1, 2, 1)
    return ((pos - half) / half + 1) * half


def _pixels_per_chunk(device: torch.device) -> int:
    # CPU: keep each gathered block (~pixels x 100 x C floats) inside the cache. GPU: large blocks for
    # parallelism, still bounded (~0.4 GB in bf16) however many pairs are batched.
    return 256 if device.type == "cpu" else 16384


def window_correlation(feature0: Tensor, feature1: Tensor, radius: int, flow: Tensor | None = None) -> Tensor:
    """Dot products of feature0 with bilinearly sampled feature1 at pixel + flow + d, for the
    (2r+1)^2 integer offsets d (dy-major); zeros outside the image, scaled by 1/sqrt(C).

    Returns [B, H*W, (2r+1)^2]. All offsets of a pixel share one sub-pixel fraction, so instead of
    interpolating features (4 reads per offset) we correlate against the (2r+2)^2 integer neighbours
    once and interpolate the correlations. Neighbours are gathered from a channels-last table for a
    block of pixels at a time, so memory stays bounded.
    """
    b, c, h, w = feature0.shape
    device = feature0.device
    n = h * w
    pos = pixel_grid(h, w, device).view(1, 2, n)
    if flow is not None:
        pos = pos + flow.float().reshape(b, 2, n)
    pos = _reference_positions(pos.expand(b, -1, -1), h, w)
    corner = pos.floor()
    frac = pos - corner  # [B, 2, N]
    corner = corner.clamp(-(2**30), 2**30).long()  # keeps absurd flows from overflowing

    # Flat index of every integer neighbour, [B*N, span*span] (dy-major), and whether it is inside.
    span = 2 * radius + 2
    steps = torch.arange(-radius, radius + 2, device=device)
    xs = corner[:, 0].unsqueeze(-1) + steps  # [B, N, span]
    ys = corner[:, 1].unsqueeze(-1) + steps
    inside = ((ys >= 0) & (ys < h)).unsqueeze(-1) & ((xs >= 0) & (xs < w)).unsqueeze(-2)
    image_start = (torch.arange(b, device=device) * n).view(b, 1, 1, 1)
    index = image_start + ys.clamp(0, h - 1).unsqueeze(-1) * w + xs.clamp(0, w - 1).unsqueeze(-2)
    index = index.view(b * n, span * span)

    table = feature1.permute(0, 2, 3, 1).reshape(b * n, c)
    query = feature0.permute(0, 2, 3, 1).reshape(b * n, c, 1)
    dots = torch.empty(b * n, span * span, device=device, dtype=torch.float32)
    chunk = _pixels_per_chunk(device)
    for start in range(0, b * n, chunk):
        stop = start + chunk
        dots[start:stop] = torch.bmm(table[index[start:stop]], query[start:stop]).squeeze(-1)
    grid = (dots.view(b, n, span, span) * inside).view(b, n, span, span)

    fx = frac[:, 0, :, None, None]
    fy = frac[:, 1, :, None, None]
    top = grid[:, :, :-1, :-1] * (1 - fx) + grid[:, :, :-1, 1:] * fx
    bottom = grid[:, :, 1:, :-1] * (1 - fx) + grid[:, :, 1:, 1:] * fx
    corr = top * (1 - fy) + bottom * fy
    return corr.reshape(b, n, (span - 1) ** 2) / (c**0.5)
