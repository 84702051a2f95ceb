"""The LAION aesthetic predictor: an MLP head on L2-normalized CLIP image embeddings.

Layer names follow ``improved-aesthetic-predictor``'s ``MLP`` (``layers.{0,2,4,6,7}``), so
``sac+logos+ava1-l14-linearMSE.pth`` loads strictly. There is no non-linearity and dropout is
inactive in eval mode, so in inference the whole head is one affine map.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["AestheticMLP", "load_aesthetic"]


class AestheticMLP(nn.Module):
    """D → 1024 → 128 → 64 → 16 → 1 with the upstream dropouts (inactive in eval)."""

    def __init__(self, input_size: int = 768) -> None:
        super().__init__()
        self.input_size = input_size
        self.layers = nn.Sequential(
            nn.Linear(input_size, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, emb: Tensor) -> Tensor:
        """Normalized embeddings [N, D] → float32 scores [N]."""
        return self.layers(emb.float()).squeeze(-1)


def load_aesthetic(path: str | Path, device: str = "cpu", expected_dim: int | None = None) -> AestheticMLP:
    """Load an aesthetic MLP state dict strictly, in eval mode on ``device``.

    ``expected_dim`` is the CLIP embedding width it will be fed; a mismatch is reported before
    any scoring (the LAION head is trained on ViT-L/14's 768-dim embeddings).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"aesthetic MLP weights not found: {path}")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors come in many types; report them uniformly
        raise ValueError(f"cannot read aesthetic MLP checkpoint {path}: {exc}") from exc
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    first = state.get("layers.0.weight") if isinstance(state, Mapping) else None
    if not isinstance(first, Tensor) or first.ndim != 2:
        raise ValueError(f"{path} is not an aesthetic MLP checkpoint: no 'layers.0.weight' matrix")
    input_size = int(first.shape[1])
    if expected_dim is not None and input_size != expected_dim:
        # LAION's head is trained on ViT-L/14 (768-dim): name the fix when that is the case.
        hint = (
            "the ViT-L/14 weights" if input_size == 768 else f"a CLIP model with {input_size}-dim embeddings"
        )
        raise ValueError(
            f"aesthetic MLP expects {input_size}-dim CLIP embeddings but the CLIP model gives "
            f"{expected_dim}: use {hint}"
        )
    model = AestheticMLP(input_size)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path} does not fit the aesthetic MLP layout: {exc}") from exc
    return model.to(device).eval().requires_grad_(False)
