"""The Kubernetes code server of docker/k8s, run with `podman kube play` (no cluster, helm or chart here).

`podman kube play` (4.3) runs Pods, Deployments and PersistentVolumeClaims. What it runs here: the
claims of docker/k8s/pvcs.yaml (as podman volumes) and the code server's pod, built from values.yaml
as the chart's user deployment does for the fields values.yaml sets (image, code-server arguments,
env, volumes, mounts, pod and container security contexts; tests/k8s_manifests.py), with the image
built by scripts/build-images.sh. The code server must serve the code location under that security
context: uid 1000, no capabilities, no privilege escalation, /models read-only, /data writable.

Not run here: the chart's own manifests (helm and the chart package are not available), the
webserver and daemon, run Jobs and weights-job.yaml (kube play has no Jobs; a run needs the
instance's Postgres), and the GPU request. Every name is made unique per test run, so the claims
of a real deployment on this host are never touched.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from pathlib import Path

import yaml
from k8s_manifests import code_server_and_run_job
from podman_stack import REPO_ROOT, build_images, container_test_marks

pytestmark = container_test_marks()

K8S = REPO_ROOT / "docker" / "k8s"
IMAGE = "localhost/vidscore-user-code:0.1.0"
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
