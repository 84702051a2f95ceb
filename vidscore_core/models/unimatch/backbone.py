"""CNN feature encoder: a small ResNet at 1/4 resolution plus a shared-weight strided conv for 1/8.

Instance norms carry no parameters (affine=False), which is why the checkpoint has no norm keys.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ResidualBlock(nn.Module):
    """Two 3x3 convs with instance norm; a 1x1 projection on the skip path when the shape changes."""

    def __init__(self, in_dim: int, out_dim: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_dim, out_dim, 3, stride=stride, padding=1, bias=False)
        self.conv2 = nn.Conv2d(out_dim, out_dim, 3, padding=1, bias=False)
        self.downsample: nn.Sequential | None = None
        if stride != 1 or in_dim != out_dim:
            # Index 0 is the conv, index 1 the (parameter-free) norm: matches the checkpoint keys.
            self.downsample = nn.Sequential(
                nn.Conv2d(in_dim, out_dim, 1, stride=stride), nn.InstanceNorm2d(out_dim)
            )

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(F.instance_norm(self.conv1(x)))
        y = F.relu(F.instance_norm(self.conv2(y)))
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(skip + y)


class MultiStrideConv(nn.Module):
    """One 3x3 kernel applied at several strides, giving a feature pyramid from one map."""

    def __init__(self, channels: int, strides: tuple[int, ...]) -> None:
        super().__init__()
        self.strides = strides
        self.weight = nn.Parameter(torch.empty(channels, channels, 3, 3))
        nn.init.kaiming_uniform_(self.weight, nonlinearity="relu")

    def forward(self, x: Tensor) -> list[Tensor]:
        return [F.conv2d(x, self.weight, None, stride=s, padding=1) for s in self.strides]


def _stage(in_dim: int, out_dim: int, stride: int) -> nn.Sequential:
    return nn.Sequential(ResidualBlock(in_dim, out_dim, stride), ResidualBlock(out_dim, out_dim, 1))


class CNNEncoder(nn.Module):
    """Image -> features at 1/4 and 1/8 resolution (returned high resolution first)."""

    def __init__(self, out_dim: int = 128, num_scales: int = 2) -> None:
        super().__init__()
        if num_scales != 2:
            raise ValueError("only the two-scale encoder of gmflow-scale2 is implemented")
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)  # 1/2
        self.layer1 = _stage(64, 64, 1)  # 1/2
        self.layer2 = _stage(64, 96, 2)  # 1/4
        self.layer3 = _stage(96, 128, 1)  # stays at 1/4 because the pyramid conv makes 1/8
        self.conv2 = nn.Conv2d(128, out_dim, 1)
        self.trident_conv = MultiStrideConv(out_dim, strides=(1, 2))

    def forward(self, x: Tensor) -> list[Tensor]:
        x = F.relu(F.instance_norm(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.trident_conv(self.conv2(x))
