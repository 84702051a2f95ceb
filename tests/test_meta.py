"""Meta files: every row accounted for, paths resolved, stable ids and batch keys."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
import pytest

from vidscore_core.ingest.meta import (
    MetaError,
    batch_keys,
    file_column_name,
    input_column_name,
    read_meta,
    sanitize_key_part,
    video_id_for,
)

KEY_RE = re.compile(r"^[a-z0-9_]{1,40}-[0-9a-f]{8}-\d{5}$")


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode(encoding))
    return path


def test_fixture_meta_resolves_to_the_files(fixtures: Path) -> None:
    df = read_meta(fixtures / "media" / "meta.csv")
    assert len(df) == 5 and df["meta_row"].tolist() == [0, 1, 2, 3, 4]
    # The file sits in media/ and lists "media/...": resolved under its parent, where the files are.
    assert all(Path(p).is_file() for p in df["path"])
    assert df["path"][0] == os.path.join(str(fixtures), "media", "pan_hubble_right_5px.mp4")
    assert df["path_original"][0] == "media/pan_hubble_right_5px.mp4"
    assert df["video_id"].tolist() == [video_id_for(p) for p in df["path"]]
    assert df["text"][0].startswith("Hubble deep field")
    assert {"kind", "gt_flow", "num_frames"} <= set(df.columns)


def test_relative_paths_resolve_against_the_meta_folder(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.mp4").write_bytes(b"x")
    meta = write(
        tmp_path / "data" / "meta.csv", "path,text\na.mp4,one\nsub/../b.mp4,two\n/abs/./c.mp4,three\n"
    )
    df = read_meta(meta)
    assert df["path"].tolist() == [
        str(tmp_path / "data" / "a.mp4"),
        str(tmp_path / "data" / "b.mp4"),  # normalised, even where the file does not exist
        "/abs/c.mp4",
    ]
    assert df["path_original"].tolist() == ["a.mp4", "sub/../b.mp4", "/abs/./c.mp4"]
    other = read_meta(meta, base_dir=tmp_path / "elsewhere")
    assert other["path"][0] == str(tmp_path / "elsewhere" / "a.mp4")


def test_duplicate_paths_are_one_video(tmp_path: Path) -> None:
    meta = write(tmp_path / "m.csv", "path,text\na.mp4,first\n./a.mp4,again\nb.mp4,other\na.mp4,third\n")
    df = read_meta(meta)
    assert df["meta_row"].tolist() == [0, 2] and df["text"].tolist() == ["first", "other"]
    assert df.index.tolist() == [0, 1]
    assert len(read_meta(meta, drop_duplicates=False)) == 4


def test_other_columns_are_kept(tmp_path: Path) -> None:
    meta = write(tmp_path / "m.csv", "path,num_frames,score,note\na.mp4,48,0.5,x\nb.mp4,,1.5,\n")
    df = read_meta(meta)
    assert list(df.columns[:4]) == ["path", "num_frames", "score", "note"]
    assert df["score"].tolist() == [0.5, 1.5] and df["num_frames"].iloc[0] == 48
    assert pd.isna(df["num_frames"].iloc[1]) and pd.isna(df["note"].iloc[1])
    assert "text" not in df.columns


def test_captions_round_trip_csv_and_parquet(tmp_path: Path) -> None:
    captions = [
        'a "quoted" caption, with commas',
        "two\nlines",
        "unicode: ä β 漢字 🎬",
        "None",  # a literal word, not a missing value
        "NA",
        None,
    ]
    paths = ['clip "1".mp4', "clip,2.mp4", "clip\n3.mp4", "ä β 漢.mp4", "NA", "n.mp4"]
    frame = pd.DataFrame({"path": paths, "text": captions, "n": range(6)})
    frame.to_csv(tmp_path / "m.csv", index=False)
    frame.to_parquet(tmp_path / "m.parquet", index=False)
    frame.to_csv(tmp_path / "m.tsv", index=False, sep="\t")
    for name in ("m.csv", "m.parquet", "m.tsv"):
        df = read_meta(tmp_path / name)
        assert df["text"].tolist() == captions, name
        assert df["path_original"].tolist() == paths, name
        assert df["path"].tolist() == [str(tmp_path / p) for p in paths], name
        assert df["n"].tolist() == list(range(6))


def test_utf8_with_byte_order_mark(tmp_path: Path) -> None:
    meta = write(tmp_path / "m.csv", "\ufeffpath,text\na.mp4,café\n")
    assert read_meta(meta)["text"].tolist() == ["café"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "not found"),
        ("", "empty (0 bytes)"),
        ("\n\n", "empty"),
        ("path,text\n", "no rows"),
        ("file,caption\na.mp4,x\n", "no 'path' column; columns found: 'file', 'caption'"),
        (
            "path,text\na.mp4,x\n,y\nb.mp4,z\n  ,w\n",
            "2 row(s) have an empty path (0-based data rows, header not counted): 1, 3",
        ),
    ],
)
def test_unusable_meta_files_say_why(tmp_path: Path, content: str | None, message: str) -> None:
    meta = tmp_path / "m.csv"
    if content is not None:
        write(meta, content)
    with pytest.raises(MetaError, match=re.escape(message)):
        read_meta(meta)


def test_latin1_file_asks_for_utf8(tmp_path: Path) -> None:
    meta = write(tmp_path / "m.csv", "path,text\nä.mp4,café\n", encoding="latin-1")
    with pytest.raises(MetaError, match="not valid UTF-8.*re-save it as UTF-8"):
        read_meta(meta)


def test_unsupported_suffix(tmp_path: Path) -> None:
    with pytest.raises(MetaError, match="unsupported meta file type '.json'"):
        read_meta(write(tmp_path / "m.json", '{"path": "a.mp4"}'))


def test_video_id_is_stable() -> None:
    # sha256("/data/clips/a.mp4")[:16], the same on every machine and in every process.
    assert video_id_for("/data/clips/a.mp4") == "f8c1421345b736d8"
    assert video_id_for("/data/clips/b.mp4") != video_id_for("/data/clips/a.mp4")
    assert re.fullmatch(r"[0-9a-f]{16}", video_id_for("/x/clip \"ä'β 漢.mp4"))


def test_batch_keys_are_deterministic_and_sanitized() -> None:
    keys = batch_keys("/data/meta/My Meta-File (v2).csv", 12001, 5000)
    # sha256("/data/meta/My Meta-File (v2).csv")[:8] = 3def4492
    assert keys == [f"my_meta_file_v2-3def4492-{i:05d}" for i in range(3)]
    assert batch_keys("/data/meta/My Meta-File (v2).csv", 12001, 5000) == keys
    assert batch_keys("/data/meta/x.csv", 0, 10) == []
    (single,) = batch_keys("/data/meta/x.csv", 10, 10)
    assert single.startswith("x-") and single.endswith("-00000")
    assert batch_keys("/a/meta.csv", 1, 5)[0] != batch_keys("/b/meta.csv", 1, 5)[0]
    for name in ("/d/...csv", "/d/漢字.csv", "/d/" + "Long Name " * 10 + ".parquet", "/d/a__b--c.csv"):
        (key,) = batch_keys(name, 3, 5)
        assert KEY_RE.fullmatch(key), key
    assert sanitize_key_part("漢字") == "meta" and sanitize_key_part("A__b--C") == "a_b_c"
    assert len(sanitize_key_part("x" * 100)) == 40


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, None])
def test_batch_size_must_be_positive(bad) -> None:
    with pytest.raises(ValueError):
        batch_keys("/m.csv", 10, bad)


def test_manifests_keep_every_row_across_read_chunks(tmp_path: Path, monkeypatch) -> None:
    """The meta file is read in chunks: batches still follow the file, and a path listed again (another
    caption of the clip), in the same chunk or a later one, joins its clip's batch: one clip, every row."""
    from vidscore_core.ingest import batches as ingest
    from vidscore_core.tables.store import TableStore

    monkeypatch.setattr(ingest, "CHUNK_ROWS", 7)
    lines = "".join(f"v{i}.mp4,caption {i}\n" for i in range(23))
    lines += "v3.mp4,listed again\nv21.mp4,\nv22.mp4,third batch again\nv3.mp4,and again\n"
    meta = write(tmp_path / "big meta.csv", "path,text\n" + lines)
    store = TableStore(tmp_path / "tables")
    summary = ingest.write_manifests(meta, store, batch_size=10)
    assert list(summary.clips) == batch_keys(meta, 23, 10) and list(summary.clips.values()) == [10, 10, 3]
    assert (summary.rows, summary.repeated_rows, summary.repeated_paths, summary.no_caption) == (27, 4, 3, 1)
    assert "3 path(s) listed in more than one row (4 extra row(s))" in summary.lines()[0]
    manifests = {key: ingest.read_manifest(store, key) for key in summary.clips}
    first, _, third = manifests.values()
    assert first["meta_row"].tolist() == [*range(10), 23, 26]  # v3's later captions join its batch
    assert first.loc[first["path"].str.endswith("/v3.mp4"), "text"].tolist() == ["caption 3", "listed again", "and again"]
    assert third["meta_row"].tolist() == [20, 21, 22, 24, 25] and third["text"].isna().sum() == 1
    # `videos` probes each clip once: the first listing, with its caption.
    videos = ingest.probe_rows(first, "b0", workers=1)
    assert len(videos) == 10 and videos["text"].tolist()[3] == "caption 3"


def test_read_meta_keeps_colliding_columns_under_a_reversible_name(tmp_path):
    meta = tmp_path / "m.csv"
    pd.DataFrame({"path": ["a.mp4"], "video_id": ["v"], "meta_row": [7], "input:meta_row": [8], "k": [1]}).to_csv(
        meta, index=False
    )
    df = read_meta(meta)
    assert df["input:video_id"].tolist() == ["v"] and df["input:meta_row"].tolist() == [7]
    assert df["input:input:meta_row"].tolist() == [8] and df["meta_row"].tolist() == [0]
    assert df["video_id"].tolist() != ["v"]
    own = [c for c in df.columns if c not in ("path_original", "video_id", "meta_row")]
    assert [file_column_name(c) for c in own] == ["path", "video_id", "meta_row", "input:meta_row", "k"]
    assert all(file_column_name(input_column_name(c)) == c for c in ("video_id", "input:x", "path", "k"))
