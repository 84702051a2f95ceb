"""`vidscore report` / the `corpus_report` asset: every number equals SQL over the same tables.

One corpus for the module: two sources (the fixtures' meta.csv, and a second meta file listing copies
of two fixture clips plus one fixture clip again), batches of two rows, scored through Dagster (DIS
flow) with near-duplicates. One copy is deleted after scoring, so its middle frame cannot be read
when the report is built. The report is built by the CLI in a subprocess, as users run it; the
numbers are then recomputed with `vidscore sql` (the views of vidscore.duckdb) and `filtered_videos`.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from fixture_env import fixture_model_env

VIDSCORE = Path(sys.executable).with_name("vidscore")
BATCH_ASSETS = ["videos", "clip_embeddings", "aesthetic_scores", "matching_scores", "flow_scores"]
REL = 1e-9
# Scoring the corpus (first test) takes minutes on a busy 2-core runner.
pytestmark = pytest.mark.timeout(1800)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, fixtures):
    """(env, settings, report JSON, CLI output) for the scored two-source corpus."""
    root = tmp_path_factory.mktemp("corpus_report")
    home = root / "home"
    env = {**fixture_model_env(fixtures), "VIDSCORE_HOME": str(home), "VIDSCORE_MODELS_DIR": str(root / "models"),
           "VIDSCORE_FLOW_BACKEND": "dis", "VIDSCORE_AUTOMATION": "off"}  # fmt: skip
    second = root / "second"
    second.mkdir()
    shutil.copyfile(fixtures / "media/pan_hubble_right_5px.mp4", second / "hubble_copy.mp4")
    shutil.copyfile(fixtures / "media/pan_ihc_diag_25frames.mkv", second / "ihc_copy.mkv")
    pd.DataFrame({
        "path": ["hubble_copy.mp4", "ihc_copy.mkv", str(fixtures / "media/image_colorwheel.jpg")],
        "text": ["a copy of the hubble pan", "a copy of the tissue pan", "the colour wheel, listed again"],
    }).to_csv(second / "meta.csv", index=False)  # fmt: skip
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        mp.setenv("DAGSTER_HOME", str(home / "dagster"))
        mp.delenv("VIDSCORE_TABLES", raising=False)
        from vidscore_core.settings import Settings
        from vidscore_dagster.defs.resources import default_resources
        from vidscore_dagster.runner import (
            _materialize,
            ingest_meta_file,
            instance_for,
            materialize_batches,
            materialize_corpus,
        )

        settings = Settings.from_env()
        instance = instance_for(settings)
        keys = []
        for meta in (fixtures / "media/meta.csv", second / "meta.csv"):
            found, failure = ingest_meta_file(instance, meta, 2)
            assert not failure, failure
            keys += found
        assert all(materialize_batches(instance, keys, BATCH_ASSETS, resources=default_resources()).values())
        assert _materialize(instance, ["near_duplicates"]).success
        from vidscore_core.curation.filtered_dataset import PRESETS

        for preset in PRESETS:  # the filter's own path, to compare the report's presets with
            assert materialize_corpus(instance, "filtered_videos", {"preset": preset})[0]
        instance.dispose()
        (second / "ihc_copy.mkv").unlink()  # scored, then gone: its frame cannot be read for the sheets
        run_env = dict(os.environ)
        out = _cli(run_env, "report")
        report = json.loads((home / "reports/corpus_report.json").read_text())
        yield run_env, settings, report, out


def _cli(env: dict, *args: str) -> str:
    done = subprocess.run([str(VIDSCORE), *args], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _sql(env: dict, query: str) -> pd.DataFrame:
    return pd.DataFrame(json.loads(_cli(env, "sql", query, "--format", "json")))


def _scored(report: dict) -> list[dict]:
    """The signals with values (scores this corpus computed)."""
    return [d for d in report["distributions"] if d["scored"]]


def _close(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= REL * max(1.0, abs(a), abs(b))


def test_every_number_equals_sql(corpus):
    env, settings, report, out = corpus
    from vidscore_core.scores import SCORES

    assert re.search(r"^wrote .*corpus_report\.html: 7 clips \(1 unreadable\)", out, re.M), out
    signals = report["distributions"]
    assert {s.column for s in SCORES} <= {d["signal"]["column"] for d in signals}  # every registered score
    queries: dict[str, str] = {}  # name -> a scalar SQL subquery; all answered by one `vidscore sql`

    for i, dist in enumerate(signals):
        table, col = dist["signal"]["table"], f'"{dist["signal"]["column"]}"'
        qs = sorted(float(q) for q in dist["quantiles"])
        queries[f"d{i}"] = f"SELECT [count(*), count({col}), count(error)] FROM {table}"
        if qs:  # numbers: extremes, mean, quantiles
            queries[f"v{i}"] = (
                f"SELECT [min({col}), max({col}), avg({col})] || quantile_cont({col}, {qs}) FROM {table}"
            )
        if dist["values"]:  # labels or flags: counts per value
            queries[f"c{i}"] = (
                f"SELECT list([v, n::VARCHAR]) FROM (SELECT {col}::VARCHAR AS v, count(*) AS n FROM {table} GROUP BY v)"
            )
        queries[f"r{i}"] = (f"SELECT list([error, n::VARCHAR]) FROM (SELECT error, count(*) AS n FROM {table} "
                            "WHERE error IS NOT NULL GROUP BY error)")  # fmt: skip
        if not dist["histogram"]:  # a score this corpus did not compute (or one without numbers)
            continue
        edges = dist["histogram"]["edges"]
        bins = [
            f"count(*) FILTER (WHERE {col} >= {lo!r} AND {col} < {hi!r})"
            for lo, hi in zip(edges[:-1], edges[1:], strict=True)
        ]
        bins[-1] = bins[-1].replace(f"{col} < ", f"{col} <= ")
        queries[f"h{i}"] = (f"SELECT [count(*) FILTER (WHERE {col} < {edges[0]!r}), count(*) FILTER "
                            f"(WHERE {col} > {edges[-1]!r}), {', '.join(bins)}] FROM {table}")  # fmt: skip

    # Clips counted once (first readable batch), readable, with their footage.
    by_table: dict[str, list[str]] = {}
    for d in signals:
        by_table.setdefault(d["signal"]["table"], []).append(f'"{d["signal"]["column"]}"')
    joins = " ".join(f"LEFT JOIN (SELECT video_id, batch, {', '.join(cols)}, error AS {t}_err FROM {t}) "
                     "USING (video_id, batch)" for t, cols in by_table.items())  # fmt: skip
    clips = (f"SELECT * FROM videos {joins} LEFT JOIN (SELECT video_id, batch, keep FROM near_duplicates) "
             "USING (video_id, batch) "
             "QUALIFY row_number() OVER (PARTITION BY video_id ORDER BY error IS NOT NULL, batch) = 1")  # fmt: skip

    def kept(condition: str) -> str:
        return (f"SELECT [count(*)::DOUBLE, coalesce(sum(duration_s), 0)] FROM ({clips}) "
                f"WHERE error IS NULL AND {condition}")  # fmt: skip

    for i, table in enumerate(report["thresholds"]):
        bound = table["bound"]
        for j, t in enumerate(table["thresholds"]):
            queries[f"t{i}_{j}"] = kept(f'"{bound["column"]}" {bound["op"]} {t!r}')
    # Each preset bound by bound, all together, with dedup; the last step must keep what `filtered_videos`
    # holds for that preset (the filter's own SQL).
    for i, preset in enumerate(report["presets"]):
        bounds = []
        for j, step in enumerate(preset["steps"]):
            single = re.fullmatch(r"(\w+) (>=|<=) (\S+)", step["label"])
            if single:
                bounds.append(f'"{single[1]}" {single[2]} {single[3]}')
            condition = {"all bounds": " AND ".join(bounds),
                         "all bounds + dedup": " AND ".join([*bounds, "coalesce(keep, TRUE)"])}.get(step["label"])  # fmt: skip
            queries[f"p{i}_{j}"] = kept(condition or bounds[-1])
        queries[f"f{i}"] = ("SELECT [count(*)::DOUBLE, coalesce(sum(v.duration_s), 0)] FROM filtered_videos f "
                            f"JOIN videos v USING (video_id, batch) WHERE f.preset = '{preset['name']}'")  # fmt: skip
    # Per source (the meta file) and for the whole corpus.
    per = ", ".join(
        f'count("{c}") FILTER (WHERE error IS NULL), '
        f"count(*) FILTER (WHERE error IS NULL AND {d['signal']['table']}_err IS NOT NULL)"
        for c, d in ((d["signal"]["column"], d) for d in signals)
    )
    queries["sources"] = (f"SELECT list([coalesce(meta_file, '(all)'), to_json(n)::VARCHAR]) FROM (SELECT meta_file, "
                          f"[count(*), count(error), coalesce(sum(duration_s) FILTER (WHERE error IS NULL), 0), {per}] AS n "
                          f"FROM ({clips}) GROUP BY GROUPING SETS ((meta_file), ()))")  # fmt: skip

    answer = _sql(env, "SELECT " + ", ".join(f"({q}) AS {name}" for name, q in queries.items())).iloc[0]

    for i, dist in enumerate(signals):
        assert [dist["rows"], dist["scored"], dist["errors"]] == answer[f"d{i}"]
        qs = sorted(dist["quantiles"], key=float)
        if qs:
            mine = [dist["minimum"], dist["maximum"], dist["mean"], *(dist["quantiles"][q] for q in qs)]
            assert all(_close(a, b) for a, b in zip(mine, answer[f"v{i}"], strict=True)), dist["signal"][
                "column"
            ]
        if dist["values"]:
            assert {v: n for v, n in dist["values"]}.items() <= {
                v: int(n) for v, n in answer[f"c{i}"]
            }.items()
        assert dict(dist["reasons"]) == {e: int(n) for e, n in answer[f"r{i}"] or []}
        hist = dist["histogram"]
        if not hist:
            continue
        assert dist["errors"] > 0  # the broken fixture file at least
        assert [hist["below"], hist["above"], *hist["counts"]] == answer[f"h{i}"]
        assert sum(hist["counts"]) + hist["below"] + hist["above"] == dist["scored"]
    for i, table in enumerate(report["thresholds"]):
        for j, k in enumerate(table["kept"]):
            clips_n, seconds = answer[f"t{i}_{j}"]
            assert k["clips"] == clips_n and _close(k["seconds"], seconds), (table["bound"], j)
    assert {t["bound"]["flag"] for t in report["thresholds"]} >= {"aesmin", "flowmin", "flowmax", "matchmin"}
    for i, preset in enumerate(report["presets"]):
        assert preset["dedup_available"]
        for j, step in enumerate(preset["steps"]):
            clips_n, seconds = answer[f"p{i}_{j}"]
            assert step["clips"] == clips_n and _close(step["seconds"], seconds), (preset["name"], step)
        clips_n, seconds = answer[f"f{i}"]
        assert preset["steps"][-1]["clips"] == clips_n and _close(preset["steps"][-1]["seconds"], seconds)
    curated = next(p for p in report["presets"] if p["name"] == "curated")
    assert curated["steps"][-1]["label"] == "all bounds + dedup"
    assert any(step["clips"] for step in curated["steps"])  # some steps keep clips: a real comparison

    sources = {name: json.loads(values) for name, values in answer["sources"]}
    assert len(report["sources"]) == 2
    for source in [*report["sources"], report["corpus"]]:
        row = sources[source["source"] or "(all)"]
        assert [source["clips"], source["unreadable"]] == row[:2] and _close(source["seconds"], row[2])
        for i, dist in enumerate(signals):
            c = dist["signal"]["column"]
            assert [source["scored"][c], source["errors"][c]] == row[3 + 2 * i : 5 + 2 * i], c
    assert (
        report["corpus"]["clips"] == sum(s["clips"] for s in report["sources"]) == 7
    )  # the shared image once


def test_page_is_self_contained_and_frames_are_decoded_once(corpus):
    env, settings, report, _ = corpus
    page = (settings.home / "reports/corpus_report.html").read_text()
    sources = re.findall(r'<img[^>]* src="([^"]+)"', page)
    assert sources and all(s.startswith("data:image/") for s in sources)
    assert not re.search(r'(src|href)="(https?:|file:|/)', page)  # nothing outside the file
    for dist in _scored(report):
        assert f'alt="{dist["signal"]["column"]} histogram' in page

    # Contact sheets: readable clips from each position; the deleted copy skipped with its reason.
    for sheet in report["contact_sheets"]:
        assert [r["position"] for r in sheet["rows"]] == ["bottom", "middle", "top"]
        shown = [c["path"] for r in sheet["rows"] for c in r["clips"]]
        assert shown and not any(p.endswith("ihc_copy.mkv") for p in shown)
        skipped = {c["path"]: c["error"] for c in sheet["skipped"]}
        assert any(p.endswith("ihc_copy.mkv") and "not found" in e for p, e in skipped.items()), skipped
        assert "skipped " in page and "ihc_copy.mkv" in page
        bottom, top = ([c["value"] for c in r["clips"]] for r in (sheet["rows"][0], sheet["rows"][-1]))
        assert bottom == sorted(bottom) and top == sorted(top, reverse=True)  # lowest first, highest first

    frames = settings.home / "reports/frames"
    before = {p.name: p.stat().st_mtime_ns for p in frames.iterdir()}
    assert any(n.endswith(".jpg") for n in before) and any(n.endswith(".txt") for n in before)
    opened = settings.home / "opened.txt"  # `--open` goes through $BROWSER, as Python's webbrowser does
    _cli({**env, "BROWSER": f"sh -c 'echo $0 > {opened}' %s"}, "report", "--open")
    assert {p.name: p.stat().st_mtime_ns for p in frames.iterdir()} == before  # nothing decoded again
    assert opened.read_text().strip() == (settings.home / "reports/corpus_report.html").resolve().as_uri()


def test_metadata_shows_totals_first_and_pictures_inline(corpus):
    env, settings, report, _ = corpus
    import dagster as dg

    instance = dg.DagsterInstance.from_config(str(settings.home / "dagster"))
    try:
        meta = instance.get_latest_materialization_event(
            dg.AssetKey("corpus_report")
        ).asset_materialization.metadata
        scores_meta = instance.get_latest_materialization_event(
            dg.AssetKey("aesthetic_scores")
        ).asset_materialization.metadata
    finally:
        instance.dispose()
    assert list(meta)[0] == "summary" and meta["summary"].value.startswith("7 clips (1 unreadable)")
    for dist in _scored(report):
        column = dist["signal"]["column"]
        for key in (f"{column}_histogram", f"{column}_contact_sheet"):
            # Dagster's UI renders Markdown inline only under 1,000 characters.
            assert len(meta[key].value) < 1000 and "](data:image/" in meta[key].value, key
    assert "data:image/png;base64," in meta["report"].value  # the full pictures, behind "[Show Markdown]"
    # A score's materialization states its totals first (the last run scored one batch).
    assert list(scores_meta)[0] == "totals"
    assert re.fullmatch(r"\d+ clips: \d+ scored, \d+ errors.*", scores_meta["totals"].value)


def test_report_without_ingested_clips_is_one_error_line(tmp_path):
    env = {**os.environ, "VIDSCORE_HOME": str(tmp_path / "empty")}
    env.pop("VIDSCORE_TABLES", None)
    env.pop("DAGSTER_HOME", None)
    done = subprocess.run([str(VIDSCORE), "report"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("error: no clips ingested")
    assert "Traceback" not in done.stderr


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_html_and_dagster_ui_show_the_pictures(corpus, tmp_path):
    """The page in headless Chromium, then the asset's page in `dagster dev`: every picture decodes.
    Screenshots go to test-artifacts/report/."""
    from ui_helpers import CHROMIUM, CHROMIUM_ARGS, REPO_ROOT, DagsterDev, Screenshots, processes_with_env

    if not CHROMIUM.exists():
        pytest.skip(
            f"{CHROMIUM} not found: install Debian's chromium (scripts/install.sh --dev does as root)"
        )
    playwright_api = pytest.importorskip("playwright.sync_api", reason="python playwright is not installed")
    env, settings, report, _ = corpus
    columns = [d["signal"]["column"] for d in _scored(report)]
    log_path = tmp_path / "dagster-dev.log"
    server = DagsterDev("vidscore_dagster.definitions", env=env, cwd=tmp_path, log_path=log_path)
    try:
        server.wait_ready(timeout_s=180)
        with playwright_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1600, "height": 1100})
                page.set_default_timeout(90_000)
                shots = Screenshots(page, REPO_ROOT / "test-artifacts" / "report", tmp_path / "shots")
                _check_html(page, settings.home / "reports/corpus_report.html", columns, shots)
                _check_ui(page, playwright_api.expect, server.url, columns, shots)
            finally:
                browser.close()
    finally:
        survivors = server.stop()
        for pid in processes_with_env("DAGSTER_HOME", env["DAGSTER_HOME"]):
            os.kill(pid, 9)
    assert not survivors


def _decoded_sizes(locator) -> list[list[int]]:
    """(naturalWidth, naturalHeight) of each image once decoded (a picture that cannot be decoded rejects)."""
    return locator.evaluate_all(
        "els => Promise.all(els.map(e => e.decode().then(() => [e.naturalWidth, e.naturalHeight])))"
    )


def _check_html(page, html: Path, columns: list[str], shots) -> None:
    page.goto(html.as_uri(), wait_until="load")
    for column in columns:
        histogram = page.locator(f"img[alt^='{column} histogram']")
        ((width, height),) = _decoded_sizes(histogram)
        assert width > 300 and height > 150, (column, width, height)
        tiles = _decoded_sizes(page.locator(f"section#{column} .sheet img"))  # its contact sheet
        assert tiles and all(w > 0 and h > 0 for w, h in tiles), column
    sizes = _decoded_sizes(page.locator("img"))
    assert len(sizes) > 2 * len(columns) and all(w > 0 and h > 0 for w, h in sizes)
    page.locator(f"section#{columns[0]} .sheet").first.scroll_into_view_if_needed()
    shots.take("01-report-html")


def _check_ui(page, expect, url: str, columns: list[str], shots) -> None:
    community = page.get_by_role("dialog").filter(has_text="Join the Dagster community")
    page.add_locator_handler(community, lambda: community.get_by_role("button", name="Skip").click())
    page.goto(f"{url}/assets/corpus_report", wait_until="domcontentloaded")
    expect(page.get_by_text("summary", exact=True).first).to_be_visible(timeout=120_000)
    for column in columns:
        for alt in (f"{column} histogram", f"{column} contact sheet"):
            picture = page.locator(f"img[alt^='{alt}']").first  # in the metadata table, not behind a link
            picture.scroll_into_view_if_needed()
            expect(picture).to_be_visible()
            ((width, height),) = _decoded_sizes(picture)
            assert width > 50 and height > 20, (alt, width, height)
        shots.take(f"02-ui-{column}")


def test_report_follows_changes_at_most_hourly():
    """The daemon's view (`evaluate_automation_conditions`): a run after the hourly tick when some input
    changed, none without a change, none twice within the hour."""
    from datetime import datetime, timedelta, timezone

    import dagster as dg

    from vidscore_dagster.defs.reports.assets import corpus_report
    from vidscore_dagster.defs.resources import default_resources

    inputs = [dg.AssetSpec(key) for key in corpus_report.dependency_keys]
    defs = dg.Definitions(assets=[corpus_report, *inputs], resources=default_resources())
    hour = datetime.now(timezone.utc).replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    with dg.instance_for_test() as instance:
        cursor = None

        def requested(minutes: int) -> int:
            nonlocal cursor
            result = dg.evaluate_automation_conditions(
                defs=defs, instance=instance, cursor=cursor, evaluation_time=hour + timedelta(minutes=minutes)
            )
            cursor = result.cursor
            return result.get_num_requested(dg.AssetKey("corpus_report"))

        def changed(key: str) -> None:
            instance.report_runless_asset_event(dg.AssetMaterialization(key, partition=None))

        assert requested(5) == 0  # first evaluation
        changed("aesthetic_scores")
        assert requested(10) == 0  # changed, but no tick since
        assert requested(60) == 1  # the hourly tick passed
        assert requested(65) == 0
        changed("flow_scores")
        assert requested(70) == 0  # once per hour at most
        assert requested(120) == 1
        assert requested(185) == 0  # a tick, but nothing changed
