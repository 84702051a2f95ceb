"""One decode per clip serves every per-clip score of a run (docs/ARCHITECTURE.md, "Data flow"), with the same
frames and values each score gets alone, and failures kept per score."""

from __future__ import annotations

import importlib
import os
from collections import Counter
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest
import torch

from vidscore_core.media import DecodeError, FrameRequest, read_frame_sets, read_frames
from vidscore_core.media.synth import make_demo_corpus
from vidscore_core.scoring.clip_frames import AESTHETIC_POINTS
from vidscore_core.scoring.engine import Item
from vidscore_core.scoring.shared_decode import ScorePart, run_parts
from vidscore_core.tables.store import TableStore

decode_module = importlib.import_module("vidscore_core.media.decode")
sparse_module = importlib.import_module("vidscore_core.media.sparse")
CLIP_FRAMES = FrameRequest(points=AESTHETIC_POINTS)
FLOW_FRAMES = FrameRequest(indices=(0, 10, 20, 30))
MEDIA = ["pan_hubble_right_5px.mp4", "pan_ihc_diag_25frames.mkv", "pan_retina_portrait_down_3px.mp4",
         "image_colorwheel.jpg"]  # fmt: skip


@pytest.mark.parametrize("name", MEDIA)
def test_one_pass_gives_each_request_the_frames_it_gets_alone(fixtures: Path, name: str) -> None:
    path = fixtures / "media" / name
    both = read_frame_sets(path, [CLIP_FRAMES, FLOW_FRAMES])
    for request, got in zip((CLIP_FRAMES, FLOW_FRAMES), both, strict=True):
        alone = read_frames(path, points=request.points, indices=request.indices)
        assert (got.indices, got.num_frames, got.backend, got.is_image) == (
            alone.indices, alone.num_frames, alone.backend, alone.is_image)  # fmt: skip
        assert all(np.array_equal(a, b) for a, b in zip(got.frames, alone.frames, strict=True))


def _counting_decoder(monkeypatch, log: Path, fail_at: int | None = None):
    """Record each pass over a file (one line, from any forked worker); with `fail_at`, a pass whose
    frames include that index fails like a frame that cannot be decoded."""
    real = decode_module._read_frames

    def counting(path, want, backends):
        with open(log, "a") as f:
            f.write(f"{os.path.basename(path)}\n")
        got = real(path, want, backends)
        if fail_at is not None and fail_at in got.indices:
            raise DecodeError(f"cannot decode frame {fail_at}")
        return got

    monkeypatch.setattr(decode_module, "_read_frames", counting)


def test_a_frame_only_one_score_needs_fails_that_score_alone(fixtures: Path, tmp_path: Path, monkeypatch) -> None:
    log = tmp_path / "passes.log"
    _counting_decoder(monkeypatch, log, fail_at=30)  # a flow frame; CLIP's are 4, 24, 43
    clip_frames, flow_frames = read_frame_sets(fixtures / "media/pan_hubble_right_5px.mp4", [CLIP_FRAMES, FLOW_FRAMES])
    assert clip_frames.indices == [4, 24, 43]
    assert isinstance(flow_frames, DecodeError) and flow_frames.reason == "cannot decode frame 30"
    assert len(log.read_text().splitlines()) == 3  # the joint pass, then each request alone


def _fail_on(indices: list[int], bad: int) -> list[int]:
    if bad in indices:
        raise DecodeError(f"cannot decode frame {bad}")
    return indices


def test_a_request_never_gets_a_fallback_decoder_it_would_not_need_alone(fixtures: Path, monkeypatch) -> None:
    """The sparse decoder fails on a flow frame and sequential PyAV decodes the union: the CLIP frames
    are decoded again alone, by the sparse decoder, as `read_frames` gives them."""
    real = sparse_module.decode_sparse

    def failing_on_30(path, header, want, verify_last):
        return real(path, header, lambda n: _fail_on(want(n), 30), verify_last)

    monkeypatch.setattr(sparse_module, "decode_sparse", failing_on_30)
    path = fixtures / "media/pan_hubble_right_5px.mp4"
    backends = ("sparse", "pyav")  # decord stays out of this process (it is not fork-safe afterwards)
    clip_frames, flow_frames = read_frame_sets(path, [CLIP_FRAMES, FLOW_FRAMES], backends=backends)
    assert (clip_frames.backend, flow_frames.backend) == ("sparse", "pyav")
    for request, got in ((CLIP_FRAMES, clip_frames), (FLOW_FRAMES, flow_frames)):
        alone = read_frames(path, points=request.points, indices=request.indices, backends=backends)
        assert got.backend == alone.backend and got.indices == alone.indices
        assert all(np.array_equal(a, b) for a, b in zip(got.frames, alone.frames, strict=True))


def test_a_final_verdict_is_not_decoded_again(fixtures: Path, tmp_path: Path, monkeypatch) -> None:
    log = tmp_path / "passes.log"
    _counting_decoder(monkeypatch, log)
    got = read_frame_sets(fixtures / "media/bad_truncated.mp4", [CLIP_FRAMES, FLOW_FRAMES])
    assert all(isinstance(g, DecodeError) and g.reason.startswith("truncated") for g in got)
    assert len(log.read_text().splitlines()) == 1


class _Recorder:
    """A part's scorer: records the batch sizes its model sees; values = the frame indices."""

    def __init__(self, request: FrameRequest) -> None:
        self.sampler = _IndexSampler(request)
        self.batches: list[int] = []

    def run(self, data, clips):
        self.batches.append(len(clips))
        return [{"indices": indices} for indices in data]


class _IndexSampler:
    def __init__(self, request: FrameRequest) -> None:
        self.request = request

    def from_frames(self, decoded):
        if decoded.is_image and self.request.indices is not None:
            raise DecodeError("not a video")  # a media error of this part only
        return decoded.indices

    def collate(self, payloads):
        return payloads


def test_parts_share_one_pass_and_batches_follow_the_smallest_cap(fixtures: Path, tmp_path: Path, monkeypatch) -> None:
    log = tmp_path / "passes.log"
    _counting_decoder(monkeypatch, log)
    media = fixtures / "media"
    names = ["pan_hubble_right_5px.mp4", "image_colorwheel.jpg", "pan_ihc_diag_25frames.mkv", "missing.mp4"]
    clips = [Item(i, f"v{i}", str(media / n)) for i, n in enumerate(names)]
    clip_part, flow_part = _Recorder(CLIP_FRAMES), _Recorder(FLOW_FRAMES)
    results = run_parts([ScorePart("clip", clip_part), ScorePart("flow", flow_part, max_clips=1)], clips,
                        device="cpu", batch_size=8, num_workers=2)  # fmt: skip
    assert [r.values.get("indices") for r in results["clip"]] == [[4, 24, 43], [0], [2, 12, 22], None]
    assert [r.values.get("indices") for r in results["flow"]] == [[0, 10, 20, 30], None, [0, 10, 20, 24], None]
    assert results["flow"][1].error == "not a video" and results["clip"][1].error is None
    assert results["clip"][3].error == results["flow"][3].error == "file not found"
    assert sorted(log.read_text().splitlines()) == sorted(names)  # each file read once for both parts
    assert max(clip_part.batches) == max(flow_part.batches) == 1  # the flow part's cap holds for the batch


def test_scoring_together_gives_the_rows_each_table_gets_alone(vidscore_env, tmp_path: Path, monkeypatch) -> None:
    """`score_videos` with both per-clip tables: one decode per video, the same rows as two runs."""
    from vidscore_core.ingest.meta import read_meta
    from vidscore_core.scoring.options import JobOptions
    from vidscore_core.scoring.per_clip import score_videos

    settings, _ = vidscore_env
    meta = read_meta(make_demo_corpus(tmp_path / "corpus"))
    videos = meta.assign(error=None)[["video_id", "path", "text", "error"]]
    options = JobOptions(device="cpu", batch_size=4, num_workers=2, score_options={"flow": {"backend": "dis"}})
    tables = ["clip_embeddings", "flow_scores"]
    alone = {t: score_videos([t], videos, "b", settings, options)[0][t] for t in tables}
    log = tmp_path / "passes.log"
    _counting_decoder(monkeypatch, log)
    together, summary = score_videos(tables, videos, "b", settings, options)
    passes = Counter(log.read_text().splitlines())
    videos_ok = [os.path.basename(p) for p in meta.loc[meta["kind"] == "video", "path"]]
    assert videos_ok and all(passes[name] == 1 for name in videos_ok), passes  # one decode per clip
    assert summary.asset == "clip_embeddings+flow_scores" and summary.clips == len(videos)
    for table in tables:
        a, b = alone[table], together[table]
        assert list(a["video_id"]) == list(b["video_id"]) and list(a["error"]) == list(b["error"]), table
        values = "embedding" if table == "clip_embeddings" else "flow"
        for x, y in zip(a[values], b[values], strict=True):
            missing = x is None or (np.isscalar(x) and np.isnan(x))
            assert (missing and (y is None or np.isnan(y))) if missing else np.allclose(x, y, rtol=1e-5, atol=1e-6)
    flow = together["flow_scores"].set_index("video_id")
    images = meta.loc[meta["kind"] == "image", "video_id"]
    assert flow.loc[images, "error"].str.startswith("not a video").all()


def test_the_step_computes_what_the_run_selects(vidscore_env, tmp_path: Path, monkeypatch) -> None:
    """`clip_embeddings` and `flow_scores` are one step; a run selecting one of them writes only it."""
    from vidscore_dagster.defs.resources import default_resources
    from vidscore_dagster.runner import ingest_meta_file, materialize_batches

    settings, store = vidscore_env
    monkeypatch.setenv("VIDSCORE_FLOW_BACKEND", "dis")
    meta = make_demo_corpus(tmp_path / "corpus")
    instance = dg.DagsterInstance.ephemeral()
    (key,), _ = ingest_meta_file(instance, meta, 5000)
    assert materialize_batches(instance, [key], ["videos", "flow_scores"], resources=default_resources())[key]
    assert store.has("flow_scores", key) and not store.has("clip_embeddings", key)
    assert materialize_batches(instance, [key], ["clip_embeddings", "flow_scores"], resources=default_resources())[key]
    run = instance.get_runs(limit=1)[0]
    events = instance.all_logs(run.run_id)
    steps = {e.step_key for e in events if e.step_key}
    assert "per_clip_scores" in steps and "clip_embeddings" not in steps
    checked = {e.dagster_event.event_specific_data.asset_key.to_user_string() for e in events
               if e.dagster_event and e.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"}  # fmt: skip
    assert checked == {"clip_embeddings", "flow_scores"}  # their checks run with the step
    emb = TableStore.from_settings(settings).read("clip_embeddings", [key])
    assert pd.Series(emb["video_id"]).nunique() == len(pd.read_csv(meta))


class _Tight(_Recorder):
    """A part whose model has room for one clip at a time, and never for `too_big`."""

    def __init__(self, request: FrameRequest, too_big: str) -> None:
        super().__init__(request)
        self.too_big = too_big

    def run(self, data, clips):
        if len(clips) > 1 or clips[0].video_id == self.too_big:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return super().run(data, clips)


def test_an_out_of_memory_in_one_part_splits_that_part_only(fixtures: Path) -> None:
    from vidscore_core.scoring.engine import OUT_OF_MEMORY, EngineStats

    media = fixtures / "media"
    names = ["pan_hubble_right_5px.mp4", "pan_ihc_diag_25frames.mkv", "pan_retina_portrait_down_3px.mp4"]
    clips = [Item(i, f"v{i}", str(media / n)) for i, n in enumerate(names)]
    clip_part, flow_part = _Recorder(CLIP_FRAMES), _Tight(FLOW_FRAMES, too_big="v1")
    stats = EngineStats()
    results = run_parts([ScorePart("clip", clip_part), ScorePart("flow", flow_part)], clips, device="cpu",
                        batch_size=4, num_workers=1, stats=stats)  # fmt: skip
    assert [r.error for r in results["clip"]] == [None, None, None] and clip_part.batches == [3]
    assert [r.error for r in results["flow"]] == [None, OUT_OF_MEMORY, None]
    assert results["flow"][2].values["indices"] == [0, 10, 20, 30] and stats.oom_splits > 0


@pytest.mark.parametrize("name", MEDIA[:3])
def test_a_scaled_request_gets_every_frame_small_and_the_others_their_frames(fixtures: Path, name: str) -> None:
    import cv2

    path = fixtures / "media" / name
    scaled_request = FrameRequest(size=(48, 27))
    clip, scaled = read_frame_sets(path, [CLIP_FRAMES, scaled_request])
    alone = read_frames(path, points=CLIP_FRAMES.points)
    assert clip.indices == alone.indices and all(np.array_equal(a, b) for a, b in zip(clip.frames, alone.frames, strict=True))
    assert scaled.num_frames == alone.num_frames and scaled.indices == list(range(alone.num_frames))
    assert all(f.shape == (27, 48, 3) and f.dtype == np.uint8 for f in scaled.frames)
    # The small frames are the clip's frames, scaled: close to an area-average of the full frames.
    for index, full in zip(alone.indices, alone.frames, strict=True):
        expected = cv2.resize(full, (48, 27), interpolation=cv2.INTER_AREA).astype(float)
        assert np.abs(scaled.frames[index].astype(float) - expected).mean() < 6


def test_a_scaled_request_reports_a_cut_file_and_gives_an_image_whole(fixtures: Path) -> None:
    request = FrameRequest(size=(48, 27))
    (cut,) = read_frame_sets(fixtures / "media/bad_truncated.mp4", [request])
    assert isinstance(cut, DecodeError) and cut.reason.startswith("truncated")
    (image,) = read_frame_sets(fixtures / "media/image_colorwheel.jpg", [request])
    assert image.is_image and image.frames[0].shape == (370, 371, 3)
    with pytest.raises(ValueError):
        FrameRequest(indices=(0,), size=(48, 27))
