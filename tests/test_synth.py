"""Synthetic clips: exact pans, reproducible files, and a demo corpus that decodes as described."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vidscore_core.ingest.meta import read_meta
from vidscore_core.media import DecodeError, probe, read_frames
from vidscore_core.media.synth import make_demo_corpus, pan_frames, texture_image, write_clip


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_corpus(tmp_path_factory.mktemp("demo"))


def estimated_shift(a: np.ndarray, b: np.ndarray, limit: int = 12) -> tuple[int, int]:
    """The whole-pixel (dx, dy) that best maps frame a onto frame b (brute force, grey levels)."""
    a, b = a.mean(axis=2), b.mean(axis=2)
    h, w = a.shape
    m = limit
    best = None
    for dy in range(-limit, limit + 1):
        for dx in range(-limit, limit + 1):
            diff = np.abs(b[m : h - m, m : w - m] - a[m - dy : h - m - dy, m - dx : w - m - dx]).mean()
            if best is None or diff < best[0]:
                best = (diff, dx, dy)
    return best[1], best[2]


def test_pan_frames_move_content_exactly() -> None:
    image = texture_image(120, 160, seed=7)
    frames = pan_frames(image, 64, 48, 6, dx=3, dy=-2)
    assert frames.shape == (6, 48, 64, 3) and frames.dtype == np.uint8
    for t in range(5):  # content moves +3 px right and 2 px up per frame
        assert np.array_equal(frames[t + 1][:-2, 3:], frames[t][2:, :-3])


def test_pan_frames_enlarge_a_small_image() -> None:
    small = texture_image(40, 50, seed=1)
    frames = pan_frames(small, 64, 48, 10, dx=-4, dy=0)
    assert frames.shape == (10, 48, 64, 3)
    for t in range(9):  # content moves 4 px left
        assert np.array_equal(frames[t + 1][:, :-4], frames[t][:, 4:])


def test_texture_is_deterministic_and_detailed() -> None:
    a, b, c = texture_image(90, 160, 3), texture_image(90, 160, 3), texture_image(90, 160, 4)
    assert a.shape == (90, 160, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    grey = a.mean(axis=2)
    assert np.abs(np.diff(grey, axis=1)).mean() > 2  # texture, not a flat field


def test_write_clip_is_reproducible_and_faithful(tmp_path: Path) -> None:
    frames = pan_frames(texture_image(100, 140, 2), 64, 48, 12, dx=2, dy=0)
    for suffix in (".mp4", ".mkv"):
        first = write_clip(tmp_path / f"a{suffix}", frames)
        second = write_clip(tmp_path / f"b{suffix}", list(frames))
        assert first.read_bytes() == second.read_bytes()
        decoded = read_frames(first)
        assert decoded.num_frames == 12 and (decoded.width, decoded.height) == (64, 48)
        error = np.abs(np.stack(decoded.frames).astype(int) - frames.astype(int)).mean()
        assert error < 8, f"{suffix}: mean abs error {error}"  # lossy 4:2:0, not garbage
    with pytest.raises(ValueError, match="even"):
        write_clip(tmp_path / "odd.mp4", np.zeros((2, 47, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="no frames"):
        write_clip(tmp_path / "none.mp4", [])


def test_demo_corpus_is_complete(corpus: Path) -> None:
    meta = corpus
    df = read_meta(meta)
    assert len(df) == 8 and set(df["kind"]) == {"video", "image", "bad"}
    assert all(Path(p).parent == meta.parent for p in df["path"])
    assert any('"' in t and not t.isascii() for t in df["text"])
    assert df["text"].map(lambda t: isinstance(t, str) and len(t) > 10).all()


def test_demo_corpus_decodes_as_described(corpus: Path) -> None:
    df = read_meta(corpus)
    for row in df.itertuples():
        if row.kind == "bad":
            with pytest.raises(DecodeError):
                read_frames(row.path, points=(0.1, 0.5, 0.9))
            assert probe(row.path)["error"]
            continue
        decoded = read_frames(row.path, indices=[0, 1])
        assert decoded.num_frames == row.expected_frames, row.path
        assert (decoded.width, decoded.height) == (row.width, row.height)
        assert probe(row.path)["num_frames"] == row.expected_frames
        if row.kind == "video":
            assert estimated_shift(*decoded.frames) == (row.gt_dx_px_per_frame, row.gt_dy_px_per_frame), (
                row.path
            )


def test_claim_avi_frame_count_patches_only_the_header(tmp_path: Path) -> None:
    import av

    from vidscore_core.media.synth import claim_avi_frame_count

    honest = write_clip(tmp_path / "a.avi", pan_frames(texture_image(100, 140, 2), 64, 48, 6, 2, 0), codec="mpeg4")
    lying = claim_avi_frame_count(honest, tmp_path / "b.avi", 3_000_000_000)
    a, b = honest.read_bytes(), lying.read_bytes()
    assert len(a) == len(b) and sum(x != y for x, y in zip(a, b, strict=True)) <= 8  # two 32-bit fields
    with av.open(str(lying)) as container:
        assert container.streams.video[0].frames == 3_000_000_000
    with pytest.raises(ValueError, match="not an AVI"):
        claim_avi_frame_count(write_clip(tmp_path / "c.mkv", np.zeros((2, 48, 64, 3), np.uint8)), tmp_path / "d.avi", 5)
    with pytest.raises(ValueError, match="32-bit"):
        claim_avi_frame_count(honest, tmp_path / "e.avi", 2**32)
