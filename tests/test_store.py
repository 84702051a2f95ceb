"""The table store: Parquet partitions published atomically, DuckDB views over them, no locks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vidscore_core.settings import Settings
from vidscore_core.tables import schema
from vidscore_core.tables.store import SETTLE_S, TableStore, utc_now, version_name
from vidscore_core.tables.views import connect_read_only, pin_current_files, write_views

REPO = Path(__file__).resolve().parents[1]


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


def _rows(store: TableStore, table: str) -> pd.DataFrame:
    return store.query_df(f"SELECT * FROM {table} ORDER BY batch, video_id")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", tables="")


# -- layout and views ----------------------------------------------------------------------------


def test_views_cover_every_table_with_its_columns_even_when_empty(settings: Settings) -> None:
    write_views(settings)
    store = TableStore.from_settings(settings)
    con = connect_read_only(settings.db_path, store)
    try:
        for table in schema.PUBLIC_TABLES:
            described = con.execute(f"DESCRIBE {table}").df()
            assert list(described["column_name"]) == [c for c, _ in schema.columns(table)]
        assert con.execute("SELECT * FROM video_scores").df().empty
        json_type = dict(zip(*con.execute("DESCRIBE videos").df()[["column_name", "column_type"]].T.values, strict=True))
        assert json_type["extra"] == "JSON" and json_type["ingested_at"] == "TIMESTAMP WITH TIME ZONE"
        # Users write `match` unquoted.
        assert con.execute("SELECT match FROM matching_scores").df().empty
    finally:
        con.close()


def test_an_old_file_without_a_new_column_reads_it_as_null(settings: Settings) -> None:
    store = TableStore.from_settings(settings)
    store.ensure_layout()
    old = pa.table({"video_id": ["a"], "batch": ["b0"], "aes": [6.5]})  # written before `model` existed
    folder = Path(store.table_dir("aesthetic_scores")) / "batch=b0"
    folder.mkdir()
    pq.write_table(old, folder / version_name())
    got = store.query_df("SELECT video_id, aes, model FROM aesthetic_scores")
    assert got["aes"].tolist() == [6.5] and got["model"].isna().all()
    write_views(settings)  # brings the old file to the current columns (as a new version), for the views
    time.sleep(SETTLE_S)
    assert pq.read_schema(store.partition_path("aesthetic_scores", "b0")).names == [
        c for c, _ in schema.columns("aesthetic_scores")
    ]
    con = connect_read_only(settings.db_path, store)
    try:
        assert con.execute("SELECT aes, model FROM aesthetic_scores").fetchall() == [(6.5, None)]
    finally:
        con.close()


def test_quote_ident_accepts_only_schema_names() -> None:
    assert schema.quote_ident("match") == '"match"'
    with pytest.raises(ValueError, match="unknown identifier"):
        schema.quote_ident('videos"; DROP TABLE videos; --')


def test_a_schema_1_database_is_migrated_without_losing_rows(settings: Settings) -> None:
    """Native DuckDB tables of an older vidscore become Parquet partitions and views of the same name."""
    settings.db_path.parent.mkdir(parents=True)
    with duckdb.connect(str(settings.db_path)) as con:
        con.execute("CREATE TABLE videos (video_id VARCHAR, batch VARCHAR, path VARCHAR, extra JSON)")
        con.execute("INSERT INTO videos VALUES ('a', 'b0', '/a.mp4', '{\"k\": 1}'), ('b', 'b1', '/b.mp4', NULL)")
        con.execute("CREATE TABLE aesthetic_scores (video_id VARCHAR, batch VARCHAR, aes DOUBLE)")
        con.execute("INSERT INTO aesthetic_scores VALUES ('a', 'b0', 5.5)")
    write_views(settings)
    store = TableStore.from_settings(settings)
    assert store.partition_counts("videos") == {"b0": 1, "b1": 1}
    con = connect_read_only(settings.db_path, store)
    try:
        assert con.execute("SELECT video_id, aes, extra->>'k' FROM video_scores ORDER BY 1").fetchall() == [
            ("a", 5.5, "1"),
            ("b", None, None),
        ]
    finally:
        con.close()


# -- publishing ----------------------------------------------------------------------------------


def test_publish_is_idempotent_and_replaces_only_its_partition(settings: Settings) -> None:
    store = TableStore.from_settings(settings)
    b0 = _scores("b0", ["a", "b"])
    store.publish(b0, "aesthetic_scores", "b0")
    store.publish(_scores("b1", ["c"]), "aesthetic_scores", "b1")
    first = _rows(store, "aesthetic_scores")
    store.publish(b0, "aesthetic_scores", "b0")
    pd.testing.assert_frame_equal(_rows(store, "aesthetic_scores"), first)
    # A re-run with fewer clips replaces the whole partition: no orphan rows survive.
    store.publish(_scores("b0", ["a"], aes=7.0), "aesthetic_scores", "b0")
    assert store.partition_counts("aesthetic_scores") == {"b0": 1, "b1": 1}
    assert _rows(store, "aesthetic_scores")["aes"].tolist() == [7.0, 5.0]
    assert store.delete("aesthetic_scores", "b1") and not store.delete("aesthetic_scores", "b1")
    assert store.partitions("aesthetic_scores") == {"b0"}


def test_filtered_videos_is_partitioned_by_preset(settings: Settings) -> None:
    store = TableStore.from_settings(settings)
    for preset in ("fair", "good"):
        rows = pd.DataFrame({"video_id": ["a"], "batch": ["b0"], "path": ["/a.mp4"], "filter_spec": ['{"aesmin": 5}']})
        store.publish(rows, "filtered_videos", preset)
    assert store.partitions("filtered_videos") == {"fair", "good"}
    assert Path(store.partition_path("filtered_videos", "good")).parent.name == "preset=good"


def test_rows_of_another_partition_or_unknown_columns_are_refused(settings: Settings) -> None:
    store = TableStore.from_settings(settings)
    with pytest.raises(ValueError, match="batch = \\['b1'\\]"):
        store.publish(_scores("b1", ["a"]), "aesthetic_scores", "b0")
    with pytest.raises(ValueError, match="not in table aesthetic_scores"):
        store.publish(_scores("b0", ["a"]).assign(flow=1.0), "aesthetic_scores", "b0")
    with pytest.raises(ValueError, match="cannot be stored as DOUBLE"):
        store.publish(_scores("b0", ["a"]).assign(aes="high"), "aesthetic_scores", "b0")
    assert not store.partitions("aesthetic_scores")


def test_a_publish_killed_mid_write_leaves_the_previous_version(settings: Settings, tmp_path: Path) -> None:
    """kill -9 while the new file is being written: readers keep seeing the old partition, whole."""
    store = TableStore.from_settings(settings)
    store.publish(_scores("b0", ["a", "b"]), "aesthetic_scores", "b0")
    before = _rows(store, "aesthetic_scores")
    script = textwrap.dedent(f"""
        import sys, pyarrow.parquet as pq
        import pandas as pd
        from vidscore_core.tables.store import TableStore
        real_write = pq.write_table
        def write_then_hang(table, where, **kw):
            real_write(table.slice(0, 1), where, **kw)  # part of the data is on disk...
            print("writing", flush=True)
            sys.stdin.read()  # ...and the process is killed here
        pq.write_table = write_then_hang
        rows = pd.DataFrame({{"video_id": ["x", "y", "z"], "aes": [1.0, 2.0, 3.0]}})
        TableStore({store.root!r}).publish(rows, "aesthetic_scores", "b0")
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, cwd=REPO)  # fmt: skip
    assert proc.stdout.readline().strip() == "writing"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    pd.testing.assert_frame_equal(_rows(store, "aesthetic_scores"), before)
    write_views(settings)
    con = connect_read_only(settings.db_path, store)
    try:
        assert con.execute("SELECT count(*) FROM aesthetic_scores").fetchone() == (2,)
    finally:
        con.close()


def test_hostile_strings_round_trip(settings: Settings) -> None:
    store = TableStore.from_settings(settings)
    batches = ["'; DROP TABLE videos; --", '../"quoted"/..', "日本語-🎬", ".hidden"]
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
        store.publish(df, "videos", batch)
    assert store.partitions("videos") == set(batches)
    for batch in batches:
        got = store.query_df("SELECT path, text, extra ->> 'note' AS note FROM videos WHERE batch = ?", [batch])
        assert got["path"].tolist() == [f'/data/it\'s "{batch}".mp4']
        assert got["note"].tolist() == [batch]
        assert got["text"][0].endswith("ünïcödé and 🐈‍⬛")
    named = store.query_df("SELECT count(*) AS n FROM videos WHERE batch = $b", {"b": batches[0]})
    assert named["n"].tolist() == [1]
    # Every file stayed inside the table's folder, none hidden.
    files = [p for p in Path(store.root).rglob("*") if p.is_file()]
    videos_dir = Path(store.table_dir("videos"))
    assert all(p.parent.parent.parent == Path(store.root) for p in files)
    assert sorted(p.name for p in videos_dir.iterdir() if p.name != "batch=!schema") == sorted(
        Path(store.partition_path("videos", b)).parent.name for b in batches
    )
    assert not any(p.name.startswith(".") for p in files)


def test_video_scores_has_one_row_per_video(settings: Settings) -> None:
    store = TableStore.from_settings(settings)
    for batch, ids in {"b0": ["a", "b"], "b1": ["c"]}.items():
        store.publish(pd.DataFrame({"video_id": ids, "path": [f"{i}.mp4" for i in ids]}), "videos", batch)
    got = store.query_df("SELECT * FROM video_scores ORDER BY video_id")
    assert got["video_id"].tolist() == ["a", "b", "c"]
    assert got[["aes", "aes_error", "flow", "flow_error", "match", "match_error"]].isna().all().all()

    store.publish(_scores("b0", ["a"]), "aesthetic_scores", "b0")
    store.publish(pd.DataFrame({"video_id": ["b"], "match": [None], "error": ["cannot decode"]}), "matching_scores", "b0")
    got = store.query_df("SELECT video_id, aes, match, match_error FROM video_scores ORDER BY video_id")
    assert got["video_id"].tolist() == ["a", "b", "c"]
    assert got["aes"].tolist()[0] == 5.0 and got["aes"].isna().tolist() == [False, True, True]
    assert got["match_error"].tolist()[1] == "cannot decode"
    # Queries can be limited to some batches (what a partition's checks read).
    assert store.query_df("SELECT count(*) AS n FROM videos", keys=["b1"])["n"].tolist() == [1]


# -- concurrency ---------------------------------------------------------------------------------

WRITER = """
import sys
import pandas as pd
from vidscore_core.tables.store import TableStore
root, batch, tag = sys.argv[1:4]
ids = [f"{batch}-{i}" for i in range(2000)]
rows = pd.DataFrame({"video_id": ids, "aes": [float(len(tag))] * len(ids), "run_id": tag})
for _ in range(20):
    TableStore(root).publish(rows, "aesthetic_scores", batch)
"""

READER = """
import sys, duckdb
con = duckdb.connect(sys.argv[1], read_only=sys.argv[2] == "ro")
print("open", flush=True)
for line in sys.stdin:
    try:
        print(con.execute(line).fetchall(), flush=True)
    except duckdb.Error as exc:
        print("ERROR", str(exc).splitlines()[0], flush=True)
"""


def test_writers_run_while_user_sessions_hold_the_database(settings: Settings) -> None:
    """8 writer processes (one batch written by two of them) while a user holds vidscore.duckdb
    open read-write: no writer waits or fails, no row is lost or doubled, the session sees them all."""
    write_views(settings)
    store = TableStore.from_settings(settings)
    session = subprocess.Popen([sys.executable, "-c", READER, str(settings.db_path), "rw"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True, cwd=REPO)  # fmt: skip
    try:
        assert session.stdout.readline().strip() == "open"
        jobs = [(f"b{i}", f"w{i}") for i in range(7)] + [("b0", "again")]
        writers = [
            subprocess.Popen([sys.executable, "-c", WRITER, store.root, batch, tag], cwd=REPO)
            for batch, tag in jobs
        ]
        # The session keeps querying while they write: every answer whole (each batch 0 or 2000 rows).
        answers = []
        while any(w.poll() is None for w in writers):
            session.stdin.write("SELECT count(*) FILTER (WHERE n NOT IN (2000)) FROM "
                                "(SELECT batch, count(*) AS n FROM aesthetic_scores GROUP BY batch)\n")  # fmt: skip
            session.stdin.flush()
            answers.append(session.stdout.readline().strip())
        assert [w.wait(timeout=300) for w in writers] == [0] * len(writers)
        assert answers and set(answers) == {"[(0,)]"}, [a for a in answers if a != "[(0,)]"][:3]
        session.stdin.write("SELECT count(*), count(DISTINCT video_id), count(DISTINCT batch) FROM aesthetic_scores\n")
        session.stdin.write("SELECT DISTINCT run_id FROM aesthetic_scores WHERE batch = 'b0'\n")
        session.stdin.flush()
        assert session.stdout.readline().strip() == "[(14000, 14000, 7)]"
        assert session.stdout.readline().strip() in ("[('w0',)]", "[('again',)]")  # one version, whole
    finally:
        session.stdin.close()
        session.wait(timeout=60)


def test_a_republish_is_a_new_file_and_the_old_one_stays_readable_until_cleanup(settings: Settings) -> None:
    store = TableStore.from_settings(settings)
    first = store.publish(_scores("b0", ["a", "b"]), "aesthetic_scores", "b0")
    write_views(settings)
    con = connect_read_only(settings.db_path, store)
    try:
        assert con.execute("SELECT count(*) FROM aesthetic_scores").fetchone() == (2,)  # a first publish shows at once
        second = store.publish(_scores("b0", ["c"], aes=7.0), "aesthetic_scores", "b0")
        assert second.path != first.path and Path(first.path).exists()  # a query that listed it still finds it
        assert store.partition_path("aesthetic_scores", "b0") == second.path
        assert _rows(store, "aesthetic_scores")["video_id"].tolist() == ["c"]
        # The views show the old version or the new one, never both.
        assert con.execute("SELECT list(video_id ORDER BY video_id) FROM aesthetic_scores").fetchone()[0] in (
            ["a", "b"], ["c"])  # fmt: skip
        time.sleep(SETTLE_S)
        assert con.execute("SELECT video_id, aes FROM aesthetic_scores").fetchall() == [("c", 7.0)]
    finally:
        con.close()
    assert store.cleanup("aesthetic_scores") == 0  # within the grace period nothing goes
    assert store.cleanup("aesthetic_scores", grace_s=0) == 1 and not Path(first.path).exists()
    assert _rows(store, "aesthetic_scores")["video_id"].tolist() == ["c"]


def test_pinned_views_read_one_version_and_see_a_republish_when_pinned_again(settings: Settings) -> None:
    """`vidscore sql`'s session: the files current when it opened, whole, even while the batch is
    republished (the old file stays for the grace period); pinning again shows the new version at once."""
    store = TableStore.from_settings(settings)
    first = store.publish(_scores("b0", ["a", "b"]), "aesthetic_scores", "b0")
    store.publish(_scores("b1", ["x"]), "aesthetic_scores", "b1")
    write_views(settings)
    con = connect_read_only(settings.db_path, store, snapshot=True)
    try:
        def b0() -> list[tuple]:
            return con.execute("SELECT video_id, aes FROM aesthetic_scores WHERE batch = 'b0' ORDER BY 1").fetchall()

        assert b0() == [("a", 5.0), ("b", 6.0)]
        store.publish(_scores("b0", ["c"], aes=7.0), "aesthetic_scores", "b0")
        assert b0() == [("a", 5.0), ("b", 6.0)] and Path(first.path).exists()  # its version, whole
        pin_current_files(con, store)
        assert b0() == [("c", 7.0)]  # no settling delay: the listing names the new file
        assert con.execute("SELECT count(*), count(DISTINCT batch) FROM aesthetic_scores").fetchone() == (2, 2)
        assert con.execute("SELECT aes FROM video_scores").fetchall() == []  # the join reads the pinned views too
        store.delete("aesthetic_scores", "b1")
        pin_current_files(con, store)
        assert con.execute("SELECT DISTINCT batch FROM aesthetic_scores").fetchall() == [("b0",)]
    finally:
        con.close()


@pytest.mark.parametrize("snapshot", [False, True], ids=["live", "pinned"])
def test_a_filter_on_batch_opens_only_that_batchs_folder(settings: Settings, snapshot: bool) -> None:
    store = TableStore.from_settings(settings)
    store.publish(_scores("b0", ["a"]), "aesthetic_scores", "b0")
    write_views(settings)
    broken = Path(store.table_dir("aesthetic_scores")) / "batch=b1"
    broken.mkdir()
    (broken / version_name()).write_bytes(b"not parquet at all")  # any read of this folder fails
    con = connect_read_only(settings.db_path, store, snapshot=snapshot)
    try:
        assert con.execute("SELECT video_id FROM aesthetic_scores WHERE batch = 'b0'").fetchall() == [("a",)]
        with pytest.raises(duckdb.Error):
            con.execute("SELECT count(*) FROM aesthetic_scores").fetchall()
    finally:
        con.close()


def test_tables_of_the_earlier_flat_layout_are_adopted(settings: Settings) -> None:
    table_dir = Path(settings.tables_root) / "aesthetic_scores"
    table_dir.mkdir(parents=True)
    pq.write_table(pa.table({"video_id": ["a"], "batch": ["b 0"], "aes": [6.5]}), table_dir / "batch=b%200.parquet")
    pq.write_table(pa.table({"video_id": pa.array([], pa.string())}), table_dir / "_schema.parquet")
    write_views(settings)
    store = TableStore.from_settings(settings)
    assert store.partitions("aesthetic_scores") == {"b 0"}
    assert not (table_dir / "_schema.parquet").exists()
    con = connect_read_only(settings.db_path, store)
    try:
        assert con.execute("SELECT batch, aes FROM aesthetic_scores").fetchall() == [("b 0", 6.5)]
    finally:
        con.close()
