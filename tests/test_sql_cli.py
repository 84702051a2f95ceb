"""`vidscore sql` through the real CLI in a subprocess: it reads the tables and never writes a file,
rebuilds an unreadable views database, streams its result, and prints a real table, valid CSV and
valid JSON."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from vidscore_core.settings import Settings
from vidscore_core.tables.store import TableStore
from vidscore_core.tables.views import write_views

EXE = str(Path(sys.executable).with_name("vidscore"))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A home with two published batches and the views written."""
    home = tmp_path / "home"
    settings = Settings(home=home)
    store = TableStore.from_settings(settings)
    store.publish(pd.DataFrame({"video_id": ["a", "b"], "path": ["/d/a,1.mp4", '/d/"b"\n.mp4'],
                                "text": ["ünï/cödé", None], "width": [640, None]}), "videos", "b0")  # fmt: skip
    store.publish(pd.DataFrame({"video_id": ["a", "b"], "aes": [5.5, None]}), "aesthetic_scores", "b0")
    store.publish(pd.DataFrame({"video_id": ["c"], "path": ["/d/c.mp4"]}), "videos", "b1")
    write_views(settings)
    return home


def vidscore_sql(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "VIDSCORE_HOME": str(home)}
    return subprocess.run([EXE, "sql", *args], env=env, capture_output=True, text=True, timeout=timeout)


def tree_digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


def assert_one_error_line(proc: subprocess.CompletedProcess, code: int) -> None:
    assert proc.returncode == code, proc.stdout + proc.stderr
    assert proc.stderr.startswith("error: ") and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stdout == ""


def test_sql_cannot_create_replace_or_delete_any_file(home: Path, tmp_path: Path) -> None:
    tables = home / "tables"
    current = TableStore(tables).partition_path("aesthetic_scores", "b0")
    before_tables, before_home = tree_digest(tables), tree_digest(home)
    fake = "SELECT * REPLACE (9.99 AS aes) FROM aesthetic_scores"
    attempts = {
        "replace a published partition": f"COPY ({fake}) TO '{current}' (FORMAT parquet)",
        "a new file in the tables root": f"COPY ({fake}) TO '{tables}/evil.csv'",
        "a new partition folder": f"COPY ({fake}) TO '{tables}/aesthetic_scores/batch=b9' (FORMAT parquet, PARTITION_BY (batch))",
        "beside the tables": f"COPY (SELECT 1) TO '{home}/evil.csv'",
        "elsewhere": f"COPY (SELECT 1) TO '{tmp_path}/evil.csv'",
        "export": f"EXPORT DATABASE '{tmp_path}/exported'",
        "attach a new database": f"ATTACH '{tmp_path}/other.duckdb' AS other",
        "attach the tables root": f"ATTACH '{tables}/x.duckdb' AS x",
        "a query, then a copy": f"SELECT 1; COPY (SELECT 1) TO '{tables}/evil2.csv'",
        "install an extension": "INSTALL httpfs",
        "drop a view": "DROP VIEW videos",
        "loosen the settings": "SET enable_external_access = true",
        "profile into a file": f"PRAGMA profiling_output = '{tables}/profile.json'",
    }
    for what, sql in attempts.items():
        proc = vidscore_sql(home, sql)
        assert proc.returncode != 0, what
        assert_one_error_line(proc, proc.returncode)
    assert tree_digest(tables) == before_tables  # nothing created, replaced or deleted
    assert tree_digest(home) == before_home
    assert not any(tmp_path.glob("evil*")) and not (tmp_path / "exported").exists()
    assert not (tmp_path / "other.duckdb").exists()
    # Reading outside the tables' folder is refused too; the tables stay readable.
    assert_one_error_line(vidscore_sql(home, "SELECT * FROM read_text('/etc/hostname')"), 1)
    proc = vidscore_sql(home, "SELECT count(*) AS n, sum(aes) AS s FROM aesthetic_scores", "--format", "csv")
    assert proc.returncode == 0 and proc.stdout.splitlines() == ["n,s", "2,5.5"]


@pytest.mark.parametrize("query", ["", "   \n\t"])
def test_an_empty_query_is_one_clear_error(home: Path, query: str) -> None:
    proc = vidscore_sql(home, query)
    assert_one_error_line(proc, 2)
    assert "empty query" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty"])
def test_an_unreadable_views_database_is_rebuilt(home: Path, damage: str) -> None:
    db = home / "vidscore.duckdb"
    data = db.read_bytes()
    db.write_bytes({"garbage": os.urandom(len(data)), "truncated": data[: len(data) // 3], "empty": b""}[damage])
    proc = vidscore_sql(home, "SELECT count(*) AS n FROM videos", "--format", "csv")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["n", "3"]
    assert len(list(home.glob("vidscore.duckdb.corrupt-*"))) == 1  # kept aside, not deleted
    assert vidscore_sql(home, "SELECT count(*) AS n FROM videos", "--format", "csv").stdout.splitlines()[1] == "3"


def test_sql_shows_a_republished_batch_at_once(home: Path) -> None:
    """Each `vidscore sql` reads the batches current when it starts: a republish shows in the next one."""
    store = TableStore.from_settings(Settings(home=home))
    query = ("SELECT batch, count(*), min(aes) FROM aesthetic_scores GROUP BY ALL ORDER BY 1", "--format", "csv")
    assert vidscore_sql(home, *query).stdout.splitlines()[1:] == ["b0,2,5.5"]
    store.publish(pd.DataFrame({"video_id": ["a"], "aes": [7.25]}), "aesthetic_scores", "b0")
    store.publish(pd.DataFrame({"video_id": ["c"], "aes": [3.0]}), "aesthetic_scores", "b1")
    assert vidscore_sql(home, *query).stdout.splitlines()[1:] == ["b0,1,7.25", "b1,1,3.0"]


def test_table_format_shows_null_and_the_row_count(home: Path) -> None:
    proc = vidscore_sql(home, "SELECT video_id, text, width FROM videos ORDER BY video_id")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split("|")[0].strip() == "video_id" and [c.strip() for c in lines[0].split("|")] == [
        "video_id", "text", "width"]  # fmt: skip
    assert set(lines[1]) <= {"-", "+"}
    rows = [[c.strip() for c in line.split("|")] for line in lines[2:-1]]
    assert rows == [["a", "ünï/cödé", "640"], ["b", "NULL", "NULL"], ["c", "NULL", "NULL"]]
    assert lines[-1] == "(3 rows)"
    assert "NaN" not in proc.stdout and "None" not in proc.stdout
    empty = vidscore_sql(home, "SELECT video_id FROM videos WHERE false")
    assert empty.returncode == 0 and empty.stdout.splitlines()[-1] == "(0 rows)"
    assert "Empty DataFrame" not in empty.stdout


def test_csv_and_json_are_valid(home: Path) -> None:
    sql = "SELECT video_id, path, text, width, 'nan'::DOUBLE AS x, [1, 2] AS l FROM videos ORDER BY video_id"
    as_csv = vidscore_sql(home, sql, "--format", "csv")
    assert as_csv.returncode == 0, as_csv.stderr
    rows = list(csv.reader(io.StringIO(as_csv.stdout)))
    assert rows[0] == ["video_id", "path", "text", "width", "x", "l"]
    assert rows[1] == ["a", "/d/a,1.mp4", "ünï/cödé", "640", "nan", "[1, 2]"]
    assert rows[2][:4] == ["b", '/d/"b"\n.mp4', "", ""]  # NULL is the empty cell
    as_json = vidscore_sql(home, sql, "--format", "json")
    assert as_json.returncode == 0, as_json.stderr
    assert "\\/" not in as_json.stdout and "ünï/cödé" in as_json.stdout
    records = json.loads(as_json.stdout)  # strict: NaN would not parse
    assert records[0] == {"video_id": "a", "path": "/d/a,1.mp4", "text": "ünï/cödé", "width": 640, "x": None,
                          "l": [1, 2]}  # fmt: skip
    assert records[1]["text"] is None and len(records) == 3
    nothing = vidscore_sql(home, "SELECT 1 AS one WHERE false", "--format", "json")
    assert json.loads(nothing.stdout) == []
    assert vidscore_sql(home, "SELECT 1 AS one WHERE false", "--format", "csv").stdout == "one\n"


def test_sql_streams_its_result(home: Path) -> None:
    """2 M rows of 500 characters (1 GB of text) pass through with a few hundred MB at most."""
    env = {**os.environ, "VIDSCORE_HOME": str(home)}
    sql = "SELECT range AS i, repeat('x', 500) AS s FROM range(2000000)"
    # Linux keeps a process's peak RSS across exec, so a child forked from this (large) pytest process
    # would report at least pytest's size: a small wrapper starts the CLI and reports the CLI's own peak.
    wrapper = (
        "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); sys.exit(code)"
    )
    proc = subprocess.Popen([sys.executable, "-c", wrapper, EXE, "sql", sql, "--format", "csv"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    lines = sum(1 for _ in proc.stdout)
    stderr = proc.stderr.read().decode()
    assert proc.wait() == 0 and lines == 2_000_001, stderr
    peak_mib = int(stderr.split()[-1]) / 1024
    assert peak_mib < 600, peak_mib
