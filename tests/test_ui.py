"""`vidscore ui` starts the Dagster UI from the venv's own console script, without an activated venv."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml
from ui_helpers import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
VIDSCORE = Path(sys.executable).with_name("vidscore")
LOCATIONS_QUERY = """
{ workspaceOrError { __typename ... on Workspace {
    locationEntries { name locationOrLoadError { __typename } } } } }
"""


def _graphql(port: int, query: str) -> dict | None:
    """The answer of the webserver's GraphQL endpoint, or None while it is not (yet) serving."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query}).encode(),
        headers={"Content-Type": "application/json"},
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never a proxy
    try:
        with opener.open(request, timeout=10) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _stop(proc: subprocess.Popen) -> None:
    """End `vidscore ui` and everything it started (its own process group)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    try:  # dagster dev's webserver, daemon and code servers share the group; none may outlive the test
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def test_ui_serves_the_one_code_location_from_the_venv(tmp_path: Path) -> None:
    expected = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text())["load_from"][0]["python_module"]
    # pyproject's [tool.dagster] (what a bare `dagster dev` in the checkout reads) names it the same way.
    pyproject = (REPO_ROOT / "pyproject.toml").read_text()
    named = re.search(r'^code_location_name\s*=\s*"([^"]+)"', pyproject, re.MULTILINE)
    assert named and named.group(1) == expected["location_name"]

    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIDSCORE_", "DAGSTER_", "VIRTUAL_ENV"))}
    bin_dir = str(VIDSCORE.parent)
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if p and p != bin_dir)
    env.update(HOME=str(tmp_path), VIDSCORE_HOME=str(tmp_path / "home"))
    port = free_port()
    log_path = tmp_path / "ui.log"
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [str(VIDSCORE), "ui", "--port", str(port)],
            cwd=tmp_path,  # not the repository: the workspace must not depend on the checkout
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        answer = None
        deadline = time.monotonic() + 480  # generous: a cold start on a loaded 2-core machine
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"vidscore ui exited with {proc.returncode}:\n{log_path.read_text()}"
            answer = _graphql(port, LOCATIONS_QUERY)
            entries = (answer or {}).get("data", {}).get("workspaceOrError", {}).get("locationEntries")
            if entries and all(e["locationOrLoadError"] for e in entries):
                break
            time.sleep(2)
        assert answer is not None, f"no answer on port {port}:\n{log_path.read_text()}"
        workspace = answer["data"]["workspaceOrError"]
        assert workspace["__typename"] == "Workspace", answer
        entries = workspace["locationEntries"]
        assert [e["name"] for e in entries] == [expected["location_name"]], answer
        assert entries[0]["locationOrLoadError"]["__typename"] != "PythonError", answer
        written = yaml.safe_load((tmp_path / "home" / "dagster" / "workspace.yaml").read_text())
        assert written["load_from"] == [{"python_module": expected}]
    finally:
        _stop(proc)
    assert "FileNotFoundError" not in log_path.read_text()


def test_ui_on_a_taken_port_is_one_error_line(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIDSCORE_", "DAGSTER_"))}
    env.update(HOME=str(tmp_path), VIDSCORE_HOME=str(tmp_path / "home"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [str(VIDSCORE), "ui", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"error: cannot serve on 127.0.0.1:{port}: Address already in use; pick another with --port"
    ]
