"""Kubernetes objects built from docker/k8s/values.yaml the way Dagster's chart and run launcher do,
for the fields values.yaml sets (the chart itself is not available here: no helm, no registry)."""

from __future__ import annotations

import copy


def code_server_and_run_job(values: dict, deployment: dict) -> list[dict]:
    """The code server's pod and a run's Job roughly as the chart and K8sRunLauncher build them."""
    image = f"{deployment['image']['repository']}:{deployment['image']['tag']}"
    container = {
        "name": "dagster",
        "image": image,
        "args": [
            "dagster",
            "code-server",
            "start",
            "-h",
            "0.0.0.0",
            "-p",
            str(deployment["port"]),
            *deployment["codeServerArgs"],
        ],
        "env": deployment["env"],
        "volumeMounts": deployment["volumeMounts"],
        "securityContext": deployment["securityContext"],
    }
    code_server = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "vidscore-code-server"},
        "spec": {
            "securityContext": deployment["podSecurityContext"],
            "containers": [container],
            "volumes": deployment["volumes"],
        },
    }
    run_config = values["runLauncher"]["config"]["k8sRunLauncher"]["runK8sConfig"]
    run_container = {
        **copy.deepcopy(container),
        "args": ["dagster", "api", "execute_run", "{}"],
        **run_config.get("containerConfig", {}),
    }
    run_job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "dagster-run-0"},
        "spec": {
            **run_config.get("jobSpecConfig", {}),
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [run_container],
                    "volumes": deployment["volumes"],
                    **run_config.get("podSpecConfig", {}),
                }
            },
        },
    }
    return [code_server, run_job]
