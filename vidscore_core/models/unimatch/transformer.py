"""Feature transformer: alternating self- and cross-attention over (shifted) windows.

Both images are processed together: the batch holds [img0; img1] as queries and [img1; img0] as the
cross-attention partner, so one pass updates both feature maps symmetrically.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .windows import from_windows, shifted_window_mask, to_windows


def window_attention(q: Tensor, k: Tensor, v: Tensor, splits: int, mask: Tensor | None) -> Tensor:
    """Single-head attention inside each of splits x splits windows. q, k, v: [B, H, W, C].

    With a mask the maps are first rolled by half a window (Swin's shifted windows) and rolled back.
    """
    b, h, w, c = q.shape
    shift = (-(h // splits // 2), -(w // splits // 2))
    if mask is not None:
        q, k, v = (torch.roll(t, shifts=shift, dims=(1, 2)) for t in (q, k, v))
    # Windows act as heads: [B, S*S, L, C]; the [S*S, L, L] mask broadcasts over the batch.
    qw, kw, vw = (to_windows(t, splits) for t in (q, k, v))
    if mask is not None:
        mask = mask.to(qw.dtype)  # SDPA wants the mask in the query dtype (bf16 under autocast)
    out = F.scaled_dot_product_attention(qw, kw, vw, attn_mask=mask)
    out = from_windows(out, splits, h, w)
    if mask is not None:
        out = torch.roll(out, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    return out


class AttentionLayer(nn.Module):
    """Projected single-head window attention, merge + norm, optional FFN on [input, message]."""

    def __init__(self, dim: int = 128, with_ffn: bool = True, ffn_expansion: int = 4) -> None:
        super().__init__()
        self.q_proj = nn.Linear(dim, dim, bias=False)
        self.k_proj = nn.Linear(dim, dim, bias=False)
        self.v_proj = nn.Linear(dim, dim, bias=False)
        self.merge = nn.Linear(dim, dim, bias=False)
        self.norm1 = nn.LayerNorm(dim)
        self.with_ffn = with_ffn
        if with_ffn:
            hidden = 2 * dim * ffn_expansion
            self.mlp = nn.Sequential(
                nn.Linear(2 * dim, hidden, bias=False), nn.GELU(), nn.Linear(hidden, dim, bias=False)
            )
            self.norm2 = nn.LayerNorm(dim)

    def forward(self, source: Tensor, target: Tensor, splits: int, mask: Tensor | None) -> Tensor:
        message = window_attention(
            self.q_proj(source), self.k_proj(target), self.v_proj(target), splits, mask
        )
        message = self.norm1(self.merge(message))
        if self.with_ffn:
            message = self.norm2(self.mlp(torch.cat((source, message), dim=-1)))
        return source + message


class TransformerBlock(nn.Module):
    """Self-attention (no FFN) followed by cross-attention with FFN."""

    def __init__(self, dim: int = 128, ffn_expansion: int = 4) -> None:
        super().__init__()
        self.self_attn = AttentionLayer(dim, with_ffn=False)
        self.cross_attn_ffn = AttentionLayer(dim, with_ffn=True, ffn_expansion=ffn_expansion)

    def forward(self, source: Tensor, target: Tensor, splits: int, mask: Tensor | None) -> Tensor:
        source = self.self_attn(source, source, splits, mask)
        return self.cross_attn_ffn(source, target, splits, mask)


class FeatureTransformer(nn.Module):
    def __init__(self, num_layers: int = 6, dim: int = 128, ffn_expansion: int = 4) -> None:
        super().__init__()
        self.layers = nn.ModuleList(TransformerBlock(dim, ffn_expansion) for _ in range(num_layers))

    def forward(self, feature0: Tensor, feature1: Tensor, splits: int) -> tuple[Tensor, Tensor]:
        """feature0/1: [B, C, H, W] -> transformed [B, C, H, W] pair."""
        b, _, h, w = feature0.shape
        mask = shifted_window_mask(h, w, splits, feature0.device) if splits > 1 else None
        x = torch.cat((feature0, feature1), dim=0).permute(0, 2, 3, 1)  # [2B, H, W, C]
        for i, layer in enumerate(self.layers):
            partner = torch.cat((x[b:], x[:b]), dim=0)
            # Odd layers use shifted windows so information crosses window borders.
            x = layer(x, partner, splits, mask if i % 2 == 1 else None)
        x = x.permute(0, 3, 1, 2).contiguous()
        return x[:b], x[b:]
