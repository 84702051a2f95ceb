"""Keep the flow arithmetic in float32 when the caller runs the network under autocast."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def float32_region(device: torch.device) -> Iterator[None]:
    """Disable autocast inside: flows are pixel coordinates up to hundreds, and bf16 keeps only
    ~3 significant digits, so softmax-weighted coordinates and flow updates must stay float32."""
    if torch.is_autocast_enabled(device.type):
        with torch.autocast(device_type=device.type, enabled=False):
            yield
    else:
        yield
