"""Tables on S3-compatible object storage: the same code path against a real HTTP server on loopback.

The server is moto's standalone server (`moto_server`), started here as a separate process; the
store talks to it over HTTP with the usual AWS variables, as it would to S3 or MinIO.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow.fs as pafs
import pytest
from click.testing import CliRunner
from object_servers import moto_server

from vidscore_core.tables.store import TableStore, utc_now

BUCKET = "vidscore-test"


@pytest.fixture(scope="module")
def s3_server():
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_env(s3_server, monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    root = f"s3://{BUCKET}/{tmp_path.name}"
    fs = pafs.S3FileSystem(endpoint_override=s3_server.split("://")[1], scheme="http", region="us-east-1",
                           access_key="testing", secret_key="testing", allow_bucket_creation=True)  # fmt: skip
    fs.create_dir(BUCKET)
    return root


def test_publish_read_query_and_delete_on_s3(s3_env):
    store = TableStore(s3_env)
    assert store.is_s3 and store.table_dir("videos") == f"{s3_env}/videos"
    rows = pd.DataFrame({"video_id": ["a", "b"], "aes": [5.0, None], "error": [None, "cannot decode"],
                         "params": [{"points": [0.5]}, None], "scored_at": utc_now()})  # fmt: skip
    published = store.publish(rows, "aesthetic_scores", "b0")
    assert published.rows == 2 and published.path.startswith(f"{s3_env}/aesthetic_scores/batch=b0/")
    store.publish(rows.iloc[:1], "aesthetic_scores", "b1")
    assert store.partition_counts("aesthetic_scores") == {"b0": 2, "b1": 1}
    got = store.query_df("SELECT video_id, aes, params->>'$.points[0]' AS p FROM aesthetic_scores ORDER BY batch, video_id")
    assert got["video_id"].tolist() == ["a", "b", "a"] and got["p"].tolist()[0] == "0.5"
    # Re-publishing replaces the partition whole, as a new object: the old one stays readable for
    # the grace period (a query that listed it still finds it), then cleanup removes it.
    again = store.publish(rows.assign(aes=7.0), "aesthetic_scores", "b0")
    assert again.path != published.path and store.partition_path("aesthetic_scores", "b0") == again.path
    assert store.read("aesthetic_scores", ["b0"])["aes"].tolist() == [7.0, 7.0]
    # What pinned views read: each batch's current version, then the schema object, as s3:// URLs.
    assert store.current_files("aesthetic_scores") == [
        again.path, store.partition_path("aesthetic_scores", "b1"), f"{s3_env}/aesthetic_scores/batch=!schema/schema.parquet"]  # fmt: skip
    old = published.path.removeprefix("s3://")
    assert store.fs.get_file_info(old).type == pafs.FileType.File
    assert store.cleanup("aesthetic_scores") == 0
    assert store.cleanup("aesthetic_scores", grace_s=0) == 1
    assert store.fs.get_file_info(old).type == pafs.FileType.NotFound
    assert store.delete("aesthetic_scores", "b1") and not store.delete("aesthetic_scores", "b1")
    assert store.partitions("aesthetic_scores") == {"b0"}
    assert store.query_df("SELECT count(*) AS n FROM aesthetic_scores")["n"].tolist() == [2]
    # Nothing is left in staging.
    staged = store.fs.get_file_info(pafs.FileSelector(f"{store._base}/_staging", allow_not_found=True))
    assert staged == []


WRITER = """
import sys
import pandas as pd
from vidscore_core.tables.store import TableStore
root, batch, tag = sys.argv[1:4]
rows = pd.DataFrame({"video_id": [f"{batch}-{i}" for i in range(500)], "run_id": tag})
for _ in range(3):
    TableStore(root).publish(rows, "flow_scores", batch)
"""


def test_concurrent_writers_on_s3_leave_one_whole_version_per_batch(s3_env):
    repo = Path(__file__).resolve().parents[1]
    jobs = [("b0", "first"), ("b0", "second"), ("b1", "w1"), ("b2", "w2")]
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, s3_env, b, t], cwd=repo, env=os.environ.copy())
             for b, t in jobs]  # fmt: skip
    assert [p.wait(timeout=300) for p in procs] == [0] * len(procs)
    store = TableStore(s3_env)
    counts = store.query_df("SELECT batch, count(*) AS n, count(DISTINCT run_id) AS runs FROM flow_scores GROUP BY 1 ORDER BY 1")
    assert counts.to_dict("list") == {"batch": ["b0", "b1", "b2"], "n": [500, 500, 500], "runs": [1, 1, 1]}


def test_assets_and_sql_run_on_s3_tables(s3_env, vidscore_env, fixtures, monkeypatch):
    """A batch ingested, probed and scored through Dagster with VIDSCORE_TABLES on S3; `vidscore sql` reads it."""
    from vidscore_dagster.cli import main
    from vidscore_dagster.runner import ingest_meta_file, materialize_batches

    settings, _ = vidscore_env
    monkeypatch.setenv("VIDSCORE_TABLES", s3_env)
    monkeypatch.setenv("VIDSCORE_FLOW_BACKEND", "dis")
    instance = dg.DagsterInstance.ephemeral()
    (key,), reason = ingest_meta_file(instance, fixtures / "media/meta.csv", 5000)
    assert not reason
    assert materialize_batches(instance, [key], ["videos", "flow_scores"])[key]
    store = TableStore(s3_env)
    assert store.partition_counts("videos") == {key: 5} and store.partition_counts("flow_scores") == {key: 5}
    assert not (settings.home / "tables").exists()  # nothing went to the local default
    result = CliRunner().invoke(main, ["sql", "SELECT count(flow) AS n FROM video_scores", "--format", "csv"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == ["n", "3"]
