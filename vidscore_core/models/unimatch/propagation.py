"""Flow propagation: smooth the flow by self-attention on image-0 features (values are the flow)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .precision import float32_region


class SelfAttnPropagation(nn.Module):
    def __init__(self, channels: int = 128) -> None:
        super().__init__()
        self.q_proj = nn.Linear(channels, channels)
        self.k_proj = nn.Linear(channels, channels)

    def forward(self, feature: Tensor, flow: Tensor, radius: int) -> Tensor:
        """feature [B, C, H, W], flow [B, 2, H, W]; radius -1 attends globally, r > 0 to a (2r+1)^2 window."""
        if radius > 0:
            return self._local(feature, flow, radius)
        b, c, h, w = feature.shape
        tokens = feature.flatten(2).transpose(1, 2)  # [B, HW, C]
        query = self.q_proj(tokens)
        # The released weights were trained with the key projected from the *query* (a known quirk of
        # the reference); reproducing it is required for the checkpoint to behave as trained.
        key = self.k_proj(query)
        with float32_region(feature.device):
            value = flow.float().flatten(2).transpose(1, 2)  # [B, HW, 2]
            out = F.scaled_dot_product_attention(query.float(), key.float(), value)
        return out.transpose(1, 2).reshape(b, 2, h, w)

    def _local(self, feature: Tensor, flow: Tensor, radius: int) -> Tensor:
        b, c, h, w = feature.shape
        side = 2 * radius + 1
        tokens = feature.flatten(2).transpose(1, 2)  # [B, HW, C]
        query = self.q_proj(tokens)  # [B, HW, C]
        key = self.k_proj(tokens).transpose(1, 2).reshape(b, c, h, w)
        # Zero padding: out-of-image neighbours get key 0 (score 0) and flow 0, as in the reference.
        keys = F.unfold(key, side, padding=radius).view(b, c, side * side, h * w)
        with float32_region(feature.device):
            scores = torch.einsum("blc,bckl->blk", query.float(), keys.float()) / (c**0.5)  # [B, HW, K]
            prob = torch.softmax(scores, dim=-1)
            flows = F.unfold(flow.float(), side, padding=radius).view(b, 2, side * side, h * w)
            out = torch.einsum("blk,bckl->bcl", prob, flows)  # [B, 2, HW]
        return out.reshape(b, 2, h, w)
