"""Load the official UniMatch checkpoint (or one in the same format) into `UniMatch`."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor

from .model import UniMatch, build_unimatch

_SHOWN_KEYS = 5


def _state_dict_of(checkpoint: object, path: Path) -> Mapping[str, Tensor]:
    # The official file wraps the weights as {"model": state_dict, ...}; a bare state dict is accepted too.
    if isinstance(checkpoint, Mapping) and isinstance(checkpoint.get("model"), Mapping):
        checkpoint = checkpoint["model"]
    if not isinstance(checkpoint, Mapping) or not all(isinstance(v, Tensor) for v in checkpoint.values()):
        raise ValueError(
            f"{path} is not a UniMatch checkpoint: expected a state dict or {{'model': state_dict}}"
        )
    return checkpoint


def _describe(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN_KEYS])
    return shown + (f", ... ({len(keys)} in total)" if len(keys) > _SHOWN_KEYS else "")


def load_unimatch(path: str | Path, device: str = "cpu") -> UniMatch:
    """Build the gmflow-scale2-regrefine6 network and load `path` strictly; returns it in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"UniMatch weights not found: {path}")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle/zip errors come in many types; report them uniformly
        raise ValueError(f"cannot read UniMatch checkpoint {path}: {exc}") from exc
    state = _state_dict_of(checkpoint, path)

    model = build_unimatch()
    expected = model.state_dict()
    problems = []
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing:
        problems.append(f"missing keys: {_describe(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_describe(unexpected)}")
    mismatched = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if mismatched:
        problems.append(f"shape mismatches: {_describe(mismatched)}")
    if problems:
        raise ValueError(
            f"{path} does not match UniMatch gmflow-scale2-regrefine6 (is it the right checkpoint?); "
            + "; ".join(problems)
        )
    model.load_state_dict(state, strict=True)
    return model.to(device).eval()
