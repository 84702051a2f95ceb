"""The shared scoring engine: order, per-clip errors, worker processes, progress."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from vidscore_core.engine import Clip, EngineStats, run_scorer


class FileSizeSampler:
    """A tiny real workload: read a file's bytes in the worker (missing files raise)."""

    def prepare(self, clip: Clip) -> np.ndarray:
        with open(clip.path, "rb") as fh:
            data = np.frombuffer(fh.read(), dtype=np.uint8)
        if data.size == 0:
            raise ValueError("empty file (0 bytes)")
        return np.array([data.size, os.getpid()], dtype=np.int64)

    def collate(self, payloads: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(payloads))


class SizeScorer:
    name = "size"

    def __init__(self) -> None:
        self.sampler = FileSizeSampler()
        self.batches: list[int] = []

    def run(self, data: torch.Tensor, clips: list[Clip]) -> list[dict]:
        self.batches.append(len(clips))
        out = []
        for row, clip in zip(data, clips, strict=True):
            if clip.text == "reject":
                out.append({"error": "rejected by the model"})
            else:
                out.append({"size": int(row[0]), "pid": int(row[1])})
        return out


@pytest.fixture
def clips(tmp_path):
    paths = []
    for i, size in enumerate([10, 0, 30, -1, 50, 60, 70]):
        path = tmp_path / f"f{i}.bin"
        if size >= 0:
            path.write_bytes(b"x" * size)
        paths.append(path)
    return [Clip(i, f"v{i}", str(p), "reject" if i == 5 else None) for i, p in enumerate(paths)]


@pytest.mark.parametrize("workers", [0, 2])
def test_one_result_per_clip_in_order_with_errors(clips, workers):
    scorer = SizeScorer()
    seen: list[tuple[int, int]] = []
    stats = EngineStats()
    results = run_scorer(scorer, clips, batch_size=3, num_workers=workers, progress=lambda d, t: seen.append((d, t)),
                         stats=stats)  # fmt: skip
    assert [r.clip.video_id for r in results] == [c.video_id for c in clips]
    assert [r.values.get("size") for r in results] == [10, None, 30, None, 50, None, 70]
    assert results[1].error == "empty file (0 bytes)"
    assert "No such file" in results[3].error
    assert results[5].error == "rejected by the model"
    assert seen[-1] == (7, 7) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert stats.clips == 7 and stats.errors == 3
    if workers:  # decoding really happened in other processes
        assert {r.values["pid"] for r in results if r.values} - {os.getpid()}


def test_batch_of_only_failures_does_not_call_the_model(tmp_path):
    scorer = SizeScorer()
    bad = [Clip(i, f"v{i}", str(tmp_path / f"missing{i}"), None) for i in range(3)]
    results = run_scorer(scorer, bad, batch_size=2, num_workers=0)
    assert all(r.error for r in results) and scorer.batches == []


def test_batch_size_must_be_positive(clips):
    with pytest.raises(ValueError, match="batch_size"):
        run_scorer(SizeScorer(), clips, batch_size=0)
