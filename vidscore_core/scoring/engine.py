"""The shared scoring engine.

Every score (CLIP embeddings, flow) is a `Scorer`: how to turn one clip into a small array (decode +
resize, in supervised worker processes), how to stack such arrays into a batch, and how to run a
batch through its model on the device (main process). The engine owns what is common: the worker
processes, failures by kind, pinned memory, inference mode, progress, and one result per input row
in input order.

Failures by kind (docs/ARCHITECTURE.md):

* a clip that cannot be read → its row's `error`, the batch goes on. That covers a media error
  raised while preparing it (`DecodeError`, or any exception carrying a `reason` string), a worker
  process that died on it (a decoder that aborted or segfaulted) and one that took longer than the
  clip time limit (a hung decoder: the worker is killed). A dead or killed worker is replaced, and
  every other clip's result is kept;
* a model that flags one clip (a dict with an "error" key from `Scorer.run`) → that row's `error`;
* anything else (an exception in `prepare`, `collate` or `run`) is a bug: it is raised, with the
  worker's traceback, and never turned into error rows.

Batches are the input order cut into `batch_size` clips (minus the ones that failed), so results do
not depend on which worker finished first; workers decode up to `prefetch_batches` batches ahead,
which bounds the memory that waiting payloads take.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import torch

from vidscore_core.media.isolation import IsolatedPool, WorkerBug, error_reason, is_media_error

log = logging.getLogger(__name__)

Payload = TypeVar("Payload")

__all__ = [
    "Item",
    "ItemResult",
    "EngineStats",
    "ProgressFn",
    "Sampler",
    "Scorer",
    "WorkerBug",
    "clip_time_limit",
    "error_reason",
    "halve_on_out_of_memory",
    "is_media_error",
    "run_scorer",
    "to_device",
]

# Grace on top of the sampler's own decode timeout before the worker is killed: the decode timeout
# fires first with its clear reason; this limit catches what it cannot (a hang holding the GIL, or
# outside the decoder), and leaves room for the resize (and DIS flow) after decoding.
KILL_GRACE_S = 30.0


@dataclass(frozen=True)
class Item:
    """One input row of the engine, a video or image file: what a scorer needs to know about it."""

    index: int
    video_id: str
    path: str
    text: str | None = None


@dataclass
class ItemResult:
    """The outcome for one clip: `values` from the scorer, or an `error` reason."""

    clip: Item
    values: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


class Sampler(Protocol[Payload]):
    """The half of a scorer that runs in worker processes: small, picklable, no model in it."""

    def prepare(self, clip: Item) -> Payload:
        """Decode and resize one clip; raise a media error (`DecodeError`, or an exception with a
        `reason`) to record an error for it. Any other exception is a bug and fails the run."""

    def collate(self, payloads: list[Payload]) -> Any:
        """Stack the payloads of one batch into tensors (CPU)."""


class Scorer(Protocol):
    """A model plugged into the engine: its `sampler` feeds it, `run` scores a batch on the device."""

    name: str
    sampler: Sampler

    def run(self, data: Any, clips: list[Item]) -> list[dict[str, Any]]:
        """Run the model on a collated batch already on the device; one dict of values per clip.

        A dict may carry an "error" key to record a per-clip failure found at model time.
        """


def to_device(data: Any, device: torch.device) -> Any:
    """Move nested tensors to the device; non-blocking when the source is pinned."""
    if isinstance(data, torch.Tensor):
        return data.to(device, non_blocking=data.is_pinned())
    if isinstance(data, dict):
        return {k: to_device(v, device) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(to_device(v, device) for v in data)
    return data


def _pin(data: Any) -> Any:
    if isinstance(data, torch.Tensor):
        return data.pin_memory()
    if isinstance(data, dict):
        return {k: _pin(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return type(data)(_pin(v) for v in data)
    return data


@dataclass
class EngineStats:
    clips: int = 0
    errors: int = 0
    batches: int = 0
    seconds: float = 0.0
    model_seconds: float = 0.0
    crashed: int = 0  # clips whose decode worker died
    hung: int = 0  # clips whose decode worker was killed for taking too long
    oom_splits: int = 0  # batches split in halves after a CUDA out-of-memory


ProgressFn = Callable[[int, int], None]
_AUTO = object()


def clip_time_limit(sampler: object) -> float | None:
    """The default limit per clip: the sampler's `decode_timeout_s` plus `KILL_GRACE_S` (None: none)."""
    decode_timeout = getattr(sampler, "decode_timeout_s", None)
    return None if decode_timeout is None else float(decode_timeout) + KILL_GRACE_S


def run_scorer(
    scorer: Scorer,
    clips: Sequence[Item],
    *,
    device: str = "cpu",
    batch_size: int = 8,
    num_workers: int = 2,
    progress: ProgressFn | None = None,
    stats: EngineStats | None = None,
    clip_timeout_s: float | None | object = _AUTO,
    prefetch_batches: int = 2,
) -> list[ItemResult]:
    """Score every clip; returns one `ItemResult` per clip, in input order.

    Clips are prepared in `num_workers` supervised worker processes (at least one: decoding never
    runs in this process, so no decoder can take it down). `clip_timeout_s` bounds the time one clip
    may hold a worker (default: `clip_time_limit(scorer.sampler)`; None: no limit). `progress(done,
    total)` is called with (0, total) before any work, then once per clip as its result is known.
    Raises `WorkerBug` (or the model's exception) for a bug; see the module doc.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    clips = list(clips)
    total = len(clips)
    stats = stats if stats is not None else EngineStats()
    torch_device = torch.device(device)
    limit = clip_time_limit(scorer.sampler) if clip_timeout_s is _AUTO else clip_timeout_s
    window = batch_size * (1 + max(0, prefetch_batches))  # clips submitted ahead of the current batch

    results: dict[int, ItemResult] = {}  # position in `clips` → result
    ready: dict[int, Any] = {}  # position in `clips` → payload, until its batch runs
    done = 0
    started = time.perf_counter()

    def finished(count: int = 1) -> None:
        nonlocal done
        for _ in range(count):
            done += 1
            if progress is not None:
                progress(done, total)

    if progress is not None:
        progress(0, total)
    if total:
        with (
            IsolatedPool(scorer.sampler.prepare, workers=num_workers, timeout_s=limit) as pool,
            torch.inference_mode(),
        ):
            submitted = 0
            for start in range(0, total, batch_size):
                members = range(start, min(start + batch_size, total))
                while any(i not in ready and i not in results for i in members):
                    while submitted < min(total, start + window):
                        pool.submit(submitted, clips[submitted])
                        submitted += 1
                    for outcome in pool.collect():
                        if outcome.error is not None:
                            results[outcome.key] = ItemResult(clips[outcome.key], error=outcome.error)
                            finished()
                        else:
                            ready[outcome.key] = outcome.value
                good = [i for i in members if i in ready]
                if good:
                    values = _run_batch(scorer, [clips[i] for i in good], [ready.pop(i) for i in good],
                                        torch_device, stats)  # fmt: skip
                    for i, result in zip(good, values, strict=True):
                        results[i] = result
                    finished(len(good))
            stats.crashed += pool.crashes
            stats.hung += pool.hangs
    stats.clips += total
    stats.errors += sum(1 for r in results.values() if r.error)
    stats.seconds += time.perf_counter() - started
    return [results[i] for i in range(total)]


OUT_OF_MEMORY = "CUDA out of memory even for this clip alone"
T = TypeVar("T")


def halve_on_out_of_memory(
    run: Callable[[int, int], list[T]],
    count: int,
    too_big: Callable[[int], T],
    device: torch.device,
    stats: EngineStats,
) -> list[T]:
    """`run(start, stop)` over items [0, count); a CUDA out-of-memory splits the range in halves and
    retries them, keeping what finished, and an item that does not fit alone gets `too_big(index)`
    (its OUT_OF_MEMORY error: retryable). `run` collates its own range, so a failed attempt's tensors
    are gone with the exception before the halves run."""

    def attempt(start: int, stop: int) -> list[T]:
        try:
            return run(start, stop)
        except torch.cuda.OutOfMemoryError:
            pass
        if device.type == "cuda":
            torch.cuda.empty_cache()
        stats.oom_splits += 1
        if stop - start == 1:
            return [too_big(start)]
        middle = (start + stop) // 2
        return [*attempt(start, middle), *attempt(middle, stop)]

    return attempt(0, count)


def _run_batch(
    scorer: Scorer,
    clips: list[Item],
    payloads: list[Any],
    device: torch.device,
    stats: EngineStats,
) -> list[ItemResult]:
    """The model on one batch; a CUDA out-of-memory splits it (`halve_on_out_of_memory`)."""

    def run(start: int, stop: int) -> list[ItemResult]:
        data = scorer.sampler.collate(payloads[start:stop])
        if device.type == "cuda":
            data = _pin(data)
        stats.batches += 1
        t0 = time.perf_counter()
        values = scorer.run(to_device(data, device), clips[start:stop])
        stats.model_seconds += time.perf_counter() - t0
        results = []
        for clip, vals in zip(clips[start:stop], values, strict=True):
            error = vals.pop("error", None) if isinstance(vals, dict) else None
            results.append(ItemResult(clip, values=vals, error=error))
        return results

    return halve_on_out_of_memory(run, len(clips), lambda i: ItemResult(clips[i], error=OUT_OF_MEMORY), device, stats)
