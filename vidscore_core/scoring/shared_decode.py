"""One decode per clip for every per-clip score of a run (docs/ARCHITECTURE.md, "Data flow").

Each per-clip score is a `ScorePart`: a scorer whose sampler says which frames it reads
(`request`) and turns them into its payload (`from_frames`). `run_parts` reads the union of the
parts' frames in one pass over each file (`media.read_frame_sets`), in the engine's supervised
workers, then runs each part's model on its share of the batch under its own precision region.
One part alone is the same path with a single request, so a score run alone or together with
others gives the same values.

Failures stay per score: an image has CLIP frames but no motion (the flow part gets its reason, the
CLIP part its embeddings), a frame only one part needs can fail that part alone, and a CUDA
out-of-memory in one part's model splits that part's batch only (what the other parts computed is
kept). A clip that no part can use gets one error, recorded for every part; so does a clip whose
decoder crashed or hung in the shared pass (the worker is gone before any part is known).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from vidscore_core.media.decode import DecodedFrames, read_frame_sets
from vidscore_core.media.errors import DecodeError
from vidscore_core.media.frames import FrameRequest
from vidscore_core.scoring.engine import (
    OUT_OF_MEMORY,
    EngineStats,
    Item,
    ItemResult,
    error_reason,
    halve_on_out_of_memory,
    is_media_error,
    run_scorer,
    to_device,
)


class FrameSampler(Protocol):
    """The worker half of a part: which frames it reads, and its payload from them."""

    @property
    def request(self) -> FrameRequest: ...

    def from_frames(self, decoded: DecodedFrames) -> Any: ...

    def collate(self, payloads: list[Any]) -> Any: ...


class PartScorer(Protocol):
    sampler: FrameSampler

    def run(self, data: Any, clips: list[Item]) -> list[dict[str, Any]]: ...


@dataclass
class ScorePart:
    """One score of a shared pass: its table name, its scorer, the precision region its model runs
    in, and the most clips one forward of it may take (None: the run's batch size)."""

    name: str
    scorer: PartScorer
    region: Callable[[], AbstractContextManager[None]] = contextlib.nullcontext
    max_clips: int | None = None


@dataclass(frozen=True)
class PartError:
    """A part's payload for a clip it cannot score (the clip may still serve the other parts)."""

    reason: str


@dataclass(frozen=True)
class _Payloads:
    """A part's payloads kept beside its collated batch, for an out-of-memory split; held in an
    object the engine's device transfer and pinning pass by (they walk tensors, dicts and lists)."""

    items: tuple[Any, ...]


@dataclass(frozen=True)
class SharedDecodeSampler:
    """Worker side: one pass over the file for every part's frames, then each part's payload."""

    parts: tuple[tuple[str, FrameSampler], ...]
    frame_timeout_s: float | None = 60.0  # one decoding pass

    @property
    def decode_timeout_s(self) -> float | None:
        """The longest a clip's decoding may take (the engine adds its grace before killing a worker):
        after a failed joint pass, each part is decoded alone (`read_frame_sets`)."""
        passes = 1 + (len(self.parts) if len(self.parts) > 1 else 0)
        return None if self.frame_timeout_s is None else self.frame_timeout_s * passes

    def prepare(self, clip: Item) -> dict[str, Any]:
        decoded = read_frame_sets(clip.path, [s.request for _, s in self.parts], timeout_s=self.frame_timeout_s)
        payload: dict[str, Any] = {}
        for (name, sampler), got in zip(self.parts, decoded, strict=True):
            if isinstance(got, DecodeError):
                payload[name] = PartError(got.reason)
                continue
            try:
                payload[name] = sampler.from_frames(got)
            except Exception as exc:
                if not is_media_error(exc):
                    raise  # a bug: the engine fails the run with this traceback
                payload[name] = PartError(error_reason(exc))
        reasons = {p.reason for p in payload.values() if isinstance(p, PartError)}
        if len(reasons) == 1 and all(isinstance(p, PartError) for p in payload.values()):
            raise DecodeError(reasons.pop())  # nothing to score: the clip's one error
        return payload

    def collate(self, payloads: list[dict[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, sampler in self.parts:
            members = [i for i, p in enumerate(payloads) if not isinstance(p[name], PartError)]
            mine = [payloads[i][name] for i in members]
            out[name] = {
                "members": members,
                "errors": {i: p[name].reason for i, p in enumerate(payloads) if isinstance(p[name], PartError)},
                "data": sampler.collate(mine) if members else None,
                "payloads": _Payloads(tuple(mine)),
            }
        return out


class SharedDecodeScorer:
    """Main-process side: each part's model on the clips it can score; one values dict per clip,
    keyed by part name (a part's entry carries "error" for a clip it could not score)."""

    name = "shared_decode"

    def __init__(
        self, parts: Sequence[ScorePart], frame_timeout_s: float | None = 60.0, device: str = "cpu",
        stats: EngineStats | None = None,
    ) -> None:  # fmt: skip
        names = [p.name for p in parts]
        if not parts or len(set(names)) != len(names):
            raise ValueError(f"parts need distinct names, got {names}")
        self.parts = list(parts)
        self.device = torch.device(device)
        self.stats = stats if stats is not None else EngineStats()
        self.sampler = SharedDecodeSampler(tuple((p.name, p.scorer.sampler) for p in parts), frame_timeout_s)

    def run(self, data: dict[str, Any], clips: list[Item]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [{} for _ in clips]
        for part in self.parts:
            block = data[part.name]
            for i, reason in block["errors"].items():
                out[i][part.name] = {"error": reason}
            members = block["members"]
            if not members:
                continue
            values = self._run_part(part, block["data"], [clips[i] for i in members], block["payloads"].items)
            for i, vals in zip(members, values, strict=True):
                out[i][part.name] = vals
        return out

    def _run_part(self, part: ScorePart, data: Any, clips: list[Item], payloads: tuple[Any, ...]) -> list[dict[str, Any]]:
        """The part's model on its clips; a CUDA out-of-memory splits this part's clips only
        (`engine.halve_on_out_of_memory`), the other parts keep what they computed."""

        def run(start: int, stop: int) -> list[dict[str, Any]]:
            whole = (start, stop) == (0, len(clips))  # the engine's collated batch, else a half of it
            batch = data if whole else to_device(part.scorer.sampler.collate(list(payloads[start:stop])), self.device)
            with part.region():
                return part.scorer.run(batch, clips[start:stop])

        return halve_on_out_of_memory(run, len(clips), lambda _: {"error": OUT_OF_MEMORY}, self.device, self.stats)


def run_parts(
    parts: Sequence[ScorePart],
    clips: Sequence[Item],
    *,
    device: str,
    batch_size: int,
    num_workers: int,
    frame_timeout_s: float | None = 60.0,
    progress: Callable[[int, int], None] | None = None,
    stats: EngineStats | None = None,
) -> dict[str, list[ItemResult]]:
    """Every part's results for `clips` (one per clip, input order) from one decode per clip.

    A batch holds at most the smallest `max_clips` of the parts, so progress and memory follow the
    heaviest model (UniMatch on CPU takes one clip at a time).
    """
    stats = stats if stats is not None else EngineStats()
    scorer = SharedDecodeScorer(parts, frame_timeout_s, device, stats)
    size = min([batch_size, *(p.max_clips for p in parts if p.max_clips)])
    results = run_scorer(scorer, clips, device=device, batch_size=size, num_workers=num_workers,
                         progress=progress, stats=stats)  # fmt: skip
    by_part: dict[str, list[ItemResult]] = {p.name: [] for p in parts}
    for result in results:
        for part in parts:
            if result.error is not None:
                by_part[part.name].append(ItemResult(result.clip, error=result.error))
                continue
            values = dict(result.values[part.name])
            error = values.pop("error", None)
            by_part[part.name].append(ItemResult(result.clip, values=values, error=error))
    return by_part
