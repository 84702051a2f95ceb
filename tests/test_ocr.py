"""`ocr` / `ocr_area`: the real PP-OCRv4 detector (the rapidocr-onnxruntime wheel's model file) on
Open-Sora's frame (index 10, shorter side 1024, centre crop), words drawn on fixture frames."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import pytest

from vidscore_core.media import read_frames
from vidscore_core.media.synth import draw_words, write_clip
from vidscore_core.models.ppocr_det import TextDetector, covered_fraction, model_path
from vidscore_core.scoring.lineage import file_sha256
from vidscore_core.scoring.ocr_frames import OCR_FRAME_INDEX, square_crop
from vidscore_dagster.defs.resources import default_resources
from vidscore_dagster.runner import ingest_meta_file, materialize_batches

VIDSCORE = Path(sys.executable).with_name("vidscore")
PLAIN = ["pan_hubble_right_5px.mp4", "pan_retina_portrait_down_3px.mp4", "image_colorwheel.jpg"]


def ocr_frame(fixtures: Path, name: str) -> np.ndarray:
    return read_frames(fixtures / "media" / name, indices=[OCR_FRAME_INDEX]).frames[0]


@pytest.fixture(scope="module")
def detector() -> TextDetector:
    return TextDetector(box_threshold=0.3)


@pytest.fixture(scope="module")
def rapidocr_detector():
    """The wheel's own detection pipeline, with Open-Sora's confidence threshold (0.3)."""
    from rapidocr_onnxruntime.ch_ppocr_det import TextDetector as RapidTextDetector

    config = {"model_path": str(model_path()), "limit_side_len": 736, "limit_type": "min",
              "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "thresh": 0.3, "box_thresh": 0.3,
              "max_candidates": 1000, "unclip_ratio": 1.6, "use_dilation": True, "score_mode": "fast",
              "use_cuda": False, "use_dml": False, "intra_op_num_threads": -1, "inter_op_num_threads": -1}  # fmt: skip
    return RapidTextDetector(config)


def corner_sets(boxes) -> list[list[tuple[int, int]]]:
    """Boxes compared as sets of integer corners (the two pipelines order corners differently)."""
    return sorted(sorted((int(x), int(y)) for x, y in box) for box in boxes)


@pytest.mark.parametrize("name", ["pan_hubble_right_5px.mp4", "pan_retina_portrait_down_3px.mp4", "image_colorwheel.jpg"])
def test_same_boxes_as_the_wheels_own_pipeline(fixtures, detector, rapidocr_detector, name):
    for crop in (square_crop(ocr_frame(fixtures, name)), square_crop(draw_words(ocr_frame(fixtures, name)))):
        ours = detector.detect(crop[None])[0]
        theirs, _ = rapidocr_detector(np.ascontiguousarray(crop[..., ::-1]))  # it reads BGR, as cv2 loads
        assert corner_sets(b.points for b in ours) == corner_sets(theirs if theirs is not None else [])


@pytest.mark.parametrize("name", PLAIN)
def test_words_give_boxes_and_area_and_plain_frames_give_none(fixtures, detector, name):
    plain = square_crop(ocr_frame(fixtures, name))
    words = square_crop(draw_words(ocr_frame(fixtures, name)))
    found_plain, found_words = detector.detect(np.stack([plain, words]))  # one batched forward
    assert found_plain == [] and covered_fraction(found_plain, 1024, 1024) == 0.0
    assert len(found_words) >= 1 and all(b.score > 0.3 for b in found_words)
    area = covered_fraction(found_words, 1024, 1024)
    # The words cover a few percent of the frame: more than nothing, far less than all of it.
    assert 0.005 < area < 0.3


def test_square_crop_is_the_centre_of_the_shorter_side_resize():
    frame = np.zeros((360, 640, 3), np.uint8)
    frame[:, 320:] = 255  # right half white
    crop = square_crop(frame)
    assert crop.shape == (1024, 1024, 3)
    # 640 px wide at 360 high becomes ~1820 wide: the crop keeps the middle, the edge in its centre.
    assert crop[:, :500].max() == 0 and crop[:, 524:].min() == 255


def _text_clip(fixtures: Path, target: Path) -> Path:
    frames = read_frames(fixtures / "media/pan_hubble_right_5px.mp4", indices=list(range(24))).frames
    return write_clip(target, [draw_words(f) for f in frames])


def test_cli_scores_ocr_and_filters_on_it(fixtures, tmp_path, vidscore_env):
    text_clip = _text_clip(fixtures, tmp_path / "with_text.mp4")
    plain = fixtures / "media/pan_hubble_right_5px.mp4"
    bad = fixtures / "media/bad_truncated.mp4"
    meta = tmp_path / "meta.csv"
    pd.DataFrame({"path": [str(text_clip), str(plain), str(bad)], "text": ["a", "b", "c"]}).to_csv(meta, index=False)
    run = subprocess.run([VIDSCORE, "score", "ocr", str(meta), "--num-workers", "1"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    out = pd.read_csv(tmp_path / "meta_ocr.csv").set_index("path")
    assert out.loc[str(text_clip), "ocr"] >= 1 and out.loc[str(text_clip), "ocr_area"] > 0
    assert out.loc[str(plain), "ocr"] == 0 and out.loc[str(plain), "ocr_area"] == 0
    assert pd.isna(out.loc[str(bad), "ocr"]) and out.loc[str(bad), "ocr_error"].startswith("truncated")

    run = subprocess.run([VIDSCORE, "filter", str(tmp_path / "meta_ocr.csv"), "--ocrmax", "0"],
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr
    kept = pd.read_csv(tmp_path / "meta_ocr_ocrmax0.0.csv")
    assert list(kept["path"]) == [str(plain)]
    area = float(out.loc[str(text_clip), "ocr_area"])
    run = subprocess.run([VIDSCORE, "filter", str(tmp_path / "meta_ocr.csv"), "--ocrareamax", str(area / 2)],
                         capture_output=True, text=True)  # fmt: skip
    assert run.returncode == 0, run.stderr
    kept = pd.read_csv(next(tmp_path.glob("meta_ocr_ocrareamax*.csv")))
    assert list(kept["path"]) == [str(plain)]


def test_dagster_batch_scores_ocr_with_lineage_and_checks(fixtures, tmp_path, vidscore_env):
    settings, store = vidscore_env
    text_clip = _text_clip(fixtures, tmp_path / "with_text.mp4")
    meta = tmp_path / "meta.csv"
    paths = [str(text_clip), str(fixtures / "media/pan_hubble_right_5px.mp4"), str(fixtures / "media/bad_truncated.mp4")]
    pd.DataFrame({"path": paths, "text": ["a", "b", "c"]}).to_csv(meta, index=False)
    instance = dg.DagsterInstance.ephemeral()
    keys, _ = ingest_meta_file(instance, meta, 5000)
    assert all(materialize_batches(instance, keys, ["videos", "ocr_scores"], resources=default_resources()).values())
    rows = store.query_df("SELECT path, ocr, ocr_area, ocr_error FROM video_scores ORDER BY path").set_index("path")
    assert rows.loc[str(text_clip), "ocr"] >= 1 and rows.loc[str(text_clip), "ocr_area"] > 0
    assert rows.loc[paths[1], "ocr"] == 0
    assert pd.isna(rows.loc[paths[2], "ocr"]) and rows.loc[paths[2], "ocr_error"]
    lineage = store.query_df("SELECT model, params->>'model_sha256' AS sha, params->>'frame_index' AS frame, run_id, "
                             "code_version FROM ocr_scores")  # fmt: skip
    assert lineage.notna().all().all() and set(lineage["frame"]) == {"10"}
    assert set(lineage["sha"]) == {file_sha256(model_path())}
    assert check_passed(instance, "ocr_scores", "counts_and_area")


def check_passed(instance: dg.DagsterInstance, table: str, name: str) -> bool:
    """Whether the latest evaluation of the asset check `<table>_<name>` passed."""
    key = dg.AssetCheckKey(dg.AssetKey(table), f"{table}_{name}")
    record = instance.get_latest_asset_check_evaluation_record(key)
    return record is not None and record.event.dagster_event.event_specific_data.passed
