"""Window partitioning helpers, the shifted-window mask and the sine position encoding.

All tensors here are channels-last ([B, H, W, C]) because attention works on token vectors.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

# Additive penalty the reference puts on attention scores across shifted-window seams. It is a finite
# number, not -inf, and scores can be large, so it is kept exactly for parity.
SHIFT_MASK_PENALTY = -100.0


def to_windows(x: Tensor, splits: int) -> Tensor:
    """[B, H, W, C] -> [B, S*S, (H/S)*(W/S), C], windows in row-major order."""
    b, h, w, c = x.shape
    wh, ww = h // splits, w // splits
    x = x.view(b, splits, wh, splits, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, splits * splits, wh * ww, c)


def from_windows(x: Tensor, splits: int, h: int, w: int) -> Tensor:
    """Inverse of `to_windows`: [B, S*S, L, C] -> [B, H, W, C]."""
    b, _, _, c = x.shape
    wh, ww = h // splits, w // splits
    x = x.view(b, splits, splits, wh, ww, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


def shifted_window_mask(h: int, w: int, splits: int, device: torch.device) -> Tensor:
    """Additive mask [S*S, L, L] keeping attention inside the regions a cyclic shift glued together.

    After rolling by half a window, the last window row/column holds pixels from opposite image
    borders; tokens may only attend to tokens of the same original region.
    """
    wh, ww = h // splits, w // splits
    sh, sw = wh // 2, ww // 2
    # Region label per row/column: 0 for the bulk, 1 for the seam band, 2 for the wrapped band.
    rows = torch.zeros(h, device=device)
    rows[h - wh : h - sh] = 1
    rows[h - sh :] = 2
    cols = torch.zeros(w, device=device)
    cols[w - ww : w - sw] = 1
    cols[w - sw :] = 2
    label = (rows[:, None] * 3 + cols[None, :])[None, :, :, None]  # [1, H, W, 1]
    label = to_windows(label, splits)[0, :, :, 0]  # [S*S, L]
    differs = label[:, None, :] != label[:, :, None]
    return torch.zeros(differs.shape, device=device).masked_fill_(differs, SHIFT_MASK_PENALTY)


def sine_position(h: int, w: int, channels: int, device: torch.device) -> Tensor:
    """DETR-style normalized sine encoding [channels, H, W]: first half encodes y, second half x.

    Written with the same float32 operations as the reference so the values agree bit for bit.
    """
    half = channels // 2
    eps = 1e-6
    y = torch.arange(1, h + 1, dtype=torch.float32, device=device)
    x = torch.arange(1, w + 1, dtype=torch.float32, device=device)
    y = y / (y[-1:] + eps) * (2 * math.pi)
    x = x / (x[-1:] + eps) * (2 * math.pi)
    dim_t = torch.arange(half, dtype=torch.float32, device=device)
    dim_t = 10000 ** (2 * (dim_t // 2) / half)

    def encode(v: Tensor) -> Tensor:
        # Interleave sin on even and cos on odd frequencies: [len, half].
        t = v[:, None] / dim_t
        return torch.stack((t[:, 0::2].sin(), t[:, 1::2].cos()), dim=2).flatten(1)

    pos_y = encode(y).t()[:, :, None].expand(half, h, w)
    pos_x = encode(x).t()[:, None, :].expand(half, h, w)
    return torch.cat((pos_y, pos_x), dim=0)
