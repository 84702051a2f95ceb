"""UniMatch optical flow (Xu et al., TPAMI 2023), inference only, gmflow-scale2-regrefine6 configuration.

Pipeline for an image pair:
1. CNN features at 1/8 and 1/4 resolution for both images.
2. Coarse scale (1/8): position encoding, 6-block window transformer (2x2 windows), global softmax
   matching, global self-attention propagation of the flow.
3. Fine scale (1/4): upsampled coarse flow warps image-1 features; transformer with 8x8 windows,
   local matching (radius 4) for a residual, propagation within 3x3 neighbourhoods.
4. Six regression-refinement steps on local correlations around the current flow, then convex
   upsampling x4 to full resolution.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .backbone import CNNEncoder
from .geometry import warp, window_correlation
from .matching import global_matching, local_matching
from .precision import float32_region
from .propagation import SelfAttnPropagation
from .refine import UpdateBlock, convex_upsample
from .transformer import FeatureTransformer
from .windows import sine_position

# Fixed inference settings of the Open-Sora flow score, coarse scale first.
ATTN_SPLITS = (2, 8)
CORR_RADIUS = (-1, 4)
PROP_RADIUS = (-1, 1)
NUM_REFINE_STEPS = 6
REFINE_RADIUS = 4

# Both images must tile into the 8x8 attention windows of the 1/4-resolution scale.
SIZE_MULTIPLE = 32

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


class UniMatch(nn.Module):
    """The flow network. Parameter names follow the official checkpoint so it loads with strict=True."""

    def __init__(
        self,
        feature_channels: int = 128,
        num_scales: int = 2,
        upsample_factor: int = 4,
        num_transformer_layers: int = 6,
        ffn_dim_expansion: int = 4,
    ) -> None:
        super().__init__()
        self.feature_channels = feature_channels
        self.upsample_factor = upsample_factor
        self.backbone = CNNEncoder(feature_channels, num_scales)
        self.transformer = FeatureTransformer(num_transformer_layers, feature_channels, ffn_dim_expansion)
        self.feature_flow_attn = SelfAttnPropagation(feature_channels)
        self.refine_proj = nn.Conv2d(feature_channels, 256, 1)
        self.refine = UpdateBlock((2 * REFINE_RADIUS + 1) ** 2, upsample_factor)
        self.register_buffer("pixel_mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _add_position(self, feature: Tensor, splits: int) -> Tensor:
        # The encoding is computed per attention window and tiled, so every window sees the same one.
        _, c, h, w = feature.shape
        pos = sine_position(h // splits, w // splits, c, feature.device)
        return feature + pos.repeat(1, splits, splits).to(feature.dtype)

    def _match_scale(
        self, feature0: Tensor, feature1: Tensor, flow: Tensor | None, scale: int
    ) -> tuple[Tensor, Tensor]:
        """One scale of matching + propagation. Returns (flow at this scale, transformed feature0)."""
        splits = ATTN_SPLITS[scale]
        if flow is not None:
            with float32_region(flow.device):
                flow = F.interpolate(flow, scale_factor=2, mode="bilinear", align_corners=True) * 2
            feature1 = warp(feature1, flow)
        feature0 = self._add_position(feature0, splits)
        feature1 = self._add_position(feature1, splits)
        feature0, feature1 = self.transformer(feature0, feature1, splits)
        radius = CORR_RADIUS[scale]
        step = (
            global_matching(feature0, feature1) if radius < 0 else local_matching(feature0, feature1, radius)
        )
        flow = step if flow is None else flow + step
        return self.feature_flow_attn(feature0, flow, PROP_RADIUS[scale]), feature0

    def _refine(self, feature0: Tensor, context_feature: Tensor, feature1: Tensor, flow: Tensor) -> Tensor:
        """Regression refinement at 1/4 resolution followed by convex upsampling to full size."""
        b, _, h, w = feature0.shape
        hidden0, context = torch.chunk(self.refine_proj(context_feature), 2, dim=1)
        # The reference rebuilds the GRU state from the same features at every step, so the hidden
        # state does not carry over between steps: only the motion input changes.
        gru = self.refine.fixed_start(torch.tanh(hidden0), torch.relu(context))
        hidden = hidden0
        for _ in range(NUM_REFINE_STEPS):
            corr = window_correlation(feature0, feature1, REFINE_RADIUS, flow)  # [B, HW, 81]
            corr = corr.transpose(1, 2).reshape(b, -1, h, w).to(hidden0.dtype)
            hidden, delta = self.refine.step(gru, corr, flow)
            with float32_region(flow.device):
                flow = flow + delta.float()
        # Only the last step's upsampling mask is used at inference.
        mask = self.refine.mask(hidden)
        with float32_region(flow.device):
            return convex_upsample(flow, mask.float(), self.upsample_factor)

    @torch.inference_mode()
    def estimate_flow(self, img0: Tensor, img1: Tensor) -> Tensor:
        """Flow from img0 to img1. Inputs [B, 3, H, W] in 0..255 (H, W multiples of 32); returns [B, 2, H, W]
        float32 in pixels (x then y), the reference's final prediction."""
        if img0.shape != img1.shape or img0.dim() != 4 or img0.shape[1] != 3:
            raise ValueError(
                f"expected two [B, 3, H, W] images of equal shape, got {tuple(img0.shape)} "
                f"and {tuple(img1.shape)}"
            )
        h, w = img0.shape[-2:]
        if h % SIZE_MULTIPLE or w % SIZE_MULTIPLE:
            raise ValueError(f"image size {h}x{w} must be a multiple of {SIZE_MULTIPLE} on both sides")
        b = img0.shape[0]
        images = torch.cat((img0, img1), dim=0).float()
        images = (images / 255.0 - self.pixel_mean) / self.pixel_std
        fine, coarse = self.backbone(images)  # 1/4 and 1/8 resolution, [2B, C, h, w] each

        flow, _ = self._match_scale(coarse[:b], coarse[b:], None, scale=0)
        flow, feature0 = self._match_scale(fine[:b], fine[b:], flow, scale=1)
        return self._refine(fine[:b], feature0, fine[b:], flow)


def build_unimatch() -> UniMatch:
    """UniMatch in the configuration of gmflow-scale2-regrefine6-mixdata-train320x576 (random init)."""
    return UniMatch(feature_channels=128, num_scales=2, upsample_factor=4, num_transformer_layers=6)
