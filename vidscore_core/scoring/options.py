"""How a scoring job runs, and which code each score depends on: light, no torch (Dagster imports it)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vidscore_core.scoring import lineage

if TYPE_CHECKING:
    from vidscore_core.scoring.engine import ProgressFn

PRECISIONS = ("auto", "fp32", "tf32", "bf16", "fp16")

# The modules whose source determines each score: a change to any of them makes old rows stale.
# The media modules that decide which pixels a score sees (frame selection, integrity verdicts, decoders).
DECODE_CODE = tuple(
    f"vidscore_core.media.{name}"
    for name in ("decode", "frames", "images", "container", "integrity", "backends", "sparse")
)
CLIP_CODE = ("vidscore_core.models.clip", "vidscore_core.models.clip_preprocess", *DECODE_CODE)
AESTHETIC_CODE = (*CLIP_CODE, "vidscore_core.models.aesthetic", "vidscore_core.scoring.derived")
MATCHING_CODE = (*CLIP_CODE, "vidscore_core.scoring.derived")
FLOW_CODE = ("vidscore_core.models.flow", "vidscore_core.models.unimatch", *DECODE_CODE)


@dataclass
class JobOptions:
    device: str = "auto"
    batch_size: int = 16
    num_workers: int = 2
    decode_timeout_s: float = 60.0
    precision: str = "auto"
    run_id: str = field(default_factory=lineage.new_run_id)
    progress: ProgressFn | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}")


def progress_lines(label: str, emit: Callable[[str], None]) -> Callable[[int, int], None]:
    """A (done, total) progress callback that emits "label: done/total clips" about ten times per
    run, and always at the end: enough to follow a batch without flooding the log."""
    last = {"step": -1}

    def report(done: int, total: int) -> None:
        step = (10 * done) // max(total, 1)
        if step != last["step"] or done == total:
            last["step"] = step
            emit(f"{label}: {done}/{total} clips")

    return report


def combined_sha(shas: dict[str, str]) -> str:
    """One sha256 for a score made from several files (their hashes are also kept in `params`)."""
    if len(shas) == 1:
        return next(iter(shas.values()))
    joined = ",".join(f"{k}={v}" for k, v in sorted(shas.items()))
    return hashlib.sha256(joined.encode()).hexdigest()
