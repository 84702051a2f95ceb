"""Flow score: parity with the reference scores, frame preparation, score math, and the DIS backend
measured against analytically known camera pans."""

from __future__ import annotations

import csv
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
import torch
from skimage import data

from vidscore_core.models.flow import (
    FLOW_FRAME_INDICES,
    FLOW_SIZE,
    DISFlow,
    flow_frame_indices,
    flow_score,
    prepare_flow_frames,
)

PARITY_RTOL = 1e-3  # fixtures README, section 7


def decode_frames(path: Path, wanted: list[int]) -> np.ndarray:
    """Sequential PyAV decode keeping the wanted indices (each clamped to the decoded count)."""
    frames = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
    last = len(frames) - 1
    return np.stack([frames[min(i, last)] for i in wanted])


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def unimatch_rows(fixtures: Path, tmp_path_factory) -> pd.DataFrame:
    """Every fixture clip through the path the asset and `vidscore score flow` take, once:
    score_videos → FlowJob's part → isolated decode workers → UniMatch batches → rows (random-weight
    checkpoint, CPU float32)."""
    from fixture_env import fixture_model_env

    from vidscore_core.ingest.meta import read_meta
    from vidscore_core.scoring.options import JobOptions
    from vidscore_core.scoring.per_clip import score_videos
    from vidscore_core.settings import Settings

    env = fixture_model_env(fixtures)
    settings = Settings(home=tmp_path_factory.mktemp("home"), weights={"unimatch": Path(env["VIDSCORE_UNIMATCH_WEIGHTS"])})
    meta = read_meta(fixtures / "media/meta.csv")
    options = JobOptions(device="cpu", batch_size=3, num_workers=1, score_options={"flow": {"backend": "unimatch"}})
    frames, _ = score_videos(["flow_scores"], meta.assign(error=None), "parity", settings, options)
    rows = frames["flow_scores"]
    return rows.merge(meta[["video_id", "path_original"]], on="video_id").set_index("path_original")


@pytest.fixture(scope="module")
def unimatch_scores(unimatch_rows) -> dict[str, tuple[float, list[float]]]:
    scored = unimatch_rows[unimatch_rows["flow"].notna()]
    return {path: (float(row["flow"]), list(row["flow_pairs"])) for path, row in scored.iterrows()}


def test_unimatch_matches_reference_scores(fixtures: Path, unimatch_scores) -> None:
    reference = {r["path"]: float(r["flow"]) for r in _read_csv(fixtures / "reference/flow.csv")}
    assert set(unimatch_scores) == set(reference)
    for path, expected in reference.items():
        got = unimatch_scores[path][0]
        assert abs(got - expected) / expected <= PARITY_RTOL, (path, got, expected)


def test_unimatch_matches_reference_pairs(fixtures: Path, unimatch_scores) -> None:
    rows = _read_csv(fixtures / "reference/flow_pairs.csv")
    assert len(rows) == 9
    for row in rows:
        got = unimatch_scores[row["path"]][1][int(row["pair"])]
        expected = float(row["flow_pair"])
        assert abs(got - expected) / expected <= PARITY_RTOL, (row["path"], row["pair"], got, expected)


# --- frame selection and preparation -------------------------------------------------------------


def test_frame_indices_are_clamped_to_the_clip() -> None:
    assert flow_frame_indices(48) == [0, 10, 20, 30]
    assert flow_frame_indices(25) == [0, 10, 20, 24]
    assert flow_frame_indices(20) == [0, 10, 19, 19]
    assert flow_frame_indices(1) == [0, 0, 0, 0]
    with pytest.raises(ValueError):
        flow_frame_indices(0)


@pytest.mark.parametrize("height, width", [(180, 322), (322, 180), (320, 576)])
def test_prepare_gives_model_size(height: int, width: int) -> None:
    clip = torch.randint(0, 256, (20, height, width, 3), dtype=torch.uint8)
    frames = clip[flow_frame_indices(len(clip))]
    out = prepare_flow_frames(frames)
    assert out.shape == (4, 3, *FLOW_SIZE) and out.dtype == torch.float32
    assert 0 <= out.min() and out.max() <= 255


def test_prepare_keeps_values_and_corners() -> None:
    # align_corners=True maps corner pixels exactly onto corner pixels.
    frame = torch.zeros(1, 90, 160, 3, dtype=torch.uint8)
    frame[0, 0, 0] = torch.tensor([255, 0, 0], dtype=torch.uint8)
    frame[0, -1, -1] = torch.tensor([0, 0, 200], dtype=torch.uint8)
    out = prepare_flow_frames(frame)
    assert out[0, :, 0, 0].tolist() == [255.0, 0.0, 0.0]
    assert out[0, :, -1, -1].tolist() == [0.0, 0.0, 200.0]


def test_portrait_frames_are_transposed_not_rotated() -> None:
    # A bright block at the top-right of a portrait frame: a transpose puts it bottom-left, a
    # clockwise rotation would put it bottom-right and a counter-clockwise one top-left.
    frame = torch.zeros(1, 640, 360, 3, dtype=torch.uint8)
    frame[0, :64, 300:, 0] = 255
    out = prepare_flow_frames(frame)[0, 0]  # red channel, [320, 576]
    h, w = out.shape
    bright = out > 128
    assert bright[int(h * 0.9) :, : int(w * 0.08)].all()
    assert bright[:, : int(w * 0.12)].float().mean() > 0.1
    assert not bright[: h // 2].any()
    assert not bright[:, w // 2 :].any()


def test_prepare_rejects_channels_first_input() -> None:
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\]"):
        prepare_flow_frames(torch.zeros(4, 3, 32, 32, dtype=torch.uint8))


# --- score math ----------------------------------------------------------------------------------


def test_flow_score_is_mean_absolute_flow() -> None:
    flows = torch.zeros(3, 2, 4, 5)
    flows[0, 0] = 3.0  # u = 3 everywhere
    flows[0, 1] = -1.0  # v = -1 everywhere -> pair mean (3 + 1) / 2 = 2
    flows[2, 1, :2] = 4.0  # half the pixels move 4 in v -> (0 + 2) / 2 = 1
    score, per_pair = flow_score(flows)
    assert per_pair == [2.0, 0.0, 1.0]
    assert score == pytest.approx(1.0)


def test_flow_score_rejects_empty_input() -> None:
    with pytest.raises(ValueError):
        flow_score(torch.zeros(0, 2, 4, 4))


# --- DIS backend on known motion -----------------------------------------------------------------

PAN_H, PAN_W = 270, 480  # 16:9 crop of skimage's coffee photo (400 x 600)


def pan_clip(dx: int, dy: int, num_frames: int = 31) -> np.ndarray:
    """Crop windows moving (dx, dy) px per frame over a real photograph: [T, H, W, 3] uint8."""
    photo = data.coffee()
    start_x, start_y = 10, 10
    return np.stack(
        [
            photo[start_y + t * dy : start_y + t * dy + PAN_H, start_x + t * dx : start_x + t * dx + PAN_W]
            for t in range(num_frames)
        ]
    )


def analytic_flow(dx: int, dy: int, height: int = PAN_H, width: int = PAN_W) -> float:
    """Score a perfect estimator gets: per-frame motion rescaled to 576x320, times the frame gap."""
    indices = flow_frame_indices(31)
    gaps = [b - a for a, b in zip(indices, indices[1:], strict=False)]
    u, v = abs(dx) * FLOW_SIZE[1] / width, abs(dy) * FLOW_SIZE[0] / height
    return float(np.mean([(u * g + v * g) / 2 for g in gaps]))


def dis_score(clip: np.ndarray) -> float:
    frames = torch.from_numpy(clip[flow_frame_indices(len(clip))])
    flows = DISFlow().pair_flows(prepare_flow_frames(frames))
    assert flows.shape == (len(FLOW_FRAME_INDICES) - 1, 2, *FLOW_SIZE)
    return flow_score(flows)[0]


def test_dis_static_clip_scores_near_zero() -> None:
    assert dis_score(pan_clip(0, 0)) < 0.05


@pytest.mark.parametrize("dx, dy", [(1, 0), (2, 0), (3, 0), (0, 2), (2, 1)])
def test_dis_recovers_known_pan_speed(dx: int, dy: int) -> None:
    expected = analytic_flow(dx, dy)
    assert dis_score(pan_clip(dx, dy)) == pytest.approx(expected, rel=0.10)


def test_dis_score_grows_with_speed() -> None:
    scores = [dis_score(pan_clip(dx, 0)) for dx in (1, 2, 3)]
    assert scores[0] < scores[1] < scores[2]


def test_dis_survives_h264_compression(tmp_path: Path) -> None:
    clip = pan_clip(2, 1)
    path = tmp_path / "pan.mp4"
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(24, 1))
        stream.width, stream.height, stream.pix_fmt = PAN_W, PAN_H, "yuv420p"
        for rgb in clip:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode(None))
    decoded = decode_frames(path, flow_frame_indices(len(clip)))
    frames = torch.from_numpy(decoded)
    score = flow_score(DISFlow().pair_flows(prepare_flow_frames(frames)))[0]
    assert score == pytest.approx(analytic_flow(2, 1), rel=0.10)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_prepare_on_cuda_matches_cpu() -> None:
    clip = torch.randint(0, 256, (4, 360, 640, 3), dtype=torch.uint8)
    torch.testing.assert_close(prepare_flow_frames(clip.cuda()).cpu(), prepare_flow_frames(clip))


def test_unreadable_clips_get_errors_from_the_production_path(unimatch_rows) -> None:
    assert unimatch_rows.loc["media/image_colorwheel.jpg", "error"].startswith("not a video")
    assert unimatch_rows.loc["media/bad_truncated.mp4", "error"].startswith("truncated")
    assert set(unimatch_rows["backend"].dropna()) == {"unimatch"}
