"""`vidscore dedup META.csv` (and `vidscore filter --dedup`) as a CSV user runs them.

The clips: an original (the fixtures' 640x360 Hubble pan), an exact copy under another name, a
re-encode at another CRF (same resolution), a copy resized to 320x180, a different 640x360 clip, and a
truncated file; the meta's `aes` column decides which member of a group is kept.

Threshold. The fixture CLIP has random weights, so its cosines are not the real ViT-L/14's: every
image embeds close to every other (different clips reach 0.95-0.995) while copies stay within ~1e-5
of 1. Measured on this machine (`test_fixture_cosines_separate_at_the_chosen_threshold` checks it):
copy 1.0 (identical bytes), re-encode (CRF 40) 0.999992, resize 0.999991, re-encode vs resize
0.999997; the highest cosine of a copy to a different clip is 0.9658 (the colour-wheel image), and the
highest between any two different clips 0.9947 (a synthetic texture pan and the fixtures' tissue pan).
THRESHOLD = 0.999 sits between them, with a margin of 10x below the duplicates and 5x above the nearest
different pair; the default 0.98 is for the real model.
"""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from vidscore_core.ingest.meta import video_id_for
from vidscore_dagster.cli import main

THRESHOLD = 0.999
FAMILY = ("orig.mp4", "copy.mp4", "reenc.mp4", "resized.mp4")  # the same shot, four files


def _reencode(source: Path, target: Path, *, crf: int, size: tuple[int, int] | None = None) -> None:
    import av

    from vidscore_core.media.synth import write_clip

    with av.open(str(source)) as container:
        frames = [
            (frame if size is None else frame.reformat(width=size[0], height=size[1])).to_ndarray(
                format="rgb24"
            )
            for frame in container.decode(video=0)
        ]
    write_clip(target, frames, crf=crf)


@pytest.fixture(scope="module")
def clips(tmp_path_factory, fixtures) -> Path:
    """A folder with the clips above (module scope: encoded once)."""
    from vidscore_core.media.synth import pan_frames, texture_image, write_clip

    folder = tmp_path_factory.mktemp("dedup") / "clips"
    folder.mkdir()
    source = fixtures / "media/pan_hubble_right_5px.mp4"
    shutil.copyfile(source, folder / "orig.mp4")
    shutil.copyfile(source, folder / "copy.mp4")  # an exact copy under another name
    _reencode(source, folder / "reenc.mp4", crf=40)  # the fixture is CRF 18-ish: a lossy re-encode
    _reencode(source, folder / "resized.mp4", crf=23, size=(320, 180))
    write_clip(folder / "other.mp4", pan_frames(texture_image(400, 800, seed=7), 640, 360, 48, 5, 0))
    shutil.copyfile(fixtures / "media/bad_truncated.mp4", folder / "bad.mp4")
    assert (folder / "reenc.mp4").read_bytes() != source.read_bytes()
    return folder


def _meta(folder: Path, clips: Path, *, aes: dict[str, float] | None = None, sizes: bool = True) -> Path:
    """folder/meta.csv listing the clips by absolute path; the orig is listed twice (two captions).
    `width`/`height` are given for some rows and left blank for others (those are probed)."""
    names = ["orig.mp4", "copy.mp4", "reenc.mp4", "resized.mp4", "other.mp4", "bad.mp4", "orig.mp4"]
    df = pd.DataFrame(
        {"path": [str(clips / n) for n in names], "text": [f"caption {i}" for i in range(len(names))]}
    )
    if aes is not None:
        df["aes"] = [aes[n] for n in names]
    if sizes:
        given = {"orig.mp4": (640, 360), "resized.mp4": (320, 180), "other.mp4": (640, 360)}
        df["width"] = [given.get(n, (None, None))[0] for n in names]
        df["height"] = [given.get(n, (None, None))[1] for n in names]
    df["video_id"] = [f"mine-{i}" for i in range(len(names))]  # a user column named like vidscore's id
    path = folder / "meta.csv"
    df.to_csv(path, index=False)
    return path


AES = {
    "orig.mp4": 5.0,
    "copy.mp4": 6.0,
    "reenc.mp4": 4.0,
    "resized.mp4": 7.0,
    "other.mp4": 9.0,
    "bad.mp4": 1.0,
}


def _dedup(meta: Path, *options: str):
    result = CliRunner().invoke(
        main, ["dedup", str(meta), "--threshold", str(THRESHOLD), "--num-workers", "0", *options]
    )
    assert result.exit_code == 0, result.output
    out = pd.read_csv(meta.with_name(f"{meta.stem}_dedup.csv"), keep_default_na=False)
    return result, out


def _by_name(out: pd.DataFrame) -> dict[str, tuple[str, bool]]:
    return {
        Path(p).name: (Path(g).name if g else "", k)
        for p, g, k in zip(out["path"], out["dup_group"], out["dup_keep"], strict=True)
    }


def test_copies_and_reencodes_join_the_original_and_the_best_aes_is_kept(
    vidscore_env, clips, tmp_path
) -> None:
    meta = _meta(tmp_path, clips, aes=AES)
    result, out = _dedup(meta)
    written = pd.read_csv(meta, keep_default_na=False)
    # Every input row and column as written, in order, plus dup_group and dup_keep.
    assert list(out.columns) == [*written.columns, "dup_group", "dup_keep"]
    pd.testing.assert_frame_equal(out[written.columns], written)
    assert _by_name(out) == {
        "orig.mp4": ("copy.mp4", False),
        "copy.mp4": ("copy.mp4", True),  # aes 6 beats the orig's 5 and the re-encode's 4
        "reenc.mp4": ("copy.mp4", False),
        "resized.mp4": ("resized.mp4", True),  # another resolution: a group of its own
        "other.mp4": ("other.mp4", True),  # a different clip never joins
        "bad.mp4": ("", True),  # no embedding: kept, not deduplicated
    }
    assert list(out["dup_keep"]) == [False, True, False, True, True, True, False]  # both orig rows
    line = result.output.strip().splitlines()[-1]
    assert "6 clips in 7 rows, 1 group(s) with duplicates (3 clips), 3 row(s) with dup_keep false" in line
    assert "1 clip(s) without an embedding" in line and "same resolution" in line
    assert "embeddings computed" in line

    # `filter --dedup` then keeps one clip per group (and the unreadable clip).
    dedup_csv = meta.with_name("meta_dedup.csv")
    result = CliRunner().invoke(main, ["filter", str(dedup_csv), "--dedup"])
    assert result.exit_code == 0, result.output
    kept = pd.read_csv(meta.with_name("meta_dedup_dedup.csv"))
    assert [Path(p).name for p in kept["path"]] == ["copy.mp4", "resized.mp4", "other.mp4", "bad.mp4"]


def test_a_resized_copy_joins_only_with_any_resolution(vidscore_env, clips, tmp_path) -> None:
    meta = _meta(tmp_path, clips, aes=AES)
    result, out = _dedup(meta, "--any-resolution")
    assert _by_name(out) == {
        "orig.mp4": ("resized.mp4", False),
        "copy.mp4": ("resized.mp4", False),
        "reenc.mp4": ("resized.mp4", False),
        "resized.mp4": ("resized.mp4", True),  # aes 7 is now the best of the group
        "other.mp4": ("other.mp4", True),  # aes 9, yet still alone
        "bad.mp4": ("", True),
    }
    assert "1 group(s) with duplicates (4 clips)" in result.output and "any resolution" in result.output


def test_without_aes_the_smallest_video_id_is_kept_and_sizes_are_probed(
    vidscore_env, clips, tmp_path
) -> None:
    meta = _meta(tmp_path, clips, sizes=False)  # no width/height columns: every resolution comes from a probe
    _, out = _dedup(meta)
    group = {"orig.mp4", "copy.mp4", "reenc.mp4"}
    ids = {name: video_id_for(str(clips / name)) for name in group}
    winner = min(group, key=ids.__getitem__)
    got = _by_name(out)
    assert {name: got[name] for name in group} == {name: (winner, name == winner) for name in group}
    assert got["resized.mp4"] == ("resized.mp4", True) and got["other.mp4"] == ("other.mp4", True)


def test_fixture_cosines_separate_at_the_chosen_threshold(vidscore_env, clips, fixtures) -> None:
    """The numbers behind THRESHOLD (module docstring), from the production embedding code."""
    from vidscore_core.csv_commands.dedup_csv import compute_embeddings
    from vidscore_core.scoring.options import JobOptions

    settings, _ = vidscore_env
    others = [clips / "other.mp4", *(fixtures / "media" / n for n in (
        "pan_ihc_diag_25frames.mkv", "pan_retina_portrait_down_3px.mp4", "image_colorwheel.jpg"))]  # fmt: skip
    paths = [clips / n for n in FAMILY] + others
    frame = pd.DataFrame({"video_id": [p.name for p in paths], "path": [str(p) for p in paths]})
    emb = compute_embeddings(frame, settings, JobOptions(device="cpu", num_workers=0))
    unit = {k: v / np.linalg.norm(v) for k, v in emb.items()}

    def cos(a: str, b: str) -> float:
        return float(unit[a] @ unit[b])

    same = [cos(a, b) for a, b in itertools.combinations(FAMILY, 2)]
    to_family = [cos(a, p.name) for a in FAMILY for p in others]
    between = [cos(a.name, b.name) for a, b in itertools.combinations(others, 2)]
    assert min(same) >= 0.9999, same  # measured >= 0.99999
    assert max(to_family) <= 0.97, to_family  # measured 0.9658
    assert max(between) <= 0.997, between  # measured 0.9947
    assert max(to_family + between) < THRESHOLD <= min(same)


def _publish_embeddings(store, settings, vectors: dict[Path, np.ndarray], sha: str) -> None:
    rows = [
        {"video_id": video_id_for(str(path)), "frame_index": 24, "frame_point": 0.5,
         "embedding": vec.astype(np.float32).tolist(), "num_frames": 48, "error": None,
         "model": "clip:clip_tiny_openai.pt", "weights_sha256": sha, "params": {}, "run_id": "r1",
         "code_version": "test", "scored_at": pd.Timestamp("2026-01-01", tz="UTC")}
        for path, vec in vectors.items()
    ]  # fmt: skip
    store.publish(pd.DataFrame(rows), "clip_embeddings", "b1")


def test_the_platforms_embeddings_are_reused_when_it_has_every_clip(vidscore_env, clips, tmp_path) -> None:
    from vidscore_core.scoring import lineage
    from vidscore_core.weights import get

    settings, store = vidscore_env
    sha = lineage.file_sha256(get("clip").path(settings))
    names = ["orig.mp4", "copy.mp4", "other.mp4"]
    meta = tmp_path / "small.csv"
    pd.DataFrame({"path": [str(clips / n) for n in names], "aes": [1.0, 2.0, 3.0]}).to_csv(meta, index=False)
    rng = np.random.default_rng(0)
    planted = {clips / n: rng.standard_normal(768) for n in names}  # the fixture CLIP's width
    planted[clips / "other.mp4"] = planted[clips / "orig.mp4"]  # the table says: other == orig
    _publish_embeddings(store, settings, planted, sha)

    result, out = _dedup(meta)
    assert "reused from the platform's clip_embeddings" in result.output
    assert _by_name(out) == {
        "orig.mp4": ("other.mp4", False),
        "copy.mp4": ("copy.mp4", True),  # the planted vector differs from the orig's
        "other.mp4": ("other.mp4", True),
    }

    # Rows of other CLIP weights do not count: computed, and the true groups come back.
    _publish_embeddings(store, settings, planted, "0" * 64)
    result, out = _dedup(meta)
    assert "embeddings computed" in result.output
    assert _by_name(out)["other.mp4"] == ("other.mp4", True) and _by_name(out)["orig.mp4"] == (
        "copy.mp4",
        False,
    )

    # A clip missing from the table: only that one is computed, the others are reused.
    del planted[clips / "copy.mp4"]
    _publish_embeddings(store, settings, planted, sha)
    result, out = _dedup(meta)
    assert "reused from the platform's clip_embeddings, 1 computed" in result.output
    assert _by_name(out)["orig.mp4"] == ("other.mp4", False)  # the planted vectors still count

    # A clip the platform could not read (its one row has no embedding): nothing is computed for it.
    unreadable = {"video_id": video_id_for(str(clips / "copy.mp4")), "frame_index": None, "frame_point": None,
                  "embedding": None, "num_frames": None, "error": "truncated", "model": "clip:clip_tiny_openai.pt",
                  "weights_sha256": sha, "params": {}, "run_id": "r1", "code_version": "test",
                  "scored_at": pd.Timestamp("2026-01-01", tz="UTC")}  # fmt: skip
    store.publish(pd.DataFrame([unreadable]), "clip_embeddings", "b2")
    result, out = _dedup(meta)
    assert "embeddings reused from the platform's clip_embeddings" in result.output
    assert "computed" not in result.output
    assert _by_name(out)["copy.mp4"] == ("", True)  # kept, in no group


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--threshold", "1.5"], "'--threshold': 1.5 is not in the range -1<=x<=1"),
        (["--threshold", "nan"], "'--threshold': 'nan' is not a finite number"),
        (["--device", "tpu"], "unknown device 'tpu'"),
    ],
)
def test_bad_options_are_one_error_line(vidscore_env, clips, tmp_path, args, expected) -> None:
    meta = _meta(tmp_path, clips, aes=AES)
    result = CliRunner().invoke(main, ["dedup", str(meta), *args])
    assert result.exit_code == (1 if "device" in args[0] else 2)  # a bad number is a usage error
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], result.output
    assert not meta.with_name("meta_dedup.csv").exists()


def test_a_missing_meta_file_or_missing_weights_is_one_error_line(
    vidscore_env, clips, tmp_path, monkeypatch
) -> None:
    result = CliRunner().invoke(main, ["dedup", str(tmp_path / "nope.csv")])
    assert result.exit_code == 1 and result.output.strip().splitlines() == [
        f"error: meta file not found: {tmp_path / 'nope.csv'}"
    ]
    monkeypatch.setenv("VIDSCORE_CLIP_WEIGHTS", str(tmp_path / "absent.pt"))
    result = CliRunner().invoke(main, ["dedup", str(_meta(tmp_path, clips, aes=AES))])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 1 and len(lines) == 1 and lines[0].startswith("error: ")
    assert "absent.pt" in lines[0]
