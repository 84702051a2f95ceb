"""docker/'s compose stack, for real, under podman: images, podman's Docker API service, compose v1.

The stack is started exactly as a user without a registry starts it (README "Deploy"):
`scripts/build-images.sh`, `podman system service` on a socket, then `docker-compose` talking to that
socket with docker/docker-compose.yml and an env file. Dagster's daemon, inside the stack, launches
every run in a container of its own through the same socket (DockerRunLauncher).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker" / "docker-compose.yml"


def unique_project_name() -> str:
    """A compose project name of this test run's own: compose prefixes the stack's containers,
    network and volume with it, so the test never touches another stack on this host (a user's
    `vidscore` deployment, or another run of this test)."""
    return f"vidscore-e2e-{secrets.token_hex(4)}"


def podman_unavailable() -> str | None:
    """Why containers cannot run here (a skip reason), or None when podman and compose work."""
    if shutil.which("podman") is None:
        return "podman not installed (scripts/install.sh --dev installs it, as root)"
    if shutil.which("docker-compose") is None:
        return "docker-compose not installed (scripts/install.sh --dev installs it, as root)"
    if os.geteuid() != 0:
        return "the container test runs podman as root (rootless podman needs subuids and its own settings)"
    info = subprocess.run(["podman", "info"], capture_output=True, text=True, timeout=120)
    if info.returncode != 0:
        return f"podman does not work here: {info.stderr.strip()[-300:]}"
    return None


def container_test_marks() -> list[pytest.MarkDecorator]:
    """The marks of a test that builds the images and runs containers: skipped, with the reason,
    where podman cannot run them."""
    unavailable = podman_unavailable()
    return [
        pytest.mark.e2e,
        pytest.mark.slow,
        pytest.mark.timeout(3000),  # a cold image build alone takes about ten minutes on 2 cores
        pytest.mark.skipif(unavailable is not None, reason=unavailable or ""),
    ]


def build_images() -> str:
    """scripts/build-images.sh with this host's pip configuration; its report (one line per image)."""
    result = subprocess.run(
        [str(REPO_ROOT / "scripts" / "build-images.sh"), "--host-pip-config"],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=3600,
    )  # fmt: skip
    if result.returncode != 0:
        raise RuntimeError(f"building the images failed:\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}")
    return "\n".join(line for line in result.stdout.splitlines() if line.startswith("built "))


class PodmanService:
    """`podman system service` answering the Docker API on a socket of its own."""

    def __init__(self, socket_path: Path, log_path: Path) -> None:
        self.socket_path = socket_path
        self.url = f"unix://{socket_path}"
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            ["podman", "system", "service", "--time=0", self.url],
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        self.client = self._wait_ready()

    def _wait_ready(self, timeout_s: float = 60.0):
        import docker

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"podman system service exited with {self.process.returncode}")
            if self.socket_path.exists():
                client = docker.DockerClient(base_url=self.url, timeout=120)
                try:
                    client.ping()
                    return client
                except Exception:  # noqa: BLE001 - not answering yet
                    client.close()
            time.sleep(0.5)
        raise TimeoutError(f"podman system service did not answer on {self.url} within {timeout_s:.0f}s")

    def stop(self) -> None:
        self.client.close()
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.process.pid, signal.SIGKILL)
        self._log.close()


class HealthChecks:
    """Runs the healthchecks of the stack's containers until each is healthy, while compose waits.

    Podman runs a container's HEALTHCHECK from systemd timers; where systemd does not run (this
    CI's sandbox) nobody does, and `depends_on: condition: service_healthy` would wait forever.
    Docker runs them itself. `podman healthcheck run` runs one check and records its result.
    """

    def __init__(self, client, project: str, interval_s: float = 5.0) -> None:
        self.client = client
        self.project = project
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> HealthChecks:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                containers = self.client.containers.list(
                    filters={"label": f"com.docker.compose.project={self.project}"}
                )
            except Exception:  # noqa: BLE001 - the service is busy; try again next round
                continue
            for container in containers:
                health = (container.attrs.get("State", {}).get("Health") or {}).get("Status")
                if health in ("starting", "unhealthy"):
                    subprocess.run(["podman", "healthcheck", "run", container.id],
                                   capture_output=True, timeout=60)  # fmt: skip


class ComposeStack:
    """docker-compose (v1) against the podman socket, with docker/docker-compose.yml and an env file.

    The project (the stack's name) is the env file's COMPOSE_PROJECT_NAME, as for a user (README
    "Deploy"): compose names the network `<project>_vidscore`, which the run containers join.
    """

    def __init__(self, service: PodmanService, env_file: Path, project: str) -> None:
        self.service = service
        self.env_file = env_file
        self.project = project
        self.network = f"{project}_vidscore"
        environ = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
        self.env = {**environ, "DOCKER_HOST": service.url, "COMPOSE_HTTP_TIMEOUT": "300"}

    def compose(self, *args: str, timeout: float = 600) -> str:
        result = self.run(*args, timeout=timeout)
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(result.args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}"
            )
        return result.stdout

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """`docker-compose ARGS` with this stack's file and env file, whatever its exit status."""
        command = ["docker-compose", "-f", str(COMPOSE_FILE), "--env-file", str(self.env_file), *args]
        return subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=timeout)

    def up(self) -> None:
        """Start the stack from the built images; returns once compose has started every service."""
        with HealthChecks(self.service.client, self.project):
            self.compose("up", "-d", "--no-build")

    def down(self, volumes: bool = False) -> None:
        self.compose("down", *(["--volumes"] if volumes else []), timeout=300)

    def exec(self, service: str, *command: str, timeout: float = 300) -> str:
        return self.compose("exec", "-T", service, *command, timeout=timeout)

    def logs(self) -> str:
        try:
            return self.compose("logs", "--no-color", "--tail=60", timeout=120)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            return f"(no logs: {exc})"

    def run_container(self, run_id: str):
        """The container DockerRunLauncher started for a run (it labels each with the run's id)."""
        (container,) = self.service.client.containers.list(
            all=True, filters={"label": f"dagster/run_id={run_id}"}
        )
        return container

    def remove_run_containers(self) -> None:
        """This stack's run containers: they stay after their run (DockerRunLauncher does not remove
        them) and keep the stack's network in use. Only those on this stack's network: another
        stack's run containers carry the same labels."""
        for container in self.service.client.containers.list(all=True, filters={"label": "app=vidscore"}):
            if self.network in container.attrs["NetworkSettings"]["Networks"]:
                container.remove(force=True)
