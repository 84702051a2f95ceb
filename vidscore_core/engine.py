"""The shared scoring engine.

Every score (CLIP embeddings, flow) is a `Scorer`: how to turn one clip into a small array
(decode + resize, in DataLoader worker processes), how to stack such arrays into a batch (also in
the workers, so the batch arrives ready to pin), and how to run a batch through its model on the
device (main process). The engine owns what is common: worker processes, per-clip error capture,
pinned memory, inference mode, progress, and one result per input row in input order.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import torch
from torch.utils.data import DataLoader, Dataset

log = logging.getLogger(__name__)

Payload = TypeVar("Payload")


@dataclass(frozen=True)
class Clip:
    """One input row: what a scorer needs to know about a clip."""

    index: int
    video_id: str
    path: str
    text: str | None = None


@dataclass
class ClipResult:
    """The outcome for one clip: `values` from the scorer, or an `error` reason."""

    clip: Clip
    values: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class Batch:
    """What a worker hands to the main process: the stacked payloads and the clips that failed."""

    clips: list[Clip]
    data: Any
    failed: list[tuple[Clip, str]]


class Sampler(Protocol[Payload]):
    """The half of a scorer that runs in worker processes: small, picklable, no model in it."""

    def prepare(self, clip: Clip) -> Payload:
        """Decode and resize one clip; raise (any exception) to record an error for it."""

    def collate(self, payloads: list[Payload]) -> Any:
        """Stack the payloads of one batch into tensors (CPU)."""


class Scorer(Protocol):
    """A model plugged into the engine: its `sampler` feeds it, `run` scores a batch on the device."""

    name: str
    sampler: Sampler

    def run(self, data: Any, clips: list[Clip]) -> list[dict[str, Any]]:
        """Run the model on a collated batch already on the device; one dict of values per clip.

        A dict may carry an "error" key to record a per-clip failure found at model time.
        """


def error_reason(exc: BaseException) -> str:
    """A short, single-line reason for a row's `error` column."""
    reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
    reason = " ".join(str(reason).split())
    return reason[:500]


class _ClipDataset(Dataset, Generic[Payload]):
    def __init__(self, sampler: Sampler[Payload], clips: Sequence[Clip]) -> None:
        self.sampler = sampler
        self.clips = list(clips)

    def __len__(self) -> int:
        return len(self.clips)

    def __getitem__(self, i: int) -> tuple[Clip, Any, str | None]:
        clip = self.clips[i]
        try:
            return clip, self.sampler.prepare(clip), None
        except Exception as exc:  # one bad clip never fails the batch
            return clip, None, error_reason(exc)


class _Collate:
    """Picklable collate function (workers may be spawned)."""

    def __init__(self, sampler: Sampler) -> None:
        self.sampler = sampler

    def __call__(self, items: list[tuple[Clip, Any, str | None]]) -> Batch:
        good = [(clip, payload) for clip, payload, err in items if err is None]
        failed = [(clip, err) for clip, _, err in items if err is not None]
        data = self.sampler.collate([p for _, p in good]) if good else None
        return Batch(clips=[c for c, _ in good], data=data, failed=failed)


def to_device(data: Any, device: torch.device) -> Any:
    """Move nested tensors to the device; non-blocking when the source is pinned."""
    if isinstance(data, torch.Tensor):
        return data.to(device, non_blocking=data.is_pinned())
    if isinstance(data, dict):
        return {k: to_device(v, device) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(to_device(v, device) for v in data)
    return data


@dataclass
class EngineStats:
    clips: int = 0
    errors: int = 0
    batches: int = 0
    seconds: float = 0.0
    model_seconds: float = 0.0

    @property
    def clips_per_s(self) -> float:
        return self.clips / self.seconds if self.seconds > 0 else 0.0


ProgressFn = Callable[[int, int], None]


def run_scorer(
    scorer: Scorer,
    clips: Sequence[Clip],
    *,
    device: str = "cpu",
    batch_size: int = 8,
    num_workers: int = 2,
    progress: ProgressFn | None = None,
    stats: EngineStats | None = None,
) -> list[ClipResult]:
    """Score every clip; returns one `ClipResult` per clip, in input order."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    clips = list(clips)
    stats = stats if stats is not None else EngineStats()
    torch_device = torch.device(device)
    loader = DataLoader(
        _ClipDataset(scorer.sampler, clips),
        batch_size=batch_size,
        shuffle=False,
        num_workers=max(0, num_workers),
        collate_fn=_Collate(scorer.sampler),
        pin_memory=torch_device.type == "cuda",
        prefetch_factor=4 if num_workers > 0 else None,
        persistent_workers=False,
    )
    results: dict[int, ClipResult] = {}
    started = time.perf_counter()
    done = 0
    with torch.inference_mode():
        for batch in loader:
            stats.batches += 1
            for clip, reason in batch.failed:
                results[clip.index] = ClipResult(clip, error=reason)
            if batch.clips:
                t0 = time.perf_counter()
                values = scorer.run(to_device(batch.data, torch_device), batch.clips)
                stats.model_seconds += time.perf_counter() - t0
                for clip, vals in zip(batch.clips, values, strict=True):
                    error = vals.pop("error", None) if isinstance(vals, dict) else None
                    results[clip.index] = ClipResult(clip, values=vals, error=error)
            done += len(batch.clips) + len(batch.failed)
            if progress is not None:
                progress(done, len(clips))
    stats.clips += len(clips)
    stats.errors += sum(1 for r in results.values() if r.error)
    stats.seconds += time.perf_counter() - started
    return [results[c.index] for c in clips]
