"""Frame selection with the reference's index semantics: which frame indices a score reads.

The Open-Sora scores read frames with decord: ``index = int(p * n)`` (or a given index), clamped to
``n - 1``, where n is the reader's *verified* frame count.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

# (n) -> indices in request order; the indices depend on the verified count (FrameRequest.want).
Want = Callable[[int], list[int]]


def frame_indices_at(n: int, points: Sequence[float]) -> list[int]:
    """decord semantics of the reference: int(p * n), clamped to n - 1."""
    if n < 1:
        raise ValueError(f"frame count must be >= 1, got {n}")
    out = []
    for p in points:
        if not p >= 0:  # also rejects NaN
            raise ValueError(f"sampling points must be >= 0, got {p}")
        out.append(min(int(p * n), n - 1))
    return out


def clamp_indices(n: int, indices: Sequence[int]) -> list[int]:
    """Indices >= n become n - 1 (the reference's rule for clips shorter than the flow's frame 30)."""
    if n < 1:
        raise ValueError(f"frame count must be >= 1, got {n}")
    out = []
    for i in indices:
        if int(i) != i or i < 0:
            raise ValueError(f"frame indices must be non-negative integers, got {i!r}")
        out.append(min(int(i), n - 1))
    return out


@dataclass(frozen=True)
class FrameRequest:
    """Which frames one score reads: sampling `points` (int(p·n), clamped), fixed `indices`
    (clamped) or every `step`-th frame from 0 (0, step, 2·step, … < n); all frames when none is
    given. The indices depend on the verified count n.

    `size` (width, height): every frame, scaled by FFmpeg's swscale while converting to RGB, so no
    full-size RGB frame is ever made (shot detection reads every frame at 48×27).
    """

    points: tuple[float, ...] | None = None
    indices: tuple[int, ...] | None = None
    step: int | None = None
    size: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if sum(x is not None for x in (self.points, self.indices, self.step)) > 1:
            raise ValueError("give one of points, indices or step")
        if self.step is not None and (int(self.step) != self.step or self.step < 1):
            raise ValueError(f"step must be a positive integer, got {self.step!r}")
        if self.size is not None and (self.points, self.indices, self.step) != (None, None, None):
            raise ValueError("a scaled request reads every frame: give no points, indices or step with size")
        if self.size is not None and (len(self.size) != 2 or min(self.size) < 1):
            raise ValueError(f"size must be (width, height) > 0, got {self.size}")
        self.want(1)  # validate before any decoding

    def want(self, n: int) -> list[int]:
        if self.points is not None:
            return frame_indices_at(n, self.points)
        if self.indices is not None:
            return clamp_indices(n, self.indices)
        return list(range(0, n, self.step or 1))


def in_request_order(got: dict[int, np.ndarray], indices: list[int]) -> list[np.ndarray]:
    # Copies for repeated indices: duplicates must not share memory.
    return [got[i].copy() if indices.count(i) > 1 else got[i] for i in indices]
