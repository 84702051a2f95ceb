"""How a scoring job runs: light, no torch (Dagster imports it)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from vidscore_core import scores
from vidscore_core.scoring import lineage

if TYPE_CHECKING:
    from vidscore_core.scoring.engine import ProgressFn

PRECISIONS = ("auto", "fp32", "tf32", "bf16", "fp16")


@dataclass
class JobOptions:
    device: str = "auto"
    batch_size: int = 16
    num_workers: int = 2
    decode_timeout_s: float = 60.0
    precision: str = "auto"
    run_id: str = field(default_factory=lineage.new_run_id)
    progress: ProgressFn | None = None
    # Each score's declared options (scores.ScoreOption), completed from the environment and defaults.
    score_options: scores.ScoreOptions = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}: expected one of {', '.join(PRECISIONS)}")
        self.score_options = scores.resolve_options(self.score_options)

    def option(self, score: str, name: str) -> str:
        """The value of a score's declared option (flow: `backend`)."""
        return self.score_options[score][name]


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
