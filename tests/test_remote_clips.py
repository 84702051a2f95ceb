"""Clips in object storage: the fixture corpus on a real S3-compatible server (moto) and a plain HTTP
server on loopback decodes and scores exactly as the local copies; failures come by kind."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from fixture_env import fixture_model_env
from object_servers import FileServer, S3Proxy, moto_server, rclone_s3_server, s3_env, upload

from vidscore_core.ingest.meta import batch_key_prefix, read_meta
from vidscore_core.media import probe
from vidscore_core.media.decode import read_frame_sets
from vidscore_core.media.frames import FrameRequest
from vidscore_core.media.synth import write_clip

BUCKET = "clips"
REQUESTS = [FrameRequest(points=(0.1, 0.5, 0.9)), FrameRequest(indices=(0, 10, 20, 30))]
VIDSCORE = Path(sys.executable).with_name("vidscore")


@pytest.fixture(scope="module")
def media(fixtures: Path) -> Path:
    return fixtures / "media"


@pytest.fixture(scope="module")
def s3(media: Path):
    """moto on loopback with the fixture corpus under s3://clips/media/; yields its endpoint."""
    with moto_server() as endpoint:
        upload(endpoint, BUCKET, {f"media/{p.name}": p for p in media.iterdir()})
        yield endpoint


@pytest.fixture
def aws(s3, monkeypatch):
    def point_at(endpoint: str) -> None:
        for key, value in s3_env(endpoint).items():
            monkeypatch.setenv(key, value)

    point_at(s3)
    return point_at


def _clips(media: Path) -> list[str]:
    return sorted(p.name for p in media.iterdir() if p.suffix != ".csv")


def _same(remote, local) -> None:
    for got, want in zip(remote, local, strict=True):
        if isinstance(want, Exception):
            assert isinstance(got, Exception) and got.reason == want.reason
            continue
        assert (got.backend, got.indices, got.num_frames) == (want.backend, want.indices, want.num_frames)
        assert all(np.array_equal(a, b) for a, b in zip(got.frames, want.frames, strict=True))


def test_s3_clips_decode_and_probe_as_their_local_copies_fetching_each_byte_once(media: Path, aws) -> None:
    for name in _clips(media):
        url = f"s3://{BUCKET}/media/{name}"
        remote = read_frame_sets(url, REQUESTS)
        _same(remote, read_frame_sets(media / name, REQUESTS))
        if not isinstance(remote[0], Exception):  # one pass, both requests: never more than the file
            assert 0 < remote[0].fetched_bytes <= (media / name).stat().st_size
        assert probe(url) == probe(media / name)


def test_s3_keys_with_url_characters_are_kept_whole(media: Path, s3, aws, tmp_path: Path) -> None:
    """An S3 key may hold `?`, `#`, `%`, spaces and any letter: the clip is read by its whole key, its
    `path` keeps it, and keys that differ only after a `?` are different clips (not one, cut there)."""
    first, second = [media / name for name in _clips(media) if name.startswith("pan_") and name.endswith(".mp4")][:2]
    keys = {"odd/a?b.mp4": first, "odd/a?c.mp4": second, "odd/my clip #1 100%.mp4": first,
            "odd/ünï cødé.mp4": second}  # fmt: skip
    upload(s3, BUCKET, keys)
    meta = tmp_path / "meta.csv"
    pd.DataFrame({"path": [f"s3://{BUCKET}/{key}" for key in keys]}).to_csv(meta, index=False)
    rows = read_meta(meta, drop_duplicates=False)
    assert list(rows["path"]) == [f"s3://{BUCKET}/{key}" for key in keys]
    assert rows["video_id"].nunique() == len(keys)
    for key, local in keys.items():
        _same(read_frame_sets(f"s3://{BUCKET}/{key}", REQUESTS), read_frame_sets(local, REQUESTS))


def test_clips_on_a_second_s3_implementation_read_as_their_local_copies(media: Path, aws, tmp_path: Path) -> None:
    """rclone's S3 server keeps objects as files and, unlike S3, answers a range GET with the whole
    object's checksum when the upload sent one (boto3's default): a clip larger than the first read,
    fetched in several ranges, and the corpus's clips still decode and probe as their local copies."""
    big = _noise_clip(tmp_path / "big.mp4", 120)
    clips = {"big.mp4": big, **{name: media / name for name in _clips(media)[:3]}}
    (tmp_path / "served").mkdir()
    with rclone_s3_server(tmp_path / "served") as endpoint:
        upload(endpoint, BUCKET, clips)
        aws(endpoint)
        read = {name: read_frame_sets(f"s3://{BUCKET}/{name}", REQUESTS, timeout_s=None) for name in clips}
        for name, local in clips.items():
            _same(read[name], read_frame_sets(local, REQUESTS, timeout_s=None))
            assert probe(f"s3://{BUCKET}/{name}") == probe(local)
    assert big.stat().st_size > 8e6 and read["big.mp4"][0].fetch_requests > 1


def test_the_csv_commands_read_a_meta_file_in_the_bucket(fixtures: Path, s3, tmp_path: Path) -> None:
    """`vidscore filter` of a meta file on S3 (its relative paths resolve against the bucket's folder,
    its clips probed there for their duration) keeps the rows the local copy keeps, and writes its
    output in the current folder; a presigned meta file the server refuses is one error line without
    the signature."""
    upload(s3, BUCKET, {"meta.csv": fixtures / "media/meta.csv"})  # lists media/…, beside the clips
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIDSCORE_", "AWS_"))}
    env.update(s3_env(s3), VIDSCORE_HOME=str(tmp_path / "home"))
    bound = ["--duration-min", "1.5"]  # the meta gives no duration: every clip is probed
    runs = {"local": [str(fixtures / "media/meta.csv"), "--output", str(tmp_path / "local.csv")],
            "s3": [f"s3://{BUCKET}/meta.csv"]}  # fmt: skip
    for args in runs.values():
        proc = subprocess.run([str(VIDSCORE), "filter", *args, *bound], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert "probed" in proc.stdout
    (written,) = set(tmp_path.glob("*.csv")) - {tmp_path / "local.csv"}
    assert written.name.startswith("meta_")
    kept = pd.read_csv(written)
    assert 0 < len(kept) < len(pd.read_csv(fixtures / "media/meta.csv"))
    assert kept.equals(pd.read_csv(tmp_path / "local.csv"))
    with FileServer(fixtures / "media", signature="s1gnature") as server:
        proc = subprocess.run([str(VIDSCORE), "score", "aesthetic", f"{server.url}/meta.csv?X-Amz-Signature=wrong"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode != 0 and proc.stderr.startswith("error: ") and len(proc.stderr.splitlines()) == 1
    assert "denied" in proc.stderr and f"{server.url}/meta.csv" in proc.stderr and "wrong" not in proc.stderr


def test_https_clips_with_and_without_range_support(media: Path, caplog) -> None:
    """A presigned-style URL reads by ranges; a server without ranges still works, by a full read,
    and says so once; the query string (the signature) is never in an error."""
    with FileServer(media) as ranged, FileServer(media, ranges=False) as whole:
        for server in (ranged, whole):
            for name in _clips(media):
                url = f"{server.url}/{name}?X-Amz-Credential=AKIDSECRET&X-Amz-Signature=deadbeef"
                _same(read_frame_sets(url, REQUESTS), read_frame_sets(media / name, REQUESTS))
        with caplog.at_level(logging.WARNING, logger="vidscore_core.media.remote"):
            for name in _clips(media):
                read_frame_sets(f"{whole.url}/{name}", REQUESTS)
        said = [r.getMessage() for r in caplog.records if "range requests" in r.getMessage()]
        assert len(said) <= 1  # once per host and process (it may have been said above already)
        missing = probe(f"{ranged.url}/nope.mp4?X-Amz-Signature=deadbeef")
        assert missing["error"] == f"file not found: {ranged.url}/nope.mp4 (HTTP 404)"
        assert missing["exists"] is False


def test_missing_denied_and_bad_urls_are_row_errors_with_the_reason(s3, aws, tmp_path: Path) -> None:
    missing = probe(f"s3://{BUCKET}/media/nope.mp4")
    assert missing["error"] == f"file not found: s3://{BUCKET}/media/nope.mp4 (no such key)"
    assert missing["exists"] is False
    (tmp_path / "empty.mp4").write_bytes(b"")
    upload(s3, BUCKET, {"empty/empty.mp4": tmp_path / "empty.mp4"})
    empty, local = probe(f"s3://{BUCKET}/empty/empty.mp4"), probe(tmp_path / "empty.mp4")
    assert empty["error"] == f"empty file (0 bytes): s3://{BUCKET}/empty/empty.mp4"
    assert {**empty, "error": None} == {**local, "error": None}  # exists, 0 bytes, nothing else
    assert probe("s3://no-such-bucket/a.mp4")["error"] == "file not found: s3://no-such-bucket/a.mp4 (no such bucket)"
    assert probe(f"s3://{BUCKET}/")["error"].startswith("bad URL: ")
    with S3Proxy(s3, denied=("pan_hubble_right_5px.mp4",)) as proxy:
        aws(proxy.url)
        denied = probe(f"s3://{BUCKET}/media/pan_hubble_right_5px.mp4")
        assert denied["error"] == f"access denied: s3://{BUCKET}/media/pan_hubble_right_5px.mp4 (AccessDenied)"
        assert probe(f"s3://{BUCKET}/media/pan_ihc_diag_25frames.mkv")["error"] is None
    assert "testing" not in denied["error"]  # the secret key is never quoted


def test_a_flaky_server_is_retried_and_the_clips_end_up_read(media: Path, s3, aws) -> None:
    with S3Proxy(s3, drop_every=3) as proxy:
        aws(proxy.url)
        for name in _clips(media):
            _same(read_frame_sets(f"s3://{BUCKET}/media/{name}", REQUESTS), read_frame_sets(media / name, REQUESTS))
        assert proxy.dropped >= 2


def test_a_server_that_keeps_failing_gives_a_retryable_row_error(s3, aws, monkeypatch) -> None:
    from vidscore_core.media import remote

    monkeypatch.setattr(remote, "RETRY_BASE_S", 0.01)
    with S3Proxy(s3, drop_every=1) as proxy:
        aws(proxy.url)
        got = read_frame_sets(f"s3://{BUCKET}/media/pan_ihc_diag_25frames.mkv", REQUESTS)
    assert all(isinstance(g, remote.RemoteError) and g.retryable for g in got)
    assert got[0].reason.startswith("storage unavailable (retryable): ")
    assert f"after {remote.RETRY_ATTEMPTS} attempts" in got[0].reason


def test_relative_paths_resolve_against_a_meta_file_on_s3(media: Path, s3, aws, tmp_path: Path) -> None:
    meta = pd.read_csv(media / "meta.csv")
    meta["path"] = [Path(p).name for p in meta["path"]]  # relative to the meta file's own prefix
    meta.loc[0, "path"] = "https://example.org/clip.mp4?sig=1"  # a URL stays what it is
    (tmp_path / "meta.csv").write_text(meta.to_csv(index=False))
    upload(s3, BUCKET, {"media/meta_rel.csv": tmp_path / "meta.csv"})
    rows = read_meta(f"s3://{BUCKET}/media/meta_rel.csv")
    assert rows["path"].tolist()[1:] == [f"s3://{BUCKET}/media/{p}" for p in meta["path"][1:]]
    assert rows["path"][0] == "https://example.org/clip.mp4?sig=1"
    assert len(set(rows["video_id"])) == len(rows)


def test_score_all_on_s3_clips_gives_the_local_scores(media: Path, fixtures: Path, s3, tmp_path: Path) -> None:
    """`vidscore score all` in a subprocess, on a meta file listing s3:// clips: |Δ| = 0 for every score."""
    source = pd.read_csv(media / "meta.csv")
    local, remote_meta = tmp_path / "local.csv", tmp_path / "remote.csv"
    source.assign(path=[str(fixtures / p) for p in source["path"]]).to_csv(local, index=False)
    source.assign(path=[f"s3://{BUCKET}/{p}" for p in source["path"]]).to_csv(remote_meta, index=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIDSCORE_", "AWS_"))}
    env.update(fixture_model_env(fixtures), **s3_env(s3), VIDSCORE_HOME=str(tmp_path / "home"))
    outputs = []
    for meta in (local, remote_meta):
        out = meta.with_name(meta.stem + "_scores.csv")
        proc = subprocess.run([str(VIDSCORE), "score", "all", str(meta), "--backend", "dis", "--device", "cpu",
                               "--num-workers", "1", "--output", str(out)], env=env, capture_output=True,
                              text=True, timeout=600)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        outputs.append(pd.read_csv(out))
    scored_local, scored_remote = outputs
    for column in ("aes", "match", "flow"):
        assert scored_remote[column].equals(scored_local[column]), column
    assert scored_remote["aes_error"].notna().tolist() == scored_local["aes_error"].notna().tolist()


@pytest.mark.timeout(1800)
def test_ingest_materialize_of_a_meta_file_on_s3_gives_the_local_scores(fixtures: Path, s3, tmp_path: Path) -> None:
    """`vidscore ingest s3://…/meta.csv --materialize` (Dagster runs in the CLI's process): the meta file
    and its clips (paths relative to the meta file) in the bucket score as the local copies do."""
    upload(s3, BUCKET, {"meta.csv": fixtures / "media/meta.csv"})  # lists media/…, beside the clips
    base = {k: v for k, v in os.environ.items() if not k.startswith(("VIDSCORE_", "AWS_", "DAGSTER_"))}
    base.update(fixture_model_env(fixtures), **s3_env(s3), VIDSCORE_FLOW_BACKEND="dis")  # flow without UniMatch's CPU cost
    query = ("SELECT v.path_original, v.num_frames, v.error AS video_error, a.aes, m.match, f.flow "
             "FROM videos v JOIN aesthetic_scores a USING (video_id) JOIN matching_scores m USING (video_id) "
             "JOIN flow_scores f USING (video_id) ORDER BY 1")  # fmt: skip
    answers = []
    for name, meta in (("local", str(fixtures / "media/meta.csv")), ("s3", f"s3://{BUCKET}/meta.csv")):
        env = {**base, "VIDSCORE_HOME": str(tmp_path / name)}
        proc = subprocess.run([str(VIDSCORE), "ingest", meta, "--materialize"], env=env, capture_output=True,
                              text=True, timeout=900)  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        proc = subprocess.run([str(VIDSCORE), "sql", query, "--format", "json"], env=env, capture_output=True,
                              text=True, timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        answers.append(json.loads(proc.stdout))
    local, remote = answers
    assert len(remote) == 5 and remote == local  # every score, |Δ| = 0
    assert sum(row["aes"] is not None for row in remote) == 4


def test_a_resigned_url_is_the_same_clip_and_the_same_batches(tmp_path: Path) -> None:
    """A presigned URL's query string changes with every signing: neither the clip's id nor the meta
    file's batch keys depend on it."""
    url = "https://bucket.example.org/clips/a.mp4"
    meta = tmp_path / "meta.csv"
    meta.write_text(f"path\n{url}?X-Amz-Signature=aaaa\n{url}?X-Amz-Signature=bbbb\n")
    rows = read_meta(meta, drop_duplicates=False)
    assert rows["video_id"].nunique() == 1
    assert batch_key_prefix(f"{url}?X-Amz-Signature=aaaa") == batch_key_prefix(f"{url}?X-Amz-Signature=bbbb")
    assert batch_key_prefix(f"{url}?X-Amz-Signature=aaaa") != batch_key_prefix("https://bucket.example.org/clips/b.mp4")


def _holds(path: Path, secret: str) -> bool:
    """Whether a file holds `secret`: a Parquet file by its values (its pages may be compressed),
    anything else by its bytes (the Dagster instance's SQLite event log, logs, CSV)."""
    if path.suffix == ".parquet":
        return secret in str(pq.read_table(path).to_pylist())
    return secret.encode() in path.read_bytes()


@pytest.mark.timeout(1200)
def test_a_presigned_urls_query_string_is_stored_and_printed_nowhere_yet_its_clips_are_scored(
    media: Path, fixtures: Path, tmp_path: Path
) -> None:
    """Presigned-style URLs (the server refuses any request without the signature), for the meta file
    and its clips, through `vidscore ingest --materialize --preset`, `vidscore report`, `vidscore sql`
    and the export: every readable clip is scored and shown, and the query string is in no public
    table, export, report, log, CLI output or Dagster run (its config names the meta file without it);
    only the internal manifests keep it, which is where the score steps read it from."""
    signature, key_id = "5ec12e7516a7c0ffee", "AKIDPRESIGNEDTEST"
    query = f"?X-Amz-Credential={quote(f'{key_id}/20260101/us-east-1/s3/aws4_request', safe='')}" \
            f"&X-Amz-Signature={signature}"  # fmt: skip
    source = pd.read_csv(media / "meta.csv")
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIDSCORE_", "AWS_", "DAGSTER_"))}
    env.update(fixture_model_env(fixtures), VIDSCORE_HOME=str(home), VIDSCORE_FLOW_BACKEND="dis")
    sql = ("SELECT v.path, v.path_original, v.meta_file, v.error, a.aes, f.flow FROM videos v "
           "JOIN aesthetic_scores a USING (video_id) JOIN flow_scores f USING (video_id) ORDER BY v.meta_row")  # fmt: skip
    served = tmp_path / "served"
    served.mkdir()
    for clip in media.iterdir():
        (served / clip.name).symlink_to(clip)
    with FileServer(served, signature=signature) as server:
        public = [f"{server.url}/{Path(p).name}" for p in source["path"]]
        source.assign(path=[url + query for url in public]).to_csv(served / "presigned.csv", index=False)
        meta = f"{server.url}/presigned.csv{query}"
        printed, answer = [], ""
        for command in (["ingest", meta, "--materialize", "--preset", "anything", "--flowmin", "0"],
                        ["report"], ["sql", sql, "--format", "json"]):  # fmt: skip
            proc = subprocess.run([str(VIDSCORE), *command], env=env, capture_output=True, text=True, timeout=900)
            assert proc.returncode == 0, proc.stdout + proc.stderr
            printed.append(proc.stdout + proc.stderr)
            answer = proc.stdout
    rows = json.loads(answer)
    sheets = json.loads((home / "reports" / "corpus_report.json").read_text())["contact_sheets"]
    shown = [clip["path"] for sheet in sheets for row in sheet["rows"] for clip in row["clips"]]
    assert shown and set(shown) <= set(public)  # the report's thumbnails were read by the signed URLs
    assert [t for sheet in sheets for t in sheet["skipped"] if "denied" in t["error"]] == []
    assert [r["path"] for r in rows] == [r["path_original"] for r in rows] == public
    assert [r["aes"] is not None for r in rows] == [kind != "bad" for kind in source["kind"]]
    assert [r["flow"] is not None for r in rows] == [kind == "video" for kind in source["kind"]]
    export = pd.read_csv(home / "exports" / "filtered_anything.csv")
    assert len(export) > 0 and set(export["path"]) <= set(public)
    for secret in (signature, key_id):
        assert not any(secret in text for text in printed), secret
        files = [p for p in home.rglob("*") if p.is_file()]
        leaks = [str(p.relative_to(home)) for p in files if "manifests" not in p.parts and _holds(p, secret)]
        assert leaks == [], secret
        assert any(_holds(p, secret) for p in files if "manifests" in p.parts)


def test_a_meta_object_dropped_on_an_s3_inbox_starts_its_ingest_run(
    s3, aws, vidscore_env, fixtures: Path, monkeypatch, tmp_path: Path
) -> None:
    import dagster as dg

    from vidscore_dagster.definitions import defs
    from vidscore_dagster.defs.automation.sensors import inbox_sensor
    from vidscore_dagster.defs.resources import VidscoreSettings

    settings, store = vidscore_env
    monkeypatch.setenv("VIDSCORE_INBOX", f"s3://{BUCKET}/inbox/")
    monkeypatch.setenv("VIDSCORE_INBOX_SETTLE_S", "0")
    meta = pd.read_csv(fixtures / "media/meta.csv")
    meta["path"] = [f"s3://{BUCKET}/{p}" for p in meta["path"]]
    (tmp_path / "corpus.csv").write_text(meta.to_csv(index=False))
    (tmp_path / "notes.txt").write_text("not a meta file")
    (tmp_path / "marker").write_bytes(b"")  # the empty object consoles create for a "folder"
    upload(s3, BUCKET, {"inbox/": tmp_path / "marker", "inbox/corpus.csv": tmp_path / "corpus.csv",
                        "inbox/notes.txt": tmp_path / "notes.txt"})  # fmt: skip
    resources = {"vidscore": VidscoreSettings(home=str(settings.home))}

    def tick(instance, cursor=None) -> dg.SensorResult:
        with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
            return inbox_sensor(context)

    import boto3

    listing = boto3.client("s3", endpoint_url=s3)
    with dg.instance_for_test() as instance:
        result = tick(instance)
        (request,) = result.run_requests
        path = request.run_config["ops"]["meta_files"]["config"]["path"]
        assert path.startswith(f"s3://{BUCKET}/inbox/processed/corpus-") and path.endswith(".csv")
        keys = sorted(o["Key"] for o in listing.list_objects_v2(Bucket=BUCKET, Prefix="inbox/")["Contents"])
        assert keys == ["inbox/", path[len(f"s3://{BUCKET}/") :], "inbox/rejected/notes.txt",
                        "inbox/rejected/notes.txt.reason.txt"]  # fmt: skip
        assert "no new meta files" in str(tick(instance, result.cursor).skip_reason)
        # The same content dropped again: the same run key (Dagster launches it once).
        upload(s3, BUCKET, {"inbox/corpus.csv": tmp_path / "corpus.csv"})
        (again,) = tick(instance, result.cursor).run_requests
        assert again.run_key == request.run_key
        run = defs.resolve_job_def("ingest_meta_file").execute_in_process(
            instance=instance, run_config=request.run_config, tags=request.tags, raise_on_error=False
        )
        assert run.success
    manifests = store.read("manifests")
    assert sorted(manifests["path"]) == sorted(meta["path"])
    assert set(manifests["meta_file"]) == {path}


def _noise_clip(path: Path, frames: int) -> Path:
    """A clip far above one first read (about 100 KB a frame: noise compresses poorly), a keyframe a second."""
    rng = np.random.default_rng(0)
    noise = (rng.integers(0, 256, (270, 480, 3), dtype=np.uint8) for _ in range(frames))
    return write_clip(path, noise, crf=16, gop=24, preset="ultrafast")


def _without_sync_samples(clip: Path, out: Path) -> Path:
    """The clip with its sync sample table (`stss`) renamed away: FFmpeg then calls every sample a
    keyframe, which an inter-coded stream is not, so its index is not trusted."""
    data = clip.read_bytes()
    at = data.index(b"stss")
    assert at < data.index(b"mdat")  # the index's box (the clip is faststart), not payload bytes
    out.write_bytes(data[:at] + b"free" + data[at + 4 :])
    return out


@pytest.mark.timeout(900)
def test_the_gops_a_pass_decodes_are_fetched_at_once(tmp_path: Path) -> None:
    """Once the index says which GOPs the wanted frames need, they are requested together rather than
    one per seek as the decoder reaches them: a slow server that answers in parallel sees every GET
    after the first read in flight at once (one round trip), and the frames are the local copy's."""
    big = _noise_clip(tmp_path / "big.mp4", 400)
    wanted = [FrameRequest(points=(0.1, 0.5, 0.9))]
    with FileServer(tmp_path, delay_s=0.3) as server:
        (remote,) = read_frame_sets(f"{server.url}/big.mp4", wanted, timeout_s=None)
    (local,) = read_frame_sets(str(big), wanted, timeout_s=None)
    assert len(remote.frames) == 3 and remote.indices == local.indices
    assert all(np.array_equal(a, b) for a, b in zip(remote.frames, local.frames, strict=True))
    assert remote.fetch_requests == server.requests >= 3  # the first read, then GOPs beyond it
    assert server.most_in_flight == server.requests - 1
    assert remote.fetched_bytes < big.stat().st_size / 3


def test_an_aesthetic_pass_over_a_large_s3_clip_fetches_a_fraction_of_it(fixtures: Path, s3, tmp_path: Path) -> None:
    """`vidscore score aesthetic` on a 40 MB clip in the bucket scores as its local copy, and the bucket
    serves a fraction of it: the index and the GOPs up to the three frames, no other payload. The same
    clip without a sync sample table (outside the index rule) is read whole, with the local scores too."""
    big = _noise_clip(tmp_path / "big.mp4", 400)
    no_stss = _without_sync_samples(big, tmp_path / "no_stss.mp4")
    upload(s3, BUCKET, {"large/big.mp4": big, "large/no_stss.mp4": no_stss})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIDSCORE_", "AWS_"))}
    env.update(fixture_model_env(fixtures), VIDSCORE_HOME=str(tmp_path / "home"))
    scored = {}
    with S3Proxy(s3) as proxy:
        for where, folder in (("local", str(tmp_path)), ("s3", f"s3://{BUCKET}/large")):
            meta, out = tmp_path / f"{where}.csv", tmp_path / f"{where}_aes.csv"
            pd.DataFrame({"path": [f"{folder}/big.mp4", f"{folder}/no_stss.mp4"]}).to_csv(meta, index=False)
            proc = subprocess.run([str(VIDSCORE), "score", "aesthetic", str(meta), "--output", str(out)],
                                  env={**env, **s3_env(proxy.url)}, capture_output=True, text=True, timeout=600)  # fmt: skip
            assert proc.returncode == 0, proc.stderr
            scored[where] = pd.read_csv(out)
    assert scored["local"]["aes"].notna().all()
    assert scored["s3"]["aes"].equals(scored["local"]["aes"])  # |Δ| = 0
    size = big.stat().st_size
    assert size > 30e6
    assert proxy.served[f"/{BUCKET}/large/big.mp4"] < size / 4
    assert proxy.served[f"/{BUCKET}/large/no_stss.mp4"] >= size
