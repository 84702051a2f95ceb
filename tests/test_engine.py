"""The shared scoring engine: order, failures by kind, isolated worker processes, progress."""

from __future__ import annotations

import ctypes
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from vidscore_core.media import DecodeError, read_frames
from vidscore_core.media.synth import claim_avi_frame_count, pan_frames, texture_image, write_clip
from vidscore_core.scoring.engine import EngineStats, Item, WorkerBug, run_scorer


class FileSizeSampler:
    """A tiny real workload: read a file's bytes in the worker (unreadable files are media errors)."""

    def prepare(self, clip: Item) -> np.ndarray:
        try:
            with open(clip.path, "rb") as fh:
                data = np.frombuffer(fh.read(), dtype=np.uint8)
        except OSError as exc:
            raise DecodeError(f"cannot read: {exc.strerror}") from None
        if data.size == 0:
            raise DecodeError("empty file (0 bytes)")
        return np.array([data.size, os.getpid()], dtype=np.int64)

    def collate(self, payloads: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(payloads))


class SizeScorer:
    name = "size"

    def __init__(self, sampler=None) -> None:
        self.sampler = sampler or FileSizeSampler()
        self.batches: list[int] = []

    def run(self, data: torch.Tensor, clips: list[Item]) -> list[dict]:
        self.batches.append(len(clips))
        out = []
        for row, clip in zip(data, clips, strict=True):
            if clip.text == "reject":
                out.append({"error": "rejected by the model"})
            else:
                out.append({"size": int(row[0]), "pid": int(row[1])})
        return out


class MisbehavingSampler(FileSizeSampler):
    """Stands in for decoders that abort, segfault, hang, raise a verdict, or hit a bug in our code."""

    def prepare(self, clip: Item) -> np.ndarray:
        name = Path(clip.path).name
        if name.startswith("abort"):
            os.abort()  # what decord does on std::bad_alloc
        if name.startswith("segv"):
            ctypes.string_at(0)  # a NULL dereference in C
        if name.startswith("hang"):
            time.sleep(3600)
        if name.startswith("still"):
            raise NotVideo()
        if name.startswith("bug"):
            return {}["missing"]  # KeyError: our own mistake, not the file's
        return super().prepare(clip)


class NotVideo(ValueError):
    reason = "not a video: a still image has no motion to score"


@pytest.fixture
def clips(tmp_path):
    paths = []
    for i, size in enumerate([10, 0, 30, -1, 50, 60, 70]):
        path = tmp_path / f"f{i}.bin"
        if size >= 0:
            path.write_bytes(b"x" * size)
        paths.append(path)
    return [Item(i, f"v{i}", str(p), "reject" if i == 5 else None) for i, p in enumerate(paths)]


def named_clips(tmp_path: Path, names: list[str]) -> list[Item]:
    out = []
    for i, name in enumerate(names):
        (tmp_path / name).write_bytes(b"x" * (i + 1))
        out.append(Item(i, f"v{i}", str(tmp_path / name)))
    return out


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
    assert results[3].error == "cannot read: No such file or directory"
    assert results[5].error == "rejected by the model"
    assert seen[-1] == (7, 7) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert stats.clips == 7 and stats.errors == 3
    # Decoding always happens in other processes, even with num_workers=0 (isolation is not optional).
    assert {r.values["pid"] for r in results if r.values} - {os.getpid()}
    assert os.getpid() not in {r.values["pid"] for r in results if r.values}


def test_batches_follow_the_input_order_whoever_finishes_first(tmp_path):
    scorer = SizeScorer()
    clips = named_clips(tmp_path, [f"c{i}.bin" for i in range(10)])
    results = run_scorer(scorer, clips, batch_size=4, num_workers=3)
    assert scorer.batches == [4, 4, 2]
    assert [r.values["size"] for r in results] == list(range(1, 11))


def test_batch_of_only_failures_does_not_call_the_model(tmp_path):
    scorer = SizeScorer()
    bad = [Item(i, f"v{i}", str(tmp_path / f"missing{i}"), None) for i in range(3)]
    results = run_scorer(scorer, bad, batch_size=2, num_workers=0)
    assert all(r.error for r in results) and scorer.batches == []


def test_no_clips_no_workers():
    seen = []
    assert run_scorer(SizeScorer(), [], progress=lambda d, t: seen.append((d, t))) == []
    assert seen == [(0, 0)]


def test_batch_size_must_be_positive(clips):
    with pytest.raises(ValueError, match="batch_size"):
        run_scorer(SizeScorer(), clips, batch_size=0)


def test_a_decoder_that_aborts_segfaults_or_hangs_costs_one_clip(tmp_path):
    names = ["a.bin", "abort.bin", "b.bin", "segv.bin", "c.bin", "hang.bin", "d.bin", "still.bin", "e.bin"]
    clips = named_clips(tmp_path, names)
    stats = EngineStats()
    scorer = SizeScorer(MisbehavingSampler())
    results = run_scorer(scorer, clips, batch_size=2, num_workers=2, stats=stats, clip_timeout_s=2)
    by_name = {Path(r.clip.path).name: r for r in results}
    assert [r.clip.video_id for r in results] == [c.video_id for c in clips]
    # Every other clip is scored, before and after each failure (the dead workers were replaced).
    assert {n: r.values["size"] for n, r in by_name.items() if not r.error} == {
        "a.bin": 1, "b.bin": 3, "c.bin": 5, "d.bin": 7, "e.bin": 9,
    }  # fmt: skip
    assert by_name["abort.bin"].error == "decoder crashed: worker process killed by SIGABRT (Aborted)"
    assert by_name["segv.bin"].error.startswith("decoder crashed: worker process killed by SIGSEGV")
    assert by_name["hang.bin"].error == "decoder hung: no result after 2 s (worker process killed)"
    assert by_name["still.bin"].error == NotVideo.reason  # a verdict with a reason is a media error
    assert (stats.crashed, stats.hung, stats.errors) == (2, 1, 4)


def test_a_bug_while_preparing_fails_loudly_instead_of_becoming_error_rows(tmp_path):
    clips = named_clips(tmp_path, ["a.bin", "bug.bin", "b.bin"])
    with pytest.raises(WorkerBug) as caught:
        run_scorer(SizeScorer(MisbehavingSampler()), clips, batch_size=2, num_workers=2)
    text = str(caught.value)
    assert text.startswith("KeyError: 'missing'") and "worker traceback" in text
    assert 'return {}["missing"]' in caught.value.worker_traceback


def test_a_bug_in_the_model_is_raised(clips):
    class Broken(SizeScorer):
        def run(self, data, clips):
            raise RuntimeError("shape mismatch in our code")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        run_scorer(Broken(), clips, batch_size=3, num_workers=1)


def test_progress_moves_per_clip_from_the_start(tmp_path):
    clips = named_clips(tmp_path, [f"c{i}.bin" for i in range(7)] + ["missing-later"])
    os.remove(clips[-1].path)
    seen: list[tuple[int, int]] = []

    class Watching(SizeScorer):
        def run(self, data, batch):
            self.seen_at_first_run = getattr(self, "seen_at_first_run", list(seen))
            return super().run(data, batch)

    scorer = Watching()
    run_scorer(scorer, clips, batch_size=4, num_workers=2, progress=lambda d, t: seen.append((d, t)))
    assert scorer.seen_at_first_run[0] == (0, 8)  # the bar starts before the first batch is scored
    assert [d for d, _ in seen] == list(range(9))  # one step per clip, errors included
    assert {t for _, t in seen} == {8}


def test_progress_counts_clips_as_they_fail_not_at_batch_end(tmp_path):
    # Clips that fail are reported as they fail, before the batch they belong to is scored.
    clips = named_clips(tmp_path, ["a.bin", "abort.bin", "b.bin"])
    seen: list[tuple[int, int]] = []

    class Watching(SizeScorer):
        def run(self, data, batch):
            self.seen_at_run = list(seen)
            return super().run(data, batch)

    scorer = Watching(MisbehavingSampler())
    run_scorer(scorer, clips, batch_size=3, num_workers=1, progress=lambda d, t: seen.append((d, t)))
    assert scorer.seen_at_run == [(0, 3), (1, 3)]
    assert seen[-1] == (3, 3)


class FrameSampler:
    """The real decode path in the workers: read_frames with the chosen backends."""

    def __init__(self, backends=("sparse", "decord", "pyav")) -> None:
        self.backends = backends

    def prepare(self, clip: Item) -> np.ndarray:
        decoded = read_frames(clip.path, points=(0.5,), backends=self.backends)
        return np.array([decoded.num_frames], dtype=np.int64)

    def collate(self, payloads):
        return torch.from_numpy(np.stack(payloads))


class CountScorer:
    name = "count"

    def __init__(self, sampler) -> None:
        self.sampler = sampler

    def run(self, data, clips):
        return [{"num_frames": int(v[0])} for v in data]


@pytest.fixture(scope="module")
def lying_avi(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("avi")
    honest = write_clip(folder / "honest.avi", pan_frames(texture_image(200, 300, 1), 160, 96, 20, 2, 0), codec="mpeg4")
    return honest, claim_avi_frame_count(honest, folder / "claims_3e9_frames.avi", 3_000_000_000)


def test_an_avi_claiming_3e9_frames_is_an_error_row_and_the_batch_goes_on(lying_avi, fixtures):
    """The issue's file: decord aborted the whole process on it. Now the sparse decoder's verdict
    ("truncated") is final and no other decoder is tried; the good clips around it are scored."""
    honest, lying = lying_avi
    paths = [fixtures / "media/pan_ihc_diag_25frames.mkv", lying, honest]
    clips = [Item(i, f"v{i}", str(p)) for i, p in enumerate(paths)]
    results = run_scorer(CountScorer(FrameSampler()), clips, batch_size=3, num_workers=1)
    assert [r.values.get("num_frames") for r in results] == [25, None, 20]
    assert results[1].error.startswith("truncated: container declares 3000000000 frames, only 20 present")


def test_a_real_decoder_abort_becomes_the_clips_error(lying_avi):
    """decord alone on the lying AVI really aborts (std::bad_alloc): the worker dies, the row says so,
    and a fresh worker decodes the next clip."""
    honest, lying = lying_avi
    clips = [Item(0, "a", str(honest)), Item(1, "b", str(lying)), Item(2, "c", str(honest))]
    stats = EngineStats()
    results = run_scorer(CountScorer(FrameSampler(("decord",))), clips, batch_size=3, num_workers=1, stats=stats)
    assert [r.values.get("num_frames") for r in results] == [20, None, 20], [r.error for r in results]
    assert results[1].error == "decoder crashed: worker process killed by SIGABRT (Aborted)"
    assert stats.crashed == 1


def test_unimatch_on_cpu_runs_one_clip_per_forward(tmp_path, monkeypatch):
    """UniMatch's CPU memory grows with the pairs in one forward (~330 MB each): the job caps the
    batch on CPU whatever --bs says; other backends and devices keep the requested size."""
    from vidscore_core.scoring.options import JobOptions
    from vidscore_core.scoring.score_jobs import CPU_UNIMATCH_CLIPS_PER_BATCH, FlowJob
    from vidscore_core.settings import Settings

    monkeypatch.setenv("VIDSCORE_HOME", str(tmp_path))
    settings = Settings.from_env()
    assert FlowJob(settings, JobOptions(device="cpu", batch_size=16)).max_clips() == CPU_UNIMATCH_CLIPS_PER_BATCH == 1
    assert FlowJob(settings, JobOptions(device="cpu", batch_size=16), "dis").max_clips() is None


def test_results_follow_positions_even_when_clip_indices_repeat(tmp_path):
    clips = named_clips(tmp_path, ["a.bin", "b.bin", "c.bin"])
    same = [Item(0, c.video_id, c.path) for c in clips]  # callers may reuse an index (benchmarks do)
    results = run_scorer(SizeScorer(), same, batch_size=2, num_workers=2)
    assert [r.values["size"] for r in results] == [1, 2, 3]


def test_precision_is_chosen_once_and_leaves_no_global_flags(vidscore_env, fixtures):
    """UniMatch on CUDA: `auto` is float32, an explicit fp16/bf16/tf32 is honoured (never swapped for
    another); scoring leaves torch's process-wide TF32 flags as it found them."""
    import torch

    from vidscore_core.ingest.meta import read_meta
    from vidscore_core.scoring.options import JobOptions
    from vidscore_core.scoring.per_clip import score_videos
    from vidscore_core.scoring.score_jobs import _autocast, flow_precision

    assert flow_precision("cuda", "auto") == "fp32" and flow_precision("cuda:1", "fp16") == "fp16"
    assert flow_precision("cuda", "tf32") == "tf32" and flow_precision("cpu", "fp16") == "fp32"
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    with _autocast("cuda", "tf32"):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before
    settings, _ = vidscore_env
    meta = read_meta(fixtures / "media/meta.csv").iloc[:1]
    options = JobOptions(device="cpu", num_workers=1, precision="tf32", score_options={"flow": {"backend": "dis"}})
    score_videos(["flow_scores"], meta.assign(error=None), "tf32", settings, options)
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == before


def test_cuda_out_of_memory_splits_the_batch_and_keeps_what_finished(clips):
    """A batch that does not fit is split in halves and retried; a clip that does not fit alone gets
    the out-of-memory as its error (the backfill schedule retries it); nothing is lost or doubled."""
    from vidscore_core.scoring.engine import OUT_OF_MEMORY

    class Tight(SizeScorer):
        def run(self, data, batch):
            if len(batch) > 1 or batch[0].video_id == "v6":  # room for one clip, and v6 never fits
                self.batches.append(-len(batch))
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return super().run(data, batch)

    scorer, stats = Tight(), EngineStats()
    results = run_scorer(scorer, clips, batch_size=4, num_workers=1, stats=stats)
    assert [r.values.get("size") for r in results] == [10, None, 30, None, 50, None, None]
    assert results[6].error == OUT_OF_MEMORY and results[5].error == "rejected by the model"
    assert sorted(b for b in scorer.batches if b > 0) == [1, 1, 1, 1] and stats.oom_splits > 0
