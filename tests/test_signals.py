"""The signals computed beside flow and CLIP in the one decoding pass: camera motion (`cmotion`, Open-Sora's
labels), object motion (from the flow's own fields), brightness (`lum`) and sharpness (`blur`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from tests.signal_corpus import CAMERA_CLIPS, SIZE, SPRITE, SPRITE_STEP, build
from vidscore_core.media.decode import read_frames

VIDSCORE = Path(sys.executable).with_name("vidscore")


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    out = subprocess.run([str(VIDSCORE), *args], capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, fixtures) -> Path:
    """The synthetic clips plus the parity fixtures (three pans, an image, a truncated file)."""
    folder = tmp_path_factory.mktemp("signals")
    meta = pd.read_csv(build(folder))
    fixture_rows = pd.read_csv(fixtures / "media/meta.csv")[["path", "text"]]
    fixture_rows["path"] = [str(fixtures / p) for p in fixture_rows["path"]]
    pd.concat([meta, fixture_rows]).to_csv(folder / "meta.csv", index=False)
    return folder / "meta.csv"


@pytest.fixture(scope="module")
def scored(corpus) -> pd.DataFrame:
    """`vidscore score all --backend dis` on the corpus (no model files: flow, camera motion,
    luminance and blur run, the CLIP scores are skipped), indexed by file name."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VIDSCORE_")}
    env.update(VIDSCORE_MODELS_DIR=str(corpus.parent / "no-models"), VIDSCORE_DEVICE="cpu")
    out = _cli("score", "all", str(corpus), "--backend", "dis", env=env)
    assert "camera_motion: " in out.stdout and "luminance: " in out.stdout and "blur: " in out.stdout
    frame = pd.read_csv(corpus.with_name("meta_scores.csv"))
    frame.index = [Path(p).stem for p in frame["path"]]
    return frame


def test_labels_of_synthetic_camera_motions(scored):
    for name, (_, _, label) in CAMERA_CLIPS.items():
        assert scored.loc[name, "cmotion"] == label, name
    # A still camera over a moving object is a static shot; darkening or blurring a still shot too.
    assert scored.loc[["object", "dark", "blurred"], "cmotion"].tolist() == ["static"] * 3


def reference_label(path: str) -> str:
    """Open-Sora's camera_motion_detect as published, written out independently: OpenCV's own
    reader (seeking by CAP_PROP_POS_FRAMES every 15 frames, BGR to gray), Farnebäck from the first
    frame to each later one, the median magnitude/angle and the zoom-in share, its rules."""
    cap = cv2.VideoCapture(path)
    first, pairs, index = None, [], 0
    while True:
        cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, bgr = cap.read()
        if not ok:
            break
        frame = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
        if first is None:
            first = frame
            h, w = frame.shape
            grid = np.dstack(np.meshgrid(np.arange(w), np.arange(h)))  # [h, w, (x, y)]
            centre_before = np.linalg.norm(grid - [w / 2, h / 2], axis=2)
        else:
            flow = cv2.calcOpticalFlowFarneback(first, frame, None, 0.5, 3, 15, 3, 5, 1.2, 0)
            mag, ang = cv2.cartToPolar(flow[..., 0], flow[..., 1], angleInDegrees=True)
            zoom = np.mean(np.linalg.norm(grid + flow - [w / 2, h / 2], axis=2) >= centre_before)
            m, a = np.median(mag), np.median(ang)
            pairs.append("static" if m < 1 else "zoom out" if zoom < 0.4 else "zoom in" if zoom > 0.6
                         else "pan left" if a < 45 or a >= 315 else "tilt up" if a < 135
                         else "pan right" if a < 225 else "tilt down")  # fmt: skip
        index += 15
    cap.release()
    top = max(set(pairs), key=pairs.count)
    if pairs.count(top) > len(pairs) / 2:
        return top
    if "static" in pairs:
        return "unknown"
    return "pan/tilt" if not {"zoom in", "zoom out"} & set(pairs) else "dynamic"


def test_labels_equal_the_reference_algorithm(scored, corpus):
    """On the parity fixtures (5 px/frame and 3 px/frame pans: beyond what Farnebäck follows over 15
    frames, so the labels are the algorithm's, not the truth) and on the synthetic clips."""
    videos = scored[scored["cmotion"].notna()]
    assert len(videos) == len(CAMERA_CLIPS) + 3 + 3  # + object, dark, blurred + the 3 fixture pans
    for name, row in videos.iterrows():
        assert row["cmotion"] == reference_label(str(corpus.parent / row["path"])), name


def test_unscorable_clips_get_a_reason_not_a_label(scored):
    assert scored.loc["image_colorwheel", "cmotion_error"].startswith("not a video")
    assert scored.loc["short", "cmotion_error"].startswith("too short for camera motion: 10 frames")
    assert pd.isna(scored.loc["bad_truncated", "cmotion"]) and scored.loc["bad_truncated", "cmotion_error"]
    assert pd.isna(scored.loc["short", "object_motion"])


def test_object_motion_separates_object_from_camera(scored):
    # A moving camera: the flow is all camera motion, object motion stays under 10 % of it.
    for name in ("pan_right", "pan_left", "tilt_up", "tilt_down", "zoom_in", "zoom_out",
                 "pan_hubble_right_5px", "pan_retina_portrait_down_3px", "pan_ihc_diag_25frames"):  # fmt: skip
        row = scored.loc[name]
        assert row["flow"] > 1 and row["object_motion"] < 0.1 * row["flow"], name
    # A still camera over an object moving 40 px between flow frames: the object's |flow| (mean of
    # |dx|, |dy| = 20 px) times its share of the frame, within what uncovered background adds.
    row = scored.loc["object"]
    expected = SPRITE_STEP * 10 / 2 * (SPRITE[0] * SPRITE[1]) / (SIZE[0] * SIZE[1])
    assert expected * 0.8 <= row["object_motion"] <= expected * 1.3
    assert row["object_motion"] == pytest.approx(row["flow"], rel=0.15)  # nothing else moves
    assert scored.loc["static", "object_motion"] < 0.05


def test_objmotionmin_filter_keeps_the_moving_object(scored, corpus):
    _cli("filter", str(corpus.with_name("meta_scores.csv")), "--objmotionmin", "0.5")
    kept = pd.read_csv(corpus.with_name("meta_scores_objmotionmin0.5.csv"))
    assert [Path(p).stem for p in kept["path"]] == ["object"]


def _aesthetic_frames(path: str) -> list[np.ndarray]:
    return read_frames(path, points=(0.1, 0.5, 0.9)).frames


def test_luminance_is_the_mean_bt601_luma(scored, corpus):
    for name, row in scored[scored["lum"].notna()].iterrows():
        frames = _aesthetic_frames(str(corpus.parent / row["path"]))
        # OpenCV's RGB-to-gray on float pixels: BT.601 weights, no rounding.
        independent = np.mean([cv2.cvtColor(f.astype(np.float32), cv2.COLOR_RGB2GRAY).mean() for f in frames])
        assert row["lum"] == pytest.approx(independent, abs=1e-3), name
    # A quarter of the light, a quarter of the luma (within the codec's rounding).
    assert scored.loc["dark", "lum"] == pytest.approx(scored.loc["static", "lum"] / 4, abs=1.0)
    assert 0 <= scored["lum"].min() and scored["lum"].max() <= 255


def test_blur_is_the_laplacian_variance_at_360px(scored, corpus):
    for name, row in scored[scored["blur"].notna()].iterrows():
        values = []
        for frame in _aesthetic_frames(str(corpus.parent / row["path"])):
            luma = cv2.cvtColor(frame.astype(np.float32), cv2.COLOR_RGB2GRAY).astype(np.float64)
            h, w = luma.shape
            scale = 360 / min(h, w)
            size = (round(w * scale), round(h * scale))
            resized = luma if size == (w, h) else cv2.resize(
                luma, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)  # fmt: skip
            values.append(ndimage.laplace(resized, mode="mirror").var())  # SciPy's Laplacian, not OpenCV's
        assert row["blur"] == pytest.approx(np.mean(values), rel=1e-4), name
    # Blurring a clip (Gaussian, sigma 2 px) lowers it a lot; the same still clip sharp is far above.
    assert scored.loc["blurred", "blur"] < 0.2 * scored.loc["static", "blur"]


def test_lum_and_blur_filters_drop_dark_and_blurred_clips(scored, corpus):
    lummin = scored.loc["dark", "lum"] + 10
    blurmin = scored.loc["blurred", "blur"] * 2
    _cli("filter", str(corpus.with_name("meta_scores.csv")), "--lummin", str(lummin), "--blurmin", str(blurmin))
    kept = pd.read_csv(corpus.with_name(f"meta_scores_lummin{lummin}_blurmin{blurmin}.csv"))
    names = {Path(p).stem for p in kept["path"]}
    assert "dark" not in names and "blurred" not in names
    assert {"static", "object", "pan_right", "zoom_in"} <= names
