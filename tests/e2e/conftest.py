"""Real servers on loopback: Postgres, dagster-webserver and dagster-daemon over vidscore's code location.

Postgres comes from the system's binaries (Debian: `apt-get install postgresql`, binaries in
/usr/lib/postgresql/<version>/bin); it runs on a free port with its data in a temporary folder,
as the `postgres` user when the tests run as root (postgres refuses to run as root).
Every process is started in its own session and stopped at the end with all its descendants.

The instance is configured as vidscore's shipped dagster.yaml is (queued runs, the `gpu` pool, the
MonitoredRunLauncher with run monitoring, so a run killed with SIGKILL ends failed and frees its
slots), with its storage in Postgres. A test module may override the servers' environment with a
module-scoped `platform_env_overrides` fixture.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fixture_env import fixture_model_env
from ui_helpers import free_port, graphql

REPO_ROOT = Path(__file__).resolve().parents[2]
LOCATION = "vidscore"
REPOSITORY = "__repository__"  # the repository name Dagster gives a Definitions object


def pg_bin_dir() -> Path | None:
    """Where initdb and pg_ctl live: PATH first, then Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent  # PATH may hold symlinks to the real bin folder
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: [int(x) for x in p.parent.name.split(".") if x.isdigit()],
    )
    for candidate in reversed(candidates):
        if (candidate / "initdb").exists() and (candidate / "pg_ctl").exists():
            return candidate
    return None


class StartupFailed(RuntimeError):
    """A server died or the code location failed to load: waiting longer cannot help."""


def wait_for(
    predicate: Callable[[], object],
    timeout: float,
    what: str,
    interval: float = 1.0,
    fatal: type[BaseException] = AssertionError,
) -> object:
    """Poll until `predicate` returns something truthy; fail after `timeout` seconds.

    Other exceptions mean "not yet" (a server still starting); `fatal` ones end the wait at once.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except fatal:
            raise
        except Exception as exc:
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_error!r})")


# -- processes --------------------------------------------------------------------------------------


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as fh:
                stat = fh.read()
        except OSError:
            continue
        # Field 4 is the parent pid; the command name in parentheses may contain spaces.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    return children


def descendants(pid: int) -> list[int]:
    tree = _children_map()
    found, todo = [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@dataclass
class Service:
    """A server started in its own session, logging to a file."""

    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen | None = None

    def start(self) -> Service:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the process's lifetime
        self.process = subprocess.Popen(
            self.args,
            env=self.env,
            cwd=REPO_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self

    def tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> list[int]:
        """SIGTERM the process group, then SIGKILL whatever of its tree is left; returns leftovers."""
        if self.process is None:
            return []
        pid = self.process.pid
        tree = [pid, *descendants(pid)]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        for child in tree[1:]:  # code servers and run workers may have left the group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(child, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=timeout)
        while time.monotonic() < deadline and any(_alive(p) for p in tree[1:]):
            time.sleep(0.2)
        leftovers = [p for p in tree if _alive(p)]
        for p in leftovers:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(p, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        return leftovers


# -- Postgres ---------------------------------------------------------------------------------------


@dataclass
class Postgres:
    bin_dir: Path
    root: Path
    port: int
    user: str = "vidscore"
    password: str = "vidscore"
    db: str = "dagster"
    as_user: list[str] = field(default_factory=list)

    def run(self, tool: str, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*self.as_user, str(self.bin_dir / tool), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=True,
        )

    @property
    def data(self) -> Path:
        return self.root / "data"

    def start(self) -> None:
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self.as_user:
            shutil.chown(pwfile, "postgres", "postgres")
        self.run("initdb", "-D", str(self.data), "-U", self.user, "--pwfile", str(pwfile), "--auth=trust",
                 "-E", "UTF8", "--no-locale", "--no-sync")  # fmt: skip
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        )
        self.run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "postgres.log"), "-w", "-t", "60",
                 "-o", options, "start")  # fmt: skip
        if (self.bin_dir / "createdb").exists():
            self.run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, self.db)
        else:
            self.db = "postgres"  # initdb's own database serves as well

    def stop(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            self.run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "30", "stop")


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    bin_dir = pg_bin_dir()
    if bin_dir is None:
        pytest.skip("Postgres server binaries (initdb, pg_ctl) not found: apt-get install postgresql")
    as_user: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root: run its tools as the postgres user
        runuser = shutil.which("runuser")
        if runuser is None:
            pytest.skip("running as root and `runuser` is missing: cannot start postgres as another user")
        as_user = [runuser, "-u", "postgres", "--"]
    # Not under pytest's tmp folder: that is private to root, and postgres must reach its data.
    root = Path(tempfile.mkdtemp(prefix="vidscore-e2e-pg-"))
    if as_user:
        shutil.chown(root, "postgres", "postgres")
    os.chmod(root, 0o700)
    server = Postgres(bin_dir=bin_dir, root=root, port=free_port(), as_user=as_user)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


# -- Dagster ----------------------------------------------------------------------------------------


def dagster_yaml(pg: Postgres) -> str:
    storage = {
        "postgres": {
            "postgres_db": {
                "username": pg.user,
                "password": pg.password,
                "hostname": "127.0.0.1",
                "db_name": pg.db,
                "port": pg.port,
                # The driver dagster-postgres depends on; SQLAlchemy >= 2.1 would pick psycopg 3.
                "scheme": "postgresql+psycopg2",
            }
        }
    }
    config = {
        "storage": storage,  # runs, event logs and schedules in Postgres
        "run_coordinator": {
            "module": "dagster._core.run_coordinator",
            "class": "QueuedRunCoordinator",
            "config": {"dequeue_interval_seconds": 1},
        },
        "concurrency": {
            "runs": {
                "max_concurrent_runs": 4,
                # One run per batch at a time (saves work; publishing is atomic either way).
                "tag_concurrency_limits": [
                    {"key": "dagster/partition", "value": {"applyLimitPerUniqueValue": True}, "limit": 1}
                ],
            },
            "pools": {"default_limit": 1, "granularity": "op"},
        },
        # As shipped: the launcher answers run monitoring's health check, so a run whose process was
        # killed (SIGKILL, OOM) is marked failed and its pool slots are freed.
        "run_launcher": {"module": "vidscore_dagster.launcher", "class": "MonitoredRunLauncher"},
        "run_monitoring": {
            "enabled": True,
            "poll_interval_seconds": 10,
            "free_slots_after_run_end_seconds": 10,
        },
        "telemetry": {"enabled": False},
        "sensors": {"use_threads": True, "num_workers": 2},
        "schedules": {"use_threads": True, "num_workers": 2},
    }
    return json.dumps(config, indent=1)  # JSON is YAML


@dataclass
class Platform:
    home: Path
    dagster_home: Path
    port: int
    env: dict[str, str]
    services: list[Service]
    postgres: Postgres
    location: str = LOCATION
    repository: str = REPOSITORY
    wait_for = staticmethod(wait_for)
    descendants = staticmethod(descendants)
    alive = staticmethod(_alive)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def graphql(self, query: str, variables: dict | None = None, timeout: float = 30.0) -> dict:
        return graphql(self.url, query, variables, timeout)

    def client(self):
        from dagster_graphql import DagsterGraphQLClient

        return DagsterGraphQLClient("127.0.0.1", port_number=self.port, timeout=60)

    def store(self):
        """The servers' tables (`VIDSCORE_TABLES`), read straight from their Parquet files."""
        from vidscore_core.tables.store import TableStore

        return TableStore(self.env["VIDSCORE_TABLES"])

    def repository_selector(self) -> dict[str, str]:
        return {"repositoryLocationName": self.location, "repositoryName": self.repository}

    def sensors(self) -> dict[str, dict]:
        """name -> {id, status} of the code location's sensors, through GraphQL."""
        data = self.graphql(
            "query($sel: RepositorySelector!) { repositoryOrError(repositorySelector: $sel) { __typename"
            " ... on Repository { sensors { id name sensorState { status } } } } }",
            {"sel": self.repository_selector()},
        )["repositoryOrError"]
        return {s["name"]: {"id": s["id"], "status": s["sensorState"]["status"]} for s in data["sensors"]}

    def stop_sensor(self, name: str) -> str:
        """Stop a sensor as the UI's toggle does; returns its new status."""
        result = self.graphql(
            "mutation($id: String!) { stopSensor(id: $id) { __typename"
            " ... on StopSensorMutationResult { instigationState { status } }"
            " ... on PythonError { message } } }",
            {"id": self.sensors()[name]["id"]},
        )["stopSensor"]
        if result["__typename"] != "StopSensorMutationResult":
            raise RuntimeError(f"stopSensor({name}) answered {result}")
        return result["instigationState"]["status"]

    def submit(
        self,
        job: str,
        *,
        tags: dict[str, str] | None = None,
        run_config: dict | None = None,
        asset_selection: list[str] | None = None,
    ) -> str:
        """Submit a run through the Python GraphQL client (queued; the daemon launches it)."""
        return self.client().submit_job_execution(
            job, repository_location_name=self.location, repository_name=self.repository,
            run_config=run_config, tags=tags, asset_selection=asset_selection,
        )  # fmt: skip

    def wait_run(self, run_id: str, timeout: float, what: str = "") -> object:
        """The run once it has ended (any final status), polling the instance."""
        instance = self.instance()
        finals = ("SUCCESS", "FAILURE", "CANCELED")

        def ended():
            run = instance.get_run_by_id(run_id)
            return run if run is not None and run.status.value in finals else None

        try:
            return wait_for(ended, timeout, what or f"run {run_id} to end", 2.0)
        except TimeoutError as exc:
            raise AssertionError(f"{exc}\nruns:\n{self.describe_runs()}\n{self.logs()}") from None

    def instance(self):
        """The same Dagster instance as the servers (reads Postgres), for assertions."""
        import dagster as dg
        from dagster._core.instance.ref import InstanceRef

        return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(self.dagster_home)))

    def describe_runs(self) -> str:
        """One line per run: id, status, job, partition, source and selected assets (for failures)."""
        lines = []
        for run in reversed(list(self.instance().get_runs())):
            selection = sorted(k.to_user_string() for k in run.asset_selection or [])
            lines.append(f"{run.run_id[:8]} {run.status.value:<9} {run.job_name:<14} "
                         f"{run.tags.get('dagster/partition', run.tags.get('dagster/asset_partition_range_start', '-'))} "
                         f"source={run.tags.get('vidscore/source', run.tags.get('dagster/sensor_name', '-'))} "
                         f"assets={selection or 'all'}")  # fmt: skip
        return "\n".join(lines)

    def logs(self) -> str:
        return "\n".join(f"----- {s.name} ({s.log_path}) -----\n{s.tail()}" for s in self.services)


def _location_loaded(platform: Platform) -> bool:
    dead = [s.name for s in platform.services if s.process is not None and s.process.poll() is not None]
    if dead:
        raise StartupFailed(f"{', '.join(dead)} exited during start-up\n{platform.logs()}")
    data = platform.graphql(
        "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
        "locationOrLoadError { __typename ... on PythonError { message } } } } } }"
    )
    for entry in data["workspaceOrError"]["locationEntries"]:
        if entry["name"] == LOCATION and entry["loadStatus"] == "LOADED":
            error = entry["locationOrLoadError"]
            if error and error["__typename"] == "PythonError":
                raise StartupFailed(f"code location failed to load: {error['message']}")
            return True
    return False


@pytest.fixture(scope="module")
def platform_env_overrides() -> dict[str, str]:
    """Extra environment for this module's servers (override in a test module)."""
    return {}


@pytest.fixture(scope="module")
def platform(
    postgres: Postgres, fixtures: Path, tmp_path_factory, platform_env_overrides: dict[str, str]
) -> Iterator[Platform]:
    root = tmp_path_factory.mktemp("e2e")
    home, dagster_home = root / "vidscore", root / "dagster_home"
    dagster_home.mkdir(parents=True)
    (dagster_home / "dagster.yaml").write_text(dagster_yaml(postgres))
    module = os.environ.get("VIDSCORE_E2E_MODULE", "vidscore_dagster.definitions")
    workspace = root / "workspace.yaml"
    workspace.write_text(json.dumps({"load_from": [{"python_module": {
        "module_name": module, "location_name": LOCATION, "working_directory": str(REPO_ROOT),
        "executable_path": sys.executable}}]}))  # fmt: skip
    env = {
        **os.environ,
        **fixture_model_env(fixtures),
        "DAGSTER_HOME": str(dagster_home),
        "VIDSCORE_HOME": str(home),
        "VIDSCORE_TABLES": str(home / "tables"),
        "VIDSCORE_MODELS_DIR": str(root / "models"),
        "VIDSCORE_FLOW_BACKEND": "dis",
        # One process per run (this box has 2 cores); VIDSCORE_E2E_RUN_EXECUTOR=multiprocess tries the default.
        "VIDSCORE_RUN_EXECUTOR": os.environ.get("VIDSCORE_E2E_RUN_EXECUTOR", "in_process"),
        "VIDSCORE_INBOX_SETTLE_S": "1",
        "VIDSCORE_INBOX_INTERVAL_S": "3",
        "VIDSCORE_INGEST_BATCH_SIZE": "5",
        "VIDSCORE_BACKFILL_CRON": "* * * * *",  # a tick every minute, so the test sees one
        "VIDSCORE_AUTOMATION": "on_missing",
        "VIDSCORE_AUTOMATION_INTERVAL_S": "10",
        "OMP_NUM_THREADS": "1",
        "PYTHONUNBUFFERED": "1",
        **platform_env_overrides,
    }
    bin_dir = Path(sys.executable).parent
    port = free_port()
    services = [
        Service(
            "webserver",
            [str(bin_dir / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port), "-w", str(workspace)],
            env,
            root / "logs" / "webserver.log",
        ),  # fmt: skip
        Service(
            "daemon",
            [str(bin_dir / "dagster-daemon"), "run", "-w", str(workspace)],
            env,
            root / "logs" / "daemon.log",
        ),  # fmt: skip
    ]
    platform = Platform(home, dagster_home, port, env, services, postgres)
    try:
        for service in services:
            service.start()
        wait_for(lambda: _location_loaded(platform), 240, "the webserver to load the code location", 2.0,
                 fatal=StartupFailed)  # fmt: skip
        # What `vidscore ui` does on a machine with one GPU (or none): one model step at a time.
        subprocess.run([str(bin_dir / "dagster"), "instance", "concurrency", "set", "gpu", "1"], env=env,
                       check=True, capture_output=True, timeout=120)  # fmt: skip
        yield platform
    finally:
        leftovers = {s.name: s.stop() for s in reversed(services)}
        stray = {name: pids for name, pids in leftovers.items() if pids}
        if stray:
            print(f"e2e: killed processes that ignored SIGTERM: {stray}", file=sys.stderr)
