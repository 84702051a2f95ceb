"""Helpers for the browser tests: a `dagster dev` server in its own process group, and screenshots."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
# Debian's Chromium, headless, with nothing that reaches out to the network by itself.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, process group) of a process, None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may hold spaces: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0], int(fields[2])


def _live_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _proc_stat(int(entry.name))
            if stat is not None and stat[0] != "Z":  # a zombie runs nothing: it only waits to be reaped
                pids.append(int(entry.name))
    return pids


def group_members(pgid: int) -> list[int]:
    """The running (non-zombie) processes of a process group."""
    return [pid for pid in _live_pids() if (_proc_stat(pid) or ("Z", -1))[1] == pgid]


def processes_with_env(name: str, value: str) -> list[int]:
    """Running processes whose environment has name=value (how a test finds every process it started)."""
    wanted = f"{name}={value}".encode()
    found = []
    for pid in _live_pids():
        if pid == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if wanted in environ.split(b"\0"):
            found.append(pid)
    return found


def command_line(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def restore_sigint() -> None:
    """`preexec_fn` for a child that must react to SIGINT as under a terminal.

    A shell that starts jobs in the background ignores SIGINT for them, and Python keeps an ignored
    SIGINT ignored. Dagster also maps SIGTERM to the SIGINT handler, so `dagster dev` would otherwise
    ignore SIGTERM as well and never shut down.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class DagsterDev:
    """`dagster dev` (webserver + daemon + code server) as a subprocess in a process group of its own."""

    def __init__(self, module: str, env: dict[str, str], cwd: Path, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # closed in stop()
        command = [sys.executable, "-m", "dagster", "dev", "-m", module]
        command += ["-h", "127.0.0.1", "-p", str(self.port)]
        self.process = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own session and process group: stop() signals the whole tree
            preexec_fn=restore_sigint,
        )
        self.pgid = self.process.pid

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def wait_ready(self, timeout_s: float = 120.0) -> dict:
        """Wait until the webserver answers /server_info; fail early when `dagster dev` exits."""
        import json

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"dagster dev exited with {self.process.returncode} before serving:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/server_info", timeout=5) as response:
                    return json.loads(response.read())
            except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError):
                time.sleep(1.0)
        tail = self.log_tail()
        raise TimeoutError(f"dagster dev did not serve {self.url} within {timeout_s:.0f}s:\n{tail}")

    def stop(self, term_timeout_s: float = 30.0, kill_timeout_s: float = 10.0) -> list[int]:
        """SIGTERM the process group, SIGKILL what is left after term_timeout_s; returns the survivors."""
        try:
            os.killpg(self.pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        survivors = self._wait_group_gone(term_timeout_s)
        if survivors:
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            survivors = self._wait_group_gone(kill_timeout_s)
        self._log.close()
        return survivors

    def _wait_group_gone(self, timeout_s: float) -> list[int]:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                self.process.wait(timeout=0.5)  # reaps `dagster dev` itself
            except subprocess.TimeoutExpired:
                pass
            members = group_members(self.pgid)
            if not members or time.monotonic() >= deadline:
                return members


def graphql(url: str, query: str, variables: dict | None = None, timeout: float = 30.0) -> dict:
    """POST a query to the webserver's /graphql; raises on GraphQL errors."""
    import json

    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(f"{url}/graphql", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        payload = json.loads(response.read())
    if payload.get("errors"):
        raise RuntimeError(f"GraphQL errors: {payload['errors']}")
    return payload["data"]


def stop_sensor(url: str, name: str, timeout_s: float = 120.0) -> str:
    """Stop a sensor of the served code location (as the UI's toggle does), once the location has
    loaded; returns its new status."""
    deadline = time.monotonic() + timeout_s
    sensor_id = None
    while sensor_id is None:
        try:
            data = graphql(
                url,
                "{ repositoriesOrError { ... on RepositoryConnection { nodes { sensors { id name } } } } }",
            )
            nodes = data["repositoriesOrError"].get("nodes") or []
            sensor_id = next((s["id"] for n in nodes for s in n["sensors"] if s["name"] == name), None)
        except (urllib.error.URLError, ConnectionError, TimeoutError, RuntimeError, KeyError):
            pass
        if sensor_id is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"sensor {name} not served at {url} within {timeout_s:.0f}s")
            time.sleep(1.0)
    result = graphql(
        url,
        "mutation($id: String!) { stopSensor(id: $id) { __typename"
        " ... on StopSensorMutationResult { instigationState { status } } ... on PythonError { message } } }",
        {"id": sensor_id},
    )["stopSensor"]
    if result["__typename"] != "StopSensorMutationResult":
        raise RuntimeError(f"stopSensor({name}) answered {result}")
    return result["instigationState"]["status"]


class Screenshots:
    """Saves each step's screenshot under every given folder (the repo's test-artifacts/ and pytest's tmp)."""

    def __init__(self, page, *folders: Path) -> None:
        self.page = page
        self.folders = folders
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)
        self.taken: list[Path] = []

    def take(self, name: str) -> Path:
        first = self.folders[0] / f"{name}.png"
        self.page.screenshot(path=str(first))
        for folder in self.folders[1:]:
            shutil.copyfile(first, folder / first.name)
        self.taken.append(first)
        return first
