"""The Dagster UI in a real browser: see the assets, materialize a partition, watch the run, see the histogram.

Starts `dagster dev` on the code location over a fresh VIDSCORE_HOME/DAGSTER_HOME (the fixtures' clips
ingested as `vidscore ingest` does, `videos` materialized), then drives Debian's Chromium with Playwright.
Screenshots of every step go to `test-artifacts/ui/` (git-ignored) and to the test's tmp folder.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import time
from pathlib import Path

import pytest
from fixture_env import fixture_model_env
from ui_helpers import (
    CHROMIUM,
    CHROMIUM_ARGS,
    REPO_ROOT,
    DagsterDev,
    Screenshots,
    command_line,
    processes_with_env,
    stop_sensor,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(480),  # a hang still ends in the cleanup below, not in the suite's 600 s limit
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"{CHROMIUM} not found: install Debian's chromium (scripts/install.sh --dev does as root)",
    ),
]

ARTIFACTS = REPO_ROOT / "test-artifacts" / "ui"
ASSETS = ["videos", "aesthetic_scores", "flow_scores", "matching_scores", "filtered_videos"]
RUN_STATUS = re.compile(r"^(Queued|Not started|Starting|Started|Success|Failure|Canceling|Canceled)$")
RUN_TIMEOUT_S = 240  # a run worker and a step process per asset and check on a busy runner


@pytest.fixture
def ui_env(tmp_path, monkeypatch, fixtures):
    """A fresh VIDSCORE_HOME and DAGSTER_HOME (with vidscore's dagster.yaml), fixture weights, DIS flow."""
    home = tmp_path / "home"
    dagster_home = home / "dagster"
    dagster_home.mkdir(parents=True)
    shutil.copyfile(REPO_ROOT / "vidscore_dagster" / "dagster.yaml", dagster_home / "dagster.yaml")
    env = {
        **fixture_model_env(fixtures),
        "VIDSCORE_HOME": str(home),
        "DAGSTER_HOME": str(dagster_home),
        "VIDSCORE_MODELS_DIR": str(tmp_path / "models"),
        "VIDSCORE_FLOW_BACKEND": "dis",
        # The daemon must not score the new partition by itself: the test launches that from the UI
        # (the batches sensor, which would too, is stopped once the server is up).
        "VIDSCORE_AUTOMATION": "off",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("VIDSCORE_TABLES", raising=False)  # tables under the fresh home: $VIDSCORE_HOME/tables
    return env


def _create_instance_storage() -> None:
    """Create the instance's SQLite storages before `dagster dev` starts: the server and this process
    would otherwise both create the same tables at once ("table ... already exists")."""
    import dagster as dg

    with dg.DagsterInstance.get() as instance:
        instance.get_runs(limit=1)
        instance.all_instigator_state()
        instance.get_dynamic_partitions("batches")


def _ingest_and_materialize_videos(meta: Path) -> str:
    """What `vidscore ingest` does, on the instance `dagster dev` will serve; returns the batch key.

    A `meta_files` run writes the batch manifest and registers the partition; a `videos` run probes it.
    """
    import dagster as dg

    from vidscore_core.ingest.batches import DEFAULT_BATCH_SIZE
    from vidscore_dagster.defs.resources import default_resources
    from vidscore_dagster.runner import ingest_meta_file, materialize_batches

    with dg.DagsterInstance.get() as instance:
        keys, failure = ingest_meta_file(instance, meta, DEFAULT_BATCH_SIZE, resources=default_resources())
        assert not failure, failure
        assert len(keys) == 1, keys
        assert keys[0] in instance.get_dynamic_partitions("batches")
        outcome = materialize_batches(instance, keys, ["videos"], resources=default_resources())
    assert all(outcome.values()), outcome
    return keys[0]


def _wait_for_run(page, run_url: str, shots: Screenshots, server: DagsterDev) -> str:
    """Poll the run page until its status tag reads a final state; reload now and then."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    last_reload = time.monotonic()
    status = "?"
    while time.monotonic() < deadline:
        tag = page.get_by_text(RUN_STATUS).first
        if tag.count():
            status = tag.inner_text().strip()
            if status in ("Success", "Failure", "Canceled"):
                return status
        page.wait_for_timeout(2000)
        if time.monotonic() - last_reload > 30:
            page.goto(run_url, wait_until="domcontentloaded")
            last_reload = time.monotonic()
    shots.take("05-run-timeout")
    pytest.fail(f"run {run_url} still {status!r} after {RUN_TIMEOUT_S}s\n{server.log_tail()}")


def test_ui_materializes_a_partition_and_shows_the_histogram(ui_env, fixtures, tmp_path):
    playwright_api = pytest.importorskip("playwright.sync_api", reason="python playwright is not installed")
    expect = playwright_api.expect
    log_path = tmp_path / "dagster-dev.log"
    _create_instance_storage()
    server = DagsterDev("vidscore_dagster.definitions", env=dict(os.environ), cwd=tmp_path, log_path=log_path)
    try:
        server.wait_ready(timeout_s=120)
        # The batches sensor would score the ingested batch by itself (a whole `score_batch` run, which
        # the UI's run would queue behind): the test launches that from the UI instead.
        assert stop_sensor(server.url, "batches_sensor") == "STOPPED"
        # Partitions registered on the instance show up in the UI live.
        key = _ingest_and_materialize_videos(fixtures / "media" / "meta.csv")
        with playwright_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 2560, "height": 1600})
            page.set_default_timeout(60_000)
            shots = Screenshots(page, tmp_path / "ui", ARTIFACTS)
            # A fresh instance greets the first visitor with a "Join the Dagster community" dialog.
            community = page.get_by_role("dialog").filter(has_text="Join the Dagster community")
            page.add_locator_handler(community, lambda: community.get_by_role("button", name="Skip").click())
            try:
                _drive_ui(page, expect, server, shots, key)
            except Exception:
                shots.take("99-failure")
                raise
            finally:
                browser.close()
    finally:
        survivors = server.stop()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log_path, ARTIFACTS / "dagster-dev.log")
        # Anything of this server that left the process group still carries its DAGSTER_HOME.
        ours = processes_with_env("DAGSTER_HOME", ui_env["DAGSTER_HOME"])
        leftovers = {pid: command_line(pid) for pid in ours}
        for pid in leftovers:
            os.kill(pid, signal.SIGKILL)
    assert not survivors, [command_line(pid) for pid in survivors]
    assert not leftovers, f"processes outside dagster dev's process group: {leftovers}"

    # The run launched from the UI published the partition's flow scores, seen through the views too.
    import duckdb

    from vidscore_core.settings import Settings
    from vidscore_core.tables.store import TableStore

    settings = Settings.from_env()
    store = TableStore.from_settings(settings)
    assert store.partition_counts("flow_scores") == {key: 5}
    rows = store.query_df(
        "SELECT count(*) AS n, count(flow) AS scored FROM flow_scores WHERE batch = ?", [key]
    )
    assert rows["n"][0] == 5 and rows["scored"][0] >= 1
    con = duckdb.connect(str(settings.db_path), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM flow_scores WHERE batch = ?", [key]).fetchone()[0] == 5
    finally:
        con.close()


def _drive_ui(page, expect, server: DagsterDev, shots: Screenshots, key: str) -> None:
    base = server.url
    # Pages of a busy 2-core runner take longer than Playwright's default 5 s to fill in.
    expect.set_options(timeout=30_000)

    # 1. The catalog lists every contract asset.
    page.goto(f"{base}/assets", wait_until="domcontentloaded")
    for name in ASSETS:
        expect(page.get_by_text(name, exact=True).first).to_be_visible(timeout=90_000)
    expect(page.get_by_text("1 partition", exact=True).first).to_be_visible()  # statuses have loaded
    shots.take("01-catalog")

    # 2. The asset graph, groups expanded, shows them as nodes.
    page.goto(f"{base}/asset-groups", wait_until="domcontentloaded")
    expect(page.get_by_text("scores", exact=True).last).to_be_visible()  # the collapsed group node
    # Right-click the empty canvas (below the toolbar) for the graph's menu: "Expand all groups".
    toolbar = page.get_by_role("button", name=re.compile("Materialize all")).bounding_box()
    page.mouse.click(toolbar["x"] - 200, toolbar["y"] + toolbar["height"] + 80, button="right")
    menu = page.get_by_role("menuitem", name=re.compile("(Expand|Collapse) all groups"))
    expect(menu).to_be_visible()
    if "Expand" in menu.inner_text():
        menu.click()
    else:  # already expanded
        page.keyboard.press("Escape")
    # Every registered score is a node now and the graph outgrows the view (nodes outside it are not
    # rendered): zoom out a little and check the nodes on the main path; the catalog above lists them all.
    page.mouse.move(toolbar["x"] - 600, toolbar["y"] + 600)
    page.keyboard.down("Control")  # the graph zooms on ctrl + wheel (a plain wheel pans)
    for _ in range(2):
        page.mouse.wheel(0, 100)
        page.wait_for_timeout(200)
    page.keyboard.up("Control")
    for name in ("videos", "aesthetic_scores", "flow_scores", "filtered_videos"):
        expect(page.get_by_text(name, exact=True).last).to_be_visible()
    shots.take("02-asset-graph")

    # 3. Materialize one partition of flow_scores from its asset page.
    page.goto(f"{base}/assets/flow_scores", wait_until="domcontentloaded")
    page.get_by_role("button", name=re.compile(r"Materialize…$")).first.click()
    dialog = page.get_by_role("dialog").filter(has_text="Launch runs to materialize flow_scores")
    expect(dialog).to_be_visible()
    dialog.get_by_text("Select a partition or create one").click()
    page.get_by_text(key, exact=True).first.click()  # the partition's row in the picker
    dialog.get_by_text("Launch runs to materialize flow_scores").click()  # closes the picker
    expect(dialog.get_by_text("1 partition", exact=True)).to_be_visible()
    shots.take("03-materialize-dialog")
    dialog.get_by_role("button", name=re.compile(r"^Launch 1 run$")).click()

    # 4. The toast names the run; open it from the runs list and watch its page until it finishes.
    toast = page.get_by_text(re.compile(r"^Launched run [0-9a-f]{8}$"))
    expect(toast).to_be_visible()
    short_id = toast.inner_text().split()[-1]
    shots.take("04-run-launched")
    page.goto(f"{base}/runs", wait_until="domcontentloaded")
    page.get_by_role("link", name=re.compile(rf"\b{short_id}$")).first.click()
    page.wait_for_url(re.compile(rf"/runs/{short_id}[0-9a-f-]{{28}}$"))
    run_url = page.url
    status = _wait_for_run(page, run_url, shots, server)
    shots.take("05-run-finished")
    assert status == "Success", f"run {run_url} ended {status}\n{server.log_tail()}"

    # 5. The asset page shows the materialization and its histogram picture.
    page.goto(f"{base}/assets/flow_scores", wait_until="domcontentloaded")
    expect(page.get_by_text(key, exact=True).first).to_be_visible()
    histogram = page.get_by_role("row").filter(has=page.get_by_text("flow_histogram", exact=True)).first
    histogram.scroll_into_view_if_needed()
    shots.take("06-asset-page")
    histogram.get_by_text("[Show Markdown]").click()
    markdown = page.get_by_role("dialog").filter(has_text="flow_histogram")
    picture = markdown.locator("img[src^='data:image/png']")
    expect(picture).to_be_visible()
    expect(picture).to_have_attribute("alt", re.compile(r"^flow score\b"))  # "flow score (<unit>)"
    width, height = picture.evaluate("img => img.decode().then(() => [img.naturalWidth, img.naturalHeight])")
    assert width > 100 and height > 50, (width, height)
    shots.take("07-histogram")
