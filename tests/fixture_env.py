"""The environment every scoring test runs under: the fixtures' random-weight checkpoints, CPU."""

from __future__ import annotations

from pathlib import Path


def fixture_model_env(fixtures: Path) -> dict[str, str]:
    """VIDSCORE_* variables for the fixture weights, CPU and in-process decoding."""
    weights = fixtures / "weights"
    return {
        "VIDSCORE_CLIP_WEIGHTS": str(weights / "clip_tiny_openai.pt"),
        "VIDSCORE_AESTHETIC_WEIGHTS": str(weights / "aesthetic_random_scaled.pth"),
        "VIDSCORE_UNIMATCH_WEIGHTS": str(weights / "unimatch_random.pth"),
        "VIDSCORE_DEVICE": "cpu",
        "VIDSCORE_NUM_WORKERS": "0",
    }
