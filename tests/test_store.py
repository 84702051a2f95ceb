"""The DuckDB store: schema, migration, stage-then-commit, locking across processes, hostile strings."""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vidscore_core import schema
from vidscore_core.store import Store, utc_now

SPAWN = mp.get_context("spawn")


def _scores(batch: str, ids: list[str], aes: float = 5.0) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "video_id": ids,
            "batch": batch,
            "aes": [aes + i for i in range(len(ids))],
            "aes_frames": [[aes, aes, aes] for _ in ids],
            "frame_indices": [[0, 4, 8] for _ in ids],
            "num_frames": 10,
            "model": "ViT-L-14+laion",
            "params": [{"points": [0.1, 0.5, 0.9]} for _ in ids],
            "run_id": "run-1",
            "scored_at": utc_now(),
        }
    )


def _commit(store: Store, tmp: Path, table: str, batch: str, df: pd.DataFrame) -> int:
    return store.commit_partition(table, batch, store.stage(df, table, batch, tmp / "staging"))


def _rows(store: Store, table: str) -> pd.DataFrame:
    return store.query_df(f"SELECT * FROM {table} ORDER BY batch, video_id")


# -- schema --------------------------------------------------------------------------------------


def test_ensure_schema_creates_every_table_and_the_view(tmp_path: Path) -> None:
    store = Store(tmp_path / "v.duckdb")
    store.ensure_schema()
    found = set(store.query_df("SELECT table_name FROM duckdb_tables()")["table_name"])
    assert set(schema.TABLES) | {schema.META_TABLE} <= found
    for table, cols in schema.TABLES.items():
        got = store.query_df(f"DESCRIBE {table}")
        assert list(got["column_name"]) == [c for c, _ in cols]
    assert store.query_df("SELECT * FROM video_scores").empty
    assert store.schema_version() == schema.SCHEMA_VERSION
    # Users write `match` unquoted.
    assert store.query_df("SELECT match FROM matching_scores").columns.tolist() == ["match"]

    before = store.query_df("SELECT * FROM vidscore_meta ORDER BY key")
    Store(tmp_path / "v.duckdb").ensure_schema()  # a second process's first call: a no-op
    pd.testing.assert_frame_equal(store.query_df("SELECT * FROM vidscore_meta ORDER BY key"), before)


def test_old_table_gains_missing_columns_and_keeps_its_rows(tmp_path: Path) -> None:
    db = tmp_path / "v.duckdb"
    with duckdb.connect(str(db)) as con:  # an older vidscore's table
        con.execute("CREATE TABLE aesthetic_scores (video_id VARCHAR, batch VARCHAR, aes DOUBLE)")
        con.execute("INSERT INTO aesthetic_scores VALUES ('v1', 'b0', 4.5), ('v2', 'b0', 6.0)")
    store = Store(db)
    store.ensure_schema()
    got = _rows(store, "aesthetic_scores")
    assert list(got.columns) == [c for c, _ in schema.TABLES["aesthetic_scores"]]
    assert got["aes"].tolist() == [4.5, 6.0]
    assert got["error"].isna().all() and got["scored_at"].isna().all()
    # New writes use the new columns.
    _commit(store, tmp_path, "aesthetic_scores", "b1", _scores("b1", ["v3"]))
    assert store.partition_counts("aesthetic_scores") == {"b0": 2, "b1": 1}


def test_ensure_schema_on_a_current_database_needs_no_write_lock(tmp_path: Path) -> None:
    Store(tmp_path / "v.duckdb").ensure_schema()
    held = SPAWN.Event()
    # A user's read-only SQL session blocks writers; a current schema must not need one.
    proc = SPAWN.Process(target=_hold_connection, args=(str(tmp_path / "v.duckdb"), held, 1.0, True))
    proc.start()
    try:
        assert held.wait(timeout=60)
        Store(tmp_path / "v.duckdb", lock_timeout_s=0.2).ensure_schema()
    finally:
        proc.join(timeout=60)


def test_quote_ident_accepts_only_schema_names() -> None:
    assert schema.quote_ident("match") == '"match"'
    with pytest.raises(ValueError):
        schema.quote_ident('videos"; DROP TABLE videos; --')


# -- commit --------------------------------------------------------------------------------------


def test_commit_is_idempotent_and_replaces_only_its_partition(tmp_path: Path) -> None:
    store = Store(tmp_path / "v.duckdb")
    assert _commit(store, tmp_path, "aesthetic_scores", "b0", _scores("b0", ["a", "b"])) == 2
    assert _commit(store, tmp_path, "aesthetic_scores", "b1", _scores("b1", ["c"])) == 1
    b1 = store.query_df("SELECT * FROM aesthetic_scores WHERE batch = 'b1'")

    assert _commit(store, tmp_path, "aesthetic_scores", "b0", _scores("b0", ["a", "b"])) == 2
    assert store.partition_counts("aesthetic_scores") == {"b0": 2, "b1": 1}

    _commit(store, tmp_path, "aesthetic_scores", "b0", _scores("b0", ["x"], aes=7.0))
    got = _rows(store, "aesthetic_scores")
    assert got[got.batch == "b0"][["video_id", "aes"]].values.tolist() == [["x", 7.0]]
    pd.testing.assert_frame_equal(store.query_df("SELECT * FROM aesthetic_scores WHERE batch = 'b1'"), b1)
    assert got["aes_frames"].iloc[-1].tolist() == [5.0, 5.0, 5.0]
    assert str(got["scored_at"].dt.tz) == "UTC"  # tz-aware, shown in UTC on every machine

    assert store.delete_partition("aesthetic_scores", "b0") == 1
    assert store.partitions("aesthetic_scores") == {"b1"}


def test_filtered_videos_is_partitioned_by_preset(tmp_path: Path) -> None:
    store = Store(tmp_path / "v.duckdb")
    df = pd.DataFrame(
        {"video_id": ["a", "b"], "batch": ["b0", "b1"], "aes": [5.0, 6.0], "match": [21.0, 25.0]}
    )
    _commit(store, tmp_path, "filtered_videos", "default", df.assign(filter_spec='{"aesmin": 4.5}'))
    _commit(store, tmp_path, "filtered_videos", "strict", df.iloc[1:])
    _commit(store, tmp_path, "filtered_videos", "default", df.iloc[:1])
    assert store.partition_counts("filtered_videos") == {"default": 1, "strict": 1}


def _commit_many(db: str, staging: str, worker: int, n: int) -> None:
    store = Store(Path(db))
    for i in range(n):
        batch = f"w{worker}-{i:03d}"
        _commit(store, Path(staging), "aesthetic_scores", batch, _scores(batch, [f"v{j}" for j in range(20)]))


def test_two_processes_commit_at_the_same_time(tmp_path: Path) -> None:
    # The database does not exist yet: both processes also race to create it.
    procs = [
        SPAWN.Process(target=_commit_many, args=(str(tmp_path / "v.duckdb"), str(tmp_path), w, 15))
        for w in (0, 1)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0, 0]
    counts = Store(tmp_path / "v.duckdb").partition_counts("aesthetic_scores")
    assert counts == {f"w{w}-{i:03d}": 20 for w in (0, 1) for i in range(15)}


def _stage_then_crash(db: str, staging: str) -> None:
    store = Store(Path(db))
    store.stage(_scores("b0", ["new1", "new2", "new3"], aes=9.0), "aesthetic_scores", "b0", Path(staging))
    os._exit(3)  # killed after the GPU work, before the commit


def test_crash_before_commit_leaves_table_unchanged_and_staged_file_commits(tmp_path: Path) -> None:
    store = Store(tmp_path / "v.duckdb")
    _commit(store, tmp_path, "aesthetic_scores", "b0", _scores("b0", ["old"]))
    before = _rows(store, "aesthetic_scores")

    proc = SPAWN.Process(
        target=_stage_then_crash, args=(str(tmp_path / "v.duckdb"), str(tmp_path / "staging"))
    )
    proc.start()
    proc.join(timeout=60)
    assert proc.exitcode == 3
    pd.testing.assert_frame_equal(_rows(store, "aesthetic_scores"), before)

    staged = tmp_path / "staging" / "aesthetic_scores" / "b0.parquet"
    assert [p.name for p in staged.parent.iterdir()] == ["b0.parquet"]  # no temp file left behind
    assert store.commit_partition("aesthetic_scores", "b0", staged) == 3
    assert _rows(store, "aesthetic_scores")["video_id"].tolist() == ["new1", "new2", "new3"]


def test_rows_of_another_batch_are_refused(tmp_path: Path) -> None:
    store = Store(tmp_path / "v.duckdb")
    _commit(store, tmp_path, "aesthetic_scores", "b0", _scores("b0", ["a"]))
    before = _rows(store, "aesthetic_scores")
    with pytest.raises(ValueError, match="b0"):
        store.stage(_scores("b1", ["x"]), "aesthetic_scores", "b0", tmp_path / "staging")

    stray = tmp_path / "stray.parquet"
    mixed = pd.concat([_scores("b0", ["x"]), _scores("b1", ["y"])])
    pq.write_table(pa.Table.from_pandas(mixed[["video_id", "batch", "aes"]], preserve_index=False), stray)
    with pytest.raises(ValueError, match="b1"):
        store.commit_partition("aesthetic_scores", "b0", stray)
    pq.write_table(pa.table({"video_id": ["x"], "batch": ["b0"], "not_a_column": [1]}), stray)
    with pytest.raises(ValueError, match="not_a_column"):
        store.commit_partition("aesthetic_scores", "b0", stray)
    pd.testing.assert_frame_equal(_rows(store, "aesthetic_scores"), before)


def test_stage_refuses_what_the_table_cannot_hold(tmp_path: Path) -> None:
    store = Store(tmp_path / "v.duckdb")
    with pytest.raises(ValueError, match="num_frames"):
        store.stage(
            pd.DataFrame({"video_id": ["a"], "num_frames": [1.5]}), "aesthetic_scores", "b0", tmp_path
        )
    with pytest.raises(ValueError, match="unknown_col"):
        store.stage(pd.DataFrame({"video_id": ["a"], "unknown_col": [1]}), "aesthetic_scores", "b0", tmp_path)
    with pytest.raises(ValueError, match="params"):
        store.stage(
            pd.DataFrame({"video_id": ["a"], "params": ["{not json"]}), "aesthetic_scores", "b0", tmp_path
        )
    assert not (tmp_path / "aesthetic_scores").exists()


def test_failed_insert_rolls_back_the_delete(tmp_path: Path) -> None:
    store = Store(tmp_path / "v.duckdb")
    _commit(store, tmp_path, "aesthetic_scores", "b0", _scores("b0", ["a", "b"]))
    before = _rows(store, "aesthetic_scores")
    bad = tmp_path / "bad.parquet"
    # The last column fails to convert only after the delete ran.
    pq.write_table(pa.table({"video_id": ["x"], "batch": ["b0"], "aes": [1.0], "num_frames": ["many"]}), bad)
    with pytest.raises(duckdb.Error):
        store.commit_partition("aesthetic_scores", "b0", bad)
    pd.testing.assert_frame_equal(_rows(store, "aesthetic_scores"), before)


def test_hostile_strings_round_trip(tmp_path: Path) -> None:
    store = Store(tmp_path / "v.duckdb")
    batches = ["'; DROP TABLE videos; --", '../"quoted"/..', "日本語-🎬"]
    for i, batch in enumerate(batches):
        df = pd.DataFrame(
            {
                "video_id": [f"{batch}#{i}"],
                "path": [f'/data/it\'s "{batch}".mp4'],
                "text": ["a caption with 'quotes', \"double\", \\ backslash, ünïcödé and 🐈‍⬛"],
                "extra": [{"note": batch, "n": i}],
                "exists": [True],
                "ingested_at": [utc_now()],
            }
        )
        _commit(store, tmp_path, "videos", batch, df)
    assert store.partitions("videos") == set(batches)
    for batch in batches:
        got = store.query_df(
            "SELECT path, text, extra ->> 'note' AS note FROM videos WHERE batch = ?", [batch]
        )
        assert got["path"].tolist() == [f'/data/it\'s "{batch}".mp4']
        assert got["note"].tolist() == [batch]
        assert got["text"][0].endswith("ünïcödé and 🐈‍⬛")
    named = store.query_df("SELECT count(*) AS n FROM videos WHERE batch = $b", {"b": batches[0]})
    assert named["n"].tolist() == [1]
    # Every staged file stayed inside the staging directory.
    staged = [p for p in (tmp_path / "staging").rglob("*") if p.is_file()]
    assert len(staged) == 3 and all(p.parent == tmp_path / "staging" / "videos" for p in staged)
    assert store.delete_partition("videos", batches[0]) == 1
    assert store.partitions("videos") == set(batches[1:])


# -- reading -------------------------------------------------------------------------------------


def _hold_connection(db: str, held: mp.synchronize.Event, seconds: float, read_only: bool = False) -> None:
    con = duckdb.connect(db, read_only=read_only)
    held.set()
    time.sleep(seconds)
    con.close()


def test_query_df_waits_for_a_writer_then_answers(tmp_path: Path) -> None:
    store = Store(tmp_path / "v.duckdb")
    _commit(store, tmp_path, "aesthetic_scores", "b0", _scores("b0", ["a"]))
    held = SPAWN.Event()
    proc = SPAWN.Process(target=_hold_connection, args=(str(tmp_path / "v.duckdb"), held, 2.0))
    proc.start()
    try:
        assert held.wait(timeout=60)
        with pytest.raises(TimeoutError, match="v.duckdb"):
            Store(tmp_path / "v.duckdb", lock_timeout_s=0.3).query_df("SELECT 1")
        start = time.monotonic()
        got = store.query_df("SELECT count(*) AS n FROM aesthetic_scores")
        assert got["n"].tolist() == [1]
        assert time.monotonic() - start > 0.5  # it really waited for the writer to go
    finally:
        proc.join(timeout=60)


def test_query_df_on_a_new_database_creates_the_schema(tmp_path: Path) -> None:
    store = Store(tmp_path / "sub" / "v.duckdb")
    assert store.query_df("SELECT * FROM video_scores").empty


def test_video_scores_has_one_row_per_video(tmp_path: Path) -> None:
    store = Store(tmp_path / "v.duckdb")
    for batch, ids in {"b0": ["a", "b"], "b1": ["c"]}.items():
        _commit(
            store,
            tmp_path,
            "videos",
            batch,
            pd.DataFrame({"video_id": ids, "path": [f"{i}.mp4" for i in ids]}),
        )
    got = store.query_df("SELECT * FROM video_scores ORDER BY video_id")
    assert got["video_id"].tolist() == ["a", "b", "c"]
    assert got[["aes", "aes_error", "flow", "flow_error", "match", "match_error"]].isna().all().all()

    _commit(store, tmp_path, "aesthetic_scores", "b0", _scores("b0", ["a"]))
    errors = pd.DataFrame({"video_id": ["b"], "match": [None], "error": ["cannot decode"]})
    _commit(store, tmp_path, "matching_scores", "b0", errors)
    got = store.query_df("SELECT video_id, aes, match, match_error FROM video_scores ORDER BY video_id")
    assert got["video_id"].tolist() == ["a", "b", "c"]
    assert got["aes"].tolist()[0] == 5.0 and got["aes"].isna().tolist() == [False, True, True]
    assert got["match_error"].tolist()[1] == "cannot decode"
