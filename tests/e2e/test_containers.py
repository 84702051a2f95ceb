"""The deployment of docker/, run for real: images built, compose stack up, runs in their own containers.

What a user without a registry does (README "Deploy"), under podman's Docker API:
1. `scripts/build-images.sh` builds the images (Debian base, Python, Postgres, dagster, user-code);
2. `docker-compose up` brings up Postgres, the webserver, the daemon and the code server, with the
   fixture weights mounted read-only at /models and VIDSCORE_HOME on the data mount;
3. a meta file dropped in the inbox is ingested and scored by runs that the daemon launches, each in
   a container of the user-code image (DockerRunLauncher); GraphQL shows every run succeeded and every
   check passed, `vidscore sql` in the code server shows every table has its rows;
4. the asset graph and a score's page render in headless Chromium (screenshots: test-artifacts/containers/);
5. the stack is taken down and brought up again: the run history and the tables are still there;
6. one run's container is killed mid-step: that run ends failed, the run queued behind it succeeds;
7. the daemon's start-up check refuses a run network that is not its stack's.

The stack has a project name of its own (COMPOSE_PROJECT_NAME in its env file): the test creates,
and at the end removes, only that project's containers, network and volume.

The Kubernetes code server of docker/k8s, run with `podman kube play` (no cluster, helm or chart
here): `podman kube play` (4.3) runs Pods, Deployments and PersistentVolumeClaims. What it runs here: the
claims of docker/k8s/pvcs.yaml (as podman volumes) and the code server's pod, built from values.yaml
as the chart's user deployment does for the fields values.yaml sets (image, code-server arguments,
env, volumes, mounts, pod and container security contexts; tests/k8s_manifests.py), with the image
built by scripts/build-images.sh. The code server must serve the code location under that security
context: uid 1000, no capabilities, no privilege escalation, /models read-only, /data writable.

Not run here: the chart's own manifests (helm and the chart package are not available), the
webserver and daemon, run Jobs and weights-job.yaml (kube play has no Jobs; a run needs the
instance's Postgres), and the GPU request. Every name is made unique per test run, so the claims
of a real deployment on this host are never touched.

Both tests build the images and run containers on one podman storage, so they live in this one file:
`pytest -n 2 --dist loadfile` runs a file's tests on one worker, one after another.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import yaml
from k8s_manifests import code_server_and_run_job
from podman_stack import (
    REPO_ROOT,
    ComposeStack,
    PodmanService,
    build_images,
    container_test_marks,
    unique_project_name,
)
from ui_helpers import CHROMIUM, CHROMIUM_ARGS, Screenshots, free_port, graphql

from vidscore_dagster.defs.automation.jobs import BATCH_ASSETS

pytestmark = container_test_marks()

ARTIFACTS = REPO_ROOT / "test-artifacts" / "containers"
TAG = "0.1.0"
# The fixture weights under the upstream file names that VIDSCORE_MODELS_DIR (/models) expects.
MODEL_FILES = {
    "clip/ViT-L-14.pt": "clip_tiny_openai.pt",
    "aesthetic.pth": "aesthetic_random_scaled.pth",
    "unimatch/gmflow-scale2-regrefine6-mixdata-train320x576-4e7b215d.pth": "unimatch_random.pth",
}
RUNS_QUERY = """query($tags: [ExecutionTag!]) { runsOrError(filter: {tags: $tags}) { __typename
  ... on Runs { results { runId status jobName tags { key value } } } } }"""
CHECKS_QUERY = """query($runId: ID!) { logsForRun(runId: $runId, limit: 10000) { __typename
  ... on EventConnection { events { __typename
    ... on AssetCheckEvaluationEvent { evaluation { checkName success assetKey { path } } }
    ... on ExecutionStepStartEvent { stepKey } } } } }"""
FINAL = ("SUCCESS", "FAILURE", "CANCELED")


def wait_for(predicate, timeout: float, what: str, interval: float = 3.0):
    """Poll until `predicate` returns something truthy (exceptions mean "not yet")."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except AssertionError:
            raise
        except Exception as exc:  # noqa: BLE001 - a server still starting
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last!r})")


class Deployment:
    """The running stack as a user reaches it: the UI's port, GraphQL, `compose exec`."""

    def __init__(self, compose: ComposeStack, port: int, data: Path) -> None:
        self.compose = compose
        self.url = f"http://127.0.0.1:{port}"
        self.data = data

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        return graphql(self.url, query, variables, timeout=60)

    def wait_ready(self, timeout: float = 600) -> None:
        """The webserver answers and the code location (the user-code container) has loaded."""

        def loaded() -> bool:
            with urllib.request.urlopen(f"{self.url}/server_info", timeout=10):
                pass
            entries = self.graphql(
                "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
                "locationOrLoadError { __typename ... on PythonError { message } } } } } }"
            )["workspaceOrError"]["locationEntries"]
            for entry in entries:
                if entry["name"] == "vidscore" and entry["loadStatus"] == "LOADED":
                    error = entry["locationOrLoadError"]
                    assert error["__typename"] != "PythonError", error["message"]
                    return True
            return False

        wait_for(loaded, timeout, "the webserver and the vidscore code location")

    def runs(self, **tags: str) -> list[dict]:
        variables = {"tags": [{"key": k, "value": v} for k, v in tags.items()]}
        return self.graphql(RUNS_QUERY, variables)["runsOrError"]["results"]

    def wait_runs(self, expected: int, timeout: float, what: str, **tags: str) -> list[dict]:
        def ended() -> list[dict] | None:
            runs = self.runs(**tags)
            failed = [r for r in runs if r["status"] == "FAILURE"]
            assert not failed, f"run {failed[0]['runId']} failed\n{self.run_logs(failed[0])}"
            if len(runs) >= expected and all(r["status"] in FINAL for r in runs):
                return runs
            return None

        try:
            return wait_for(ended, timeout, what, interval=5.0)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\n{self.compose.logs()}") from None

    def run_status(self, run_id: str) -> str:
        data = self.graphql(
            "query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }", {"id": run_id}
        )
        return data["runOrError"]["status"]

    def events(self, run_id: str) -> list[dict]:
        return self.graphql(CHECKS_QUERY, {"runId": run_id})["logsForRun"]["events"]

    def run_logs(self, run: dict) -> str:
        tags = {t["key"]: t["value"] for t in run["tags"]}
        try:
            return (
                self.compose.service.client.containers.get(tags["docker/container_id"]).logs(tail=80).decode()
            )
        except Exception as exc:  # noqa: BLE001 - only for a failure message
            return f"(no container logs: {exc!r})"

    def sql(self, query: str) -> pd.DataFrame:
        """`vidscore sql --format csv` run in the code server's container, as an operator would."""
        import io

        out = self.compose.exec("user-code", "vidscore", "sql", "--format", "csv", query)
        return pd.read_csv(io.StringIO(out))

    def table_counts(self) -> dict[str, int]:
        # Clips, not rows: clip_embeddings has a row per sampled frame.
        union = " UNION ALL ".join(
            f"SELECT '{t}' AS name, count(DISTINCT video_id) AS n FROM \"{t}\"" for t in BATCH_ASSETS
        )
        frame = self.sql(union)
        return dict(zip(frame["name"], frame["n"].astype(int), strict=True))


def write_env_file(
    path: Path, *, project: str, data: Path, models: Path, videos: Path, port: int, socket: Path
) -> None:
    settings = {
        "COMPOSE_PROJECT_NAME": project,
        "VIDSCORE_DATA_HOST_DIR": data,
        "VIDSCORE_MODELS_HOST_DIR": models,
        "VIDSCORE_VIDEOS_HOST_DIR": videos,
        "VIDSCORE_TABLES": "",
        "VIDSCORE_DEVICE": "cpu",
        # As the other end-to-end tests on this 2-core machine: DIS flow, one process per run.
        "VIDSCORE_FLOW_BACKEND": "dis",
        "VIDSCORE_RUN_EXECUTOR": "in_process",
        "VIDSCORE_GPU_POOL_LIMIT": 1,
        "VIDSCORE_SHM_SIZE": "1g",
        "DAGSTER_POSTGRES_PASSWORD": secrets.token_hex(16),
        "DAGSTER_WEBSERVER_BIND": "127.0.0.1",
        "DAGSTER_WEBSERVER_PORT": port,
        "VIDSCORE_USER_CODE_IMAGE": f"localhost/vidscore-user-code:{TAG}",
        "VIDSCORE_DAGSTER_IMAGE": f"localhost/vidscore-dagster:{TAG}",
        "VIDSCORE_POSTGRES_IMAGE": "localhost/vidscore-postgres:15-bookworm",
        "DOCKER_SOCKET_HOST_PATH": socket,
    }
    path.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))


@pytest.fixture(scope="module")
def deployment(tmp_path_factory, fixtures):
    started = time.monotonic()
    print(build_images())
    print(f"images ready after {time.monotonic() - started:.0f} s")

    root = tmp_path_factory.mktemp("stack")
    data = root / "data"
    data.mkdir()
    os.chown(data, 1000, 1000)  # the images' user writes VIDSCORE_HOME
    models = root / "models"
    for target, source in MODEL_FILES.items():
        (models / target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(fixtures / "weights" / source, models / target)
    for folder in [models, *models.rglob("*")]:
        folder.chmod(0o755 if folder.is_dir() else 0o644)
    port = free_port()
    env_file = root / "stack.env"
    socket = root / "podman.sock"
    project = unique_project_name()
    write_env_file(
        env_file,
        project=project,
        data=data,
        models=models,
        videos=fixtures / "media",
        port=port,
        socket=socket,
    )

    service = PodmanService(socket, root / "podman-service.log")
    compose = ComposeStack(service, env_file, project)
    try:
        compose.up()
        stack = Deployment(compose, port, data)
        stack.wait_ready()
        print(f"stack serving after {time.monotonic() - started:.0f} s")
        yield stack
    finally:
        try:  # only what this stack created: its project's containers, network and volume
            compose.remove_run_containers()
            compose.down(volumes=True)
        finally:
            service.stop()


def screenshot_ui(stack: Deployment, tmp_path: Path, partition: str) -> list[Path]:
    """The asset graph and a score asset's page (with the scored batch), in headless Chromium."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            expect.set_options(timeout=60_000)
            shots = Screenshots(page, ARTIFACTS, tmp_path / "screenshots")
            # A fresh instance greets the first visitor with a "Join the Dagster community" dialog.
            community = page.get_by_role("dialog").filter(has_text="Join the Dagster community")
            page.add_locator_handler(community, lambda: community.get_by_role("button", name="Skip").click())
            page.goto(f"{stack.url}/asset-groups", wait_until="domcontentloaded")
            expect(page.get_by_text("scores", exact=True).last).to_be_visible()  # the group's node
            expect(page.get_by_text(re.compile("fetching statuses"))).to_have_count(0)
            expect(community).to_be_hidden()
            shots.take("01-asset-graph")
            page.goto(f"{stack.url}/assets/aesthetic_scores", wait_until="domcontentloaded")
            expect(page.get_by_text(partition, exact=True).first).to_be_visible()
            shots.take("02-aesthetic-scores")
        finally:
            browser.close()
    return shots.taken


def test_compose_stack_scores_in_run_containers_and_survives_restart_and_a_killed_run(
    deployment, fixtures, tmp_path
):
    stack = deployment
    timings: dict[str, float] = {}
    started = time.monotonic()

    # 3. Drop the fixture clips in the inbox (absolute paths: the videos mount keeps host paths).
    #    Only the videos: the broken file and the image would give error rows, which fail the error
    #    ratio checks (warnings) this test expects to pass.
    meta = pd.read_csv(fixtures / "media" / "meta.csv")
    meta = meta[meta["kind"] == "video"].reset_index(drop=True)
    meta["path"] = [str(fixtures / p) for p in meta["path"]]
    inbox = stack.data / "inbox"
    inbox.mkdir(exist_ok=True)
    os.chown(inbox, 1000, 1000)
    meta.to_csv(inbox / ".drop.csv.tmp", index=False)
    os.replace(inbox / ".drop.csv.tmp", inbox / "drop.csv")

    (ingest,) = stack.wait_runs(1, 600, "the inbox sensor's meta_files run", **{"vidscore/source": "inbox"})
    assert ingest["status"] == "SUCCESS" and ingest["jobName"] == "ingest_meta_file"
    (score_run,) = stack.wait_runs(
        1, 900, "the batches sensor's score_batch run", **{"vidscore/source": "meta_files"}
    )
    assert score_run["status"] == "SUCCESS" and score_run["jobName"] == "score_batch"
    timings["drop_to_scored_s"] = time.monotonic() - started

    # Each run ran in a container of its own, of the user-code image, started by the daemon, on the
    # stack's own network (named after the project, as its Postgres volume is).
    client = stack.compose.service.client
    assert client.volumes.get(f"{stack.compose.project}_postgres-data")
    for run in (ingest, score_run):
        container = stack.compose.run_container(run["runId"])
        assert container.labels["dagster/job_name"] == run["jobName"]
        assert f"localhost/vidscore-user-code:{TAG}" in container.image.tags
        assert container.attrs["State"]["ExitCode"] == 0
        assert list(container.attrs["NetworkSettings"]["Networks"]) == [stack.compose.network]

    # Every check of the score run passed, and there is one for each score table.
    events = stack.events(score_run["runId"])
    evaluations = [e["evaluation"] for e in events if e["__typename"] == "AssetCheckEvaluationEvent"]
    failed = [e["checkName"] for e in evaluations if not e["success"]]
    assert evaluations and not failed, failed
    checked = {e["assetKey"]["path"][-1] for e in evaluations}
    assert set(BATCH_ASSETS) <= checked, checked

    # Every table has rows for each clip of the meta file, seen through `vidscore sql` in the stack.
    counts = stack.table_counts()
    assert counts == dict.fromkeys(BATCH_ASSETS, len(meta)), counts

    # 4. The UI renders the asset graph and a score's page.
    partition = {t["key"]: t["value"] for t in score_run["tags"]}["dagster/partition"]
    shots = screenshot_ui(stack, tmp_path, partition)
    assert all(shot.stat().st_size > 10_000 for shot in shots), shots

    # 5. Down and up again: Postgres' volume keeps the history, the data mount the tables.
    restart = time.monotonic()
    stack.compose.remove_run_containers()  # exited, but still on the network that `down` removes
    stack.compose.down()
    stack.compose.up()
    stack.wait_ready()
    timings["restart_s"] = time.monotonic() - restart
    statuses = {r["runId"]: r["status"] for r in stack.runs()}
    assert statuses[ingest["runId"]] == "SUCCESS" and statuses[score_run["runId"]] == "SUCCESS", statuses
    assert stack.table_counts() == counts

    # 6. Two runs of the batch: the second waits for the first (one run per partition at a time).
    #    The first one's container is killed once a step has started: run monitoring marks the run
    #    failed, and the second run (re-probing `videos` only, to keep the test short) then proceeds.
    from dagster_graphql import DagsterGraphQLClient

    client = DagsterGraphQLClient("127.0.0.1", port_number=int(stack.url.rsplit(":", 1)[1]), timeout=60)

    def submit(source: str, assets: list[str] | None = None) -> str:
        tags = {"dagster/partition": partition, "vidscore/source": source}
        return client.submit_job_execution(
            "score_batch", repository_location_name="vidscore", repository_name="__repository__",
            tags=tags, asset_selection=assets,
        )  # fmt: skip

    killed_id = submit("e2e-killed")
    next_id = submit("e2e-next", ["videos"])
    wait_for(
        lambda: any(e["__typename"] == "ExecutionStepStartEvent" for e in stack.events(killed_id)),
        600, "a step of the first run to start",
    )  # fmt: skip
    assert stack.run_status(next_id) in ("QUEUED", "NOT_STARTED"), stack.run_status(next_id)
    stack.compose.run_container(killed_id).kill()
    killed_at = time.monotonic()
    wait_for(lambda: stack.run_status(killed_id) == "FAILURE", 300, "the killed run to be marked failed")
    timings["kill_to_failed_s"] = time.monotonic() - killed_at
    wait_for(lambda: stack.run_status(next_id) in FINAL, 900, "the run queued behind the killed one")
    assert stack.run_status(next_id) == "SUCCESS"
    assert stack.table_counts() == counts
    timings["total_after_stack_up_s"] = time.monotonic() - started

    # 7. A daemon whose run network is not its stack's (a `-p` that differs from COMPOSE_PROJECT_NAME)
    #    refuses to start, rather than launch runs onto another stack's network: the check its
    #    command runs first, run in the daemon's container with another stack's network.
    #    (`docker-compose run` cannot make a one-off container here: it links it to the running
    #    services, which podman does not support.)
    refused = stack.compose.run(
        "exec", "-T", "-e", "VIDSCORE_RUN_NETWORK=vidscore_vidscore",
        "dagster-daemon", "python", "/usr/local/bin/check-run-network", timeout=300,
    )  # fmt: skip
    output = refused.stdout + refused.stderr
    assert refused.returncode == 2, output
    assert (
        f"error: VIDSCORE_RUN_NETWORK is 'vidscore_vidscore', but this stack's network is {stack.compose.network}"
        in output
    )
    print({k: round(v, 1) for k, v in timings.items()})


# The Kubernetes code server under `podman kube play`.

K8S = REPO_ROOT / "docker" / "k8s"
IMAGE = f"localhost/vidscore-user-code:{TAG}"
LIST_REPOSITORIES = (
    "from dagster._grpc.client import DagsterGrpcClient; from dagster._serdes import deserialize_value; "
    "response = deserialize_value(DagsterGrpcClient(port={port}, host='localhost').list_repositories()); "
    "print(' '.join(s.repository_name for s in response.repository_symbols))"
)


def podman(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout, check=check)


def kube_manifests(prefix: str) -> tuple[list[dict], dict]:
    """pvcs.yaml's claims and the code server's pod, every name prefixed (claims, pod, references)."""
    values = yaml.safe_load((K8S / "values.yaml").read_text())
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    pod, _run_job = code_server_and_run_job(values, deployment)
    claims = [d for d in yaml.safe_load_all((K8S / "pvcs.yaml").read_text()) if d]
    for claim in claims:
        claim["metadata"]["name"] = prefix + claim["metadata"]["name"]
    pod["metadata"]["name"] = prefix + pod["metadata"]["name"]
    for volume in pod["spec"]["volumes"]:
        claim = volume.get("persistentVolumeClaim")
        if claim:
            claim["claimName"] = prefix + claim["claimName"]
    (container,) = pod["spec"]["containers"]
    container["image"], container["imagePullPolicy"] = IMAGE, "Never"  # no registry here
    return claims, pod


def test_code_server_pod_serves_the_code_location_under_the_values_security_context(tmp_path: Path):
    print(build_images())
    prefix = f"vidscore-kube-{secrets.token_hex(4)}-"
    claims, pod = kube_manifests(prefix)
    kube_file = tmp_path / "code-server.yaml"
    kube_file.write_text(yaml.safe_dump_all([*claims, pod]))
    (container_spec,) = pod["spec"]["containers"]
    container = f"{pod['metadata']['name']}-{container_spec['name']}"
    port = container_spec["args"][container_spec["args"].index("-p") + 1]
    try:
        podman("kube", "play", "--start", str(kube_file))

        def in_pod(*command: str) -> subprocess.CompletedProcess:
            return podman("exec", container, *command, check=False)

        deadline = time.monotonic() + 300
        while (health := in_pod("dagster", "api", "grpc-health-check", "-p", port)).returncode != 0:
            assert time.monotonic() < deadline, f"{health.stderr}\n{podman('logs', container).stderr[-3000:]}"
            time.sleep(3)
        repositories = in_pod("python", "-c", LIST_REPOSITORIES.format(port=port))
        assert repositories.stdout.split() == ["__repository__"], repositories.stderr

        security = pod["spec"]["securityContext"]
        assert in_pod("id", "-u").stdout.strip() == str(security["runAsUser"])
        status = dict(line.split(":\t", 1) for line in in_pod("cat", "/proc/1/status").stdout.splitlines())
        assert int(status["CapBnd"], 16) == 0, "capabilities: drop ALL (none left to gain)"
        assert status["NoNewPrivs"].strip() == "1", "allowPrivilegeEscalation: false"
        mounts = {m["mountPath"]: m for m in container_spec["volumeMounts"]}
        assert mounts["/models"]["readOnly"] is True
        assert "Read-only file system" in in_pod("touch", "/models/written").stderr
        assert in_pod("touch", "/data/written").returncode == 0
    finally:
        podman("kube", "down", str(kube_file), check=False)
        for claim in claims:
            podman("volume", "rm", "--force", claim["metadata"]["name"], check=False)
