"""Open-Sora style scoring of a meta file: every input row and column survives, each caption is scored."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from vidscore_core.csv_commands.score_csv import input_rows, score_file
from vidscore_core.scoring.options import JobOptions


@pytest.fixture
def settings(vidscore_env):
    return vidscore_env[0]


def options(flow: str | None = None) -> JobOptions:
    return JobOptions(device="cpu", num_workers=1, batch_size=4, score_options={"flow": {"backend": flow}} if flow else {})


def test_a_clip_listed_with_two_captions_gets_each_captions_score(settings, fixtures, tmp_path):
    clip = str(fixtures / "media/pan_hubble_right_5px.mp4")
    captions = ["a starry night sky full of distant galaxies", "a red double-decker bus in the rain"]
    meta = tmp_path / "pairs.csv"
    pd.DataFrame({"path": [clip, clip, clip], "text": [captions[0], captions[1], captions[0]]}).to_csv(meta, index=False)
    result = score_file("matching", meta, settings, options())
    scored = pd.read_csv(result.output)
    assert result.scored == {"matching": "3 scored, 0 with errors"} and scored["text"].tolist() == [*captions, captions[0]]
    assert scored.loc[0, "match"] != scored.loc[1, "match"]
    assert scored.loc[0, "match"] == scored.loc[2, "match"]
    # Each pair's score is the one that caption gets when it is the clip's only row.
    for i, caption in enumerate(captions):
        alone = tmp_path / f"alone{i}.csv"
        pd.DataFrame({"path": [clip], "text": [caption]}).to_csv(alone, index=False)
        single = pd.read_csv(score_file("matching", alone, settings, options()).output)
        assert scored.loc[i, "match"] == pytest.approx(single.loc[0, "match"], abs=1e-6)


def test_score_all_gives_each_caption_its_own_match_as_score_matching_does(settings, fixtures, tmp_path):
    clip = str(fixtures / "media/pan_hubble_right_5px.mp4")
    meta = tmp_path / "pairs.csv"
    pd.DataFrame({"path": [clip, clip], "text": ["distant galaxies", "a red bus"]}).to_csv(meta, index=False)
    together = pd.read_csv(score_file("all", meta, settings, options(flow="dis")).output)
    alone = pd.read_csv(score_file("matching", meta, settings, options()).output)
    assert together["match"].tolist() == alone["match"].tolist()
    assert together.loc[0, "match"] != together.loc[1, "match"]
    assert together["aes"].nunique() == 1 and together["flow"].nunique() == 1  # one clip: one value, twice


def test_a_clip_is_decoded_once_whatever_its_captions(settings, fixtures, tmp_path, monkeypatch):
    from vidscore_core.scoring import score_jobs as jobs

    calls: list[int] = []
    real = jobs.run_parts

    def counting(parts, clips, **kw):
        calls.append(len(list(clips)))
        return real(parts, clips, **kw)

    monkeypatch.setattr(jobs, "run_parts", counting)
    clip = str(fixtures / "media/pan_hubble_right_5px.mp4")
    meta = tmp_path / "pairs.csv"
    pd.DataFrame({"path": [clip] * 4, "text": ["one", "two", "three", "four"]}).to_csv(meta, index=False)
    scored = pd.read_csv(score_file("matching", meta, settings, options()).output)
    assert calls == [1] and scored["match"].nunique() == 4


def test_every_input_column_survives_whatever_its_name(settings, fixtures, tmp_path):
    media = fixtures / "media"
    source = pd.DataFrame(
        {
            "video_id": ["mine-1", "mine-2", "mine-3"],
            "path": [str(media / "pan_hubble_right_5px.mp4"), str(media / "image_colorwheel.jpg"),
                     str(media / "pan_hubble_right_5px.mp4")],  # fmt: skip
            "meta_row": [10, 20, 30],
            "text": ["galaxies", "a colour wheel", "galaxies again"],
            "path_original": ["s3://bucket/a.mp4", "s3://bucket/b.jpg", "s3://bucket/a.mp4"],
            "input:video_id": ["x", "y", "z"],
        }
    )
    meta = tmp_path / "named.csv"
    source.to_csv(meta, index=False)
    for task, column in (("aesthetic", "aes"), ("matching", "match")):
        scored = pd.read_csv(score_file(task, meta, settings, options()).output)
        assert list(scored.columns) == [*source.columns, column, f"{column}_error"], task
        pd.testing.assert_frame_equal(scored[source.columns], source)
        assert scored[column].notna().all(), scored[f"{column}_error"].tolist()
    raw, ids = input_rows(meta)
    pd.testing.assert_frame_equal(raw, source, check_dtype=False)
    assert ids[0] == ids[2] != ids[1] and ids[0] != "mine-1"


def test_filter_keeps_a_video_id_column_too(tmp_path):
    from vidscore_core.curation.filters import FilterSpec, filter_meta_file

    scored = tmp_path / "m_aes.csv"
    pd.DataFrame({"path": ["a.mp4", "b.mp4"], "video_id": ["mine-a", "mine-b"], "aes": [5.0, 3.0]}).to_csv(
        scored, index=False
    )
    out, kept, total = filter_meta_file(scored, FilterSpec(aesmin=4.0), output=tmp_path / "kept.csv")
    got = pd.read_csv(Path(out))
    assert (kept, total) == (1, 2) and got["video_id"].tolist() == ["mine-a"]


def test_score_all_decodes_each_clip_once_for_every_score(settings, fixtures, tmp_path, monkeypatch):
    """`vidscore score all`: the CLIP frames of aesthetic and matching and the flow frames come from
    one pass over each file, and the scores are those of each `vidscore score <name>` alone."""
    import importlib
    import os
    from collections import Counter

    decode = importlib.import_module("vidscore_core.media.decode")
    log = tmp_path / "passes.log"
    # Every way a pass over a file starts: the usual decoders, the scaled every-frame pass of shots
    # alone, and the joint pass that serves both.
    passes = ("_read_frames", "_read_scaled", "_read_joint")
    real = {name: getattr(decode, name) for name in passes}

    def counting(name):
        def count(path, *args):  # runs in the forked decode workers too
            with open(log, "a") as f:
                f.write(os.path.basename(path) + "\n")
            return real[name](path, *args)

        return count

    meta = tmp_path / "meta.csv"
    source = pd.read_csv(fixtures / "media/meta.csv")
    source.assign(path=[str(fixtures / p) for p in source["path"]]).to_csv(meta, index=False)
    for name in passes:
        monkeypatch.setattr(decode, name, counting(name))
    result = score_file("all", meta, settings, options(flow="dis"))
    for name in passes:
        monkeypatch.setattr(decode, name, real[name])
    passes = Counter(log.read_text().splitlines())
    readable = [Path(p).name for p in source["path"] if "bad" not in p]
    assert readable and all(passes[name] == 1 for name in readable), passes
    together = pd.read_csv(result.output)
    for task, column in (("aesthetic", "aes"), ("matching", "match"), ("flow", "flow"), ("ocr", "ocr"),
                         ("shots", "shots")):  # fmt: skip
        alone = pd.read_csv(score_file(task, meta, settings, options(flow="dis")).output)
        # The same computation whichever command asks: the same bits, not merely close values.
        assert together[column].fillna(-1.0).tolist() == alone[column].fillna(-1.0).tolist(), task
        assert together[f"{column}_error"].fillna("").tolist() == alone[f"{column}_error"].fillna("").tolist()
