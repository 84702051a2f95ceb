"""RAFT-style regression refinement: motion encoder, separable ConvGRU, flow head, upsampling mask."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MotionEncoder(nn.Module):
    """Encode the local correlation volume and the current flow into 128 channels (flow appended)."""

    def __init__(self, corr_channels: int = 81, flow_channels: int = 2) -> None:
        super().__init__()
        self.convc1 = nn.Conv2d(corr_channels, 256, 1)
        self.convc2 = nn.Conv2d(256, 192, 3, padding=1)
        self.convf1 = nn.Conv2d(flow_channels, 128, 7, padding=3)
        self.convf2 = nn.Conv2d(128, 64, 3, padding=1)
        self.conv = nn.Conv2d(192 + 64, 128 - flow_channels, 3, padding=1)

    def forward(self, flow: Tensor, corr: Tensor) -> Tensor:
        c = F.relu(self.convc2(F.relu(self.convc1(corr))))
        f = F.relu(self.convf2(F.relu(self.convf1(flow))))
        out = F.relu(self.conv(torch.cat((c, f), dim=1)))
        return torch.cat((out, flow.to(out.dtype)), dim=1)


class SepConvGRU(nn.Module):
    """ConvGRU applied twice: once with 1x5 kernels (horizontal), then with 5x1 kernels (vertical).

    Input channels of every gate conv are [hidden (128), context (128), motion (128)].
    """

    def __init__(self, hidden_dim: int = 128, input_dim: int = 256) -> None:
        super().__init__()
        both = hidden_dim + input_dim
        self.hidden_dim = hidden_dim
        self.convz1 = nn.Conv2d(both, hidden_dim, (1, 5), padding=(0, 2))
        self.convr1 = nn.Conv2d(both, hidden_dim, (1, 5), padding=(0, 2))
        self.convq1 = nn.Conv2d(both, hidden_dim, (1, 5), padding=(0, 2))
        self.convz2 = nn.Conv2d(both, hidden_dim, (5, 1), padding=(2, 0))
        self.convr2 = nn.Conv2d(both, hidden_dim, (5, 1), padding=(2, 0))
        self.convq2 = nn.Conv2d(both, hidden_dim, (5, 1), padding=(2, 0))

    def forward(self, h: Tensor, x: Tensor) -> Tensor:
        """Plain GRU update (the checkpoint's definition); `FixedInputGRU` is the fast equivalent."""
        for conv_z, conv_r, conv_q in (
            (self.convz1, self.convr1, self.convq1),
            (self.convz2, self.convr2, self.convq2),
        ):
            hx = torch.cat((h, x), dim=1)
            z = torch.sigmoid(conv_z(hx))
            r = torch.sigmoid(conv_r(hx))
            q = torch.tanh(conv_q(torch.cat((r * h, x), dim=1)))
            h = (1 - z) * h + z * q
        return h


def _conv(x: Tensor, weight: Tensor, bias: Tensor | None, like: nn.Conv2d) -> Tensor:
    return F.conv2d(x, weight, bias, padding=like.padding)


class FixedInputGRU:
    """`SepConvGRU` specialised to refinement at inference, where each step starts from the same
    hidden state and context and only the motion features change.

    The gate convs are linear in their input channels, so the constant channels' contribution (and
    the bias) is computed once; each step convolves only what changes. Same result as the plain GRU
    up to float rounding, with roughly 40% fewer multiply-adds per step.
    """

    def __init__(self, gru: SepConvGRU, hidden: Tensor, context: Tensor) -> None:
        d = gru.hidden_dim
        self.gru = gru
        self.hidden = hidden
        hc = torch.cat((hidden, context), dim=1)
        z1, r1, q1 = gru.convz1, gru.convr1, gru.convq1
        # Horizontal pass: hidden and context are both fixed, only motion varies for z and r.
        self.zr1_fixed = _conv(
            hc, torch.cat((z1.weight[:, : 2 * d], r1.weight[:, : 2 * d])), torch.cat((z1.bias, r1.bias)), z1
        )
        self.q1_fixed = _conv(context, q1.weight[:, d : 2 * d], q1.bias, q1)
        self.zrq1_motion = torch.cat((z1.weight[:, 2 * d :], r1.weight[:, 2 * d :], q1.weight[:, 2 * d :]))
        self.q1_hidden = q1.weight[:, :d]
        # Vertical pass: the hidden input varies, context is fixed.
        z2, r2, q2 = gru.convz2, gru.convr2, gru.convq2
        self.zrq2_fixed = _conv(
            context,
            torch.cat((z2.weight[:, d : 2 * d], r2.weight[:, d : 2 * d], q2.weight[:, d : 2 * d])),
            torch.cat((z2.bias, r2.bias, q2.bias)),
            z2,
        )
        self.zr2_varying = torch.cat(
            (
                torch.cat((z2.weight[:, :d], z2.weight[:, 2 * d :]), 1),
                torch.cat((r2.weight[:, :d], r2.weight[:, 2 * d :]), 1),
            )
        )
        self.q2_hidden = q2.weight[:, :d]
        self.q2_motion = q2.weight[:, 2 * d :]

    def __call__(self, motion: Tensor) -> Tensor:
        gru, d, h = self.gru, self.gru.hidden_dim, self.hidden
        zrq = _conv(motion, self.zrq1_motion, None, gru.convq1)
        zr = torch.sigmoid(self.zr1_fixed + zrq[:, : 2 * d])
        z, r = zr[:, :d], zr[:, d:]
        q = torch.tanh(self.q1_fixed + zrq[:, 2 * d :] + _conv(r * h, self.q1_hidden, None, gru.convq1))
        h = (1 - z) * h + z * q

        fixed = self.zrq2_fixed
        zr = torch.sigmoid(
            fixed[:, : 2 * d] + _conv(torch.cat((h, motion), 1), self.zr2_varying, None, gru.convz2)
        )
        z, r = zr[:, :d], zr[:, d:]
        q_in = _conv(r * h, self.q2_hidden, None, gru.convq2) + _conv(
            motion, self.q2_motion, None, gru.convq2
        )
        q = torch.tanh(fixed[:, 2 * d :] + q_in)
        return (1 - z) * h + z * q


class FlowHead(nn.Module):
    def __init__(self, in_dim: int = 128, hidden_dim: int = 256, out_dim: int = 2) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_dim, hidden_dim, 3, padding=1)
        self.conv2 = nn.Conv2d(hidden_dim, out_dim, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.conv2(F.relu(self.conv1(x)))


class UpdateBlock(nn.Module):
    """One refinement step: (hidden, context, correlation, flow) -> (hidden, flow residual)."""

    def __init__(self, corr_channels: int = 81, upsample_factor: int = 4) -> None:
        super().__init__()
        self.encoder = MotionEncoder(corr_channels, 2)
        self.gru = SepConvGRU(128, 128 + 128)
        self.flow_head = FlowHead(128, 256, 2)
        # Convex-upsampling weights: 9 neighbours for each of factor^2 sub-pixels.
        self.mask = nn.Sequential(
            nn.Conv2d(128, 256, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, upsample_factor**2 * 9, 1),
        )

    def forward(self, hidden: Tensor, context: Tensor, corr: Tensor, flow: Tensor) -> tuple[Tensor, Tensor]:
        motion = self.encoder(flow, corr)
        hidden = self.gru(hidden, torch.cat((context, motion), dim=1))
        return hidden, self.flow_head(hidden)

    def fixed_start(self, hidden: Tensor, context: Tensor) -> FixedInputGRU:
        """A GRU for repeated steps from the same (hidden, context); see `FixedInputGRU`."""
        return FixedInputGRU(self.gru, hidden, context)

    def step(self, gru: FixedInputGRU, corr: Tensor, flow: Tensor) -> tuple[Tensor, Tensor]:
        """`forward` for a fixed (hidden, context): returns (new hidden, flow residual)."""
        hidden = gru(self.encoder(flow, corr))
        return hidden, self.flow_head(hidden)


def convex_upsample(flow: Tensor, mask_logits: Tensor, factor: int) -> Tensor:
    """Upsample flow [B, 2, H, W] by `factor`: each fine pixel is a softmax-weighted mix of the
    3x3 coarse neighbourhood (weights predicted by the network); flow values scale with the factor."""
    b, ch, h, w = flow.shape
    weights = torch.softmax(mask_logits.view(b, 1, 9, factor, factor, h, w), dim=2)
    neighbours = F.unfold(factor * flow, 3, padding=1).view(b, ch, 9, 1, 1, h, w)
    up = (weights * neighbours).sum(dim=2)  # [B, 2, f, f, H, W]
    return up.permute(0, 1, 4, 2, 5, 3).reshape(b, ch, factor * h, factor * w)
