"""docker-compose.yml (GPU) and docker-compose.cpu.yml: valid, wired the way the DAG writes.

No Docker engine is needed: docker-compose 1.29 validates and renders the files
(`docker-compose config`), and the rendered YAML is checked against what the pipeline does
under the compose environment (src/recflow/config.py defaults from the RECFLOW_* variables).
The TF Serving flags of the compose file are then given to recflow-model-server, which takes
the same flags, and the DAG's own promotion code deploys a model through it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from recflow.config import PipelineConfig, from_params
from recflow.serving.server_process import ServerProcess, free_port

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
CPU_FILE = ROOT / "docker-compose.cpu.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKER_COMPOSE = shutil.which("docker-compose")

pytestmark = pytest.mark.skipif(
    DOCKER_COMPOSE is None,
    reason="docker-compose is not installed (Debian: apt-get install -y docker-compose; "
    "`make test` installs it when run as root)",
)

VARIANTS = {"gpu": (COMPOSE_FILE,), "cpu": (COMPOSE_FILE, CPU_FILE)}
SERVING_NAME = "tf-serving"  # what RECFLOW_SERVING_HOST must resolve to
ONE_SHOT = {"airflow-init"}
AIRFLOW_SERVICES = {
    "airflow-apiserver",
    "airflow-scheduler",
    "airflow-dag-processor",
    "airflow-triggerer",
    "airflow-worker",
    "airflow-init",
}


# ---------------------------------------------------------------------------------------------
# Running docker-compose


def env_example() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def run_compose(files: tuple[Path, ...], env_file: Path, *args: str) -> subprocess.CompletedProcess:
    assert DOCKER_COMPOSE is not None
    # The caller's environment wins over --env-file in Compose: drop every variable the
    # files read, so the result does not depend on the shell that runs the tests.
    names = set(env_example()) | {"COMPOSE_PROFILES", "COMPOSE_FILE", "COMPOSE_PROJECT_NAME"}
    env = {k: v for k, v in os.environ.items() if k not in names}
    cmd = [DOCKER_COMPOSE, "--env-file", str(env_file)]
    for f in files:
        cmd += ["-f", str(f)]
    return subprocess.run(
        [*cmd, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


@pytest.fixture(scope="module")
def env_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """.env.example with every empty (secret) value filled in, as an operator would."""
    lines = []
    for key, value in env_example().items():
        lines.append(f"{key}={value or 'test-' + key.lower().replace('_', '-')}")
    path = tmp_path_factory.mktemp("compose") / ".env"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def rendered(env_file: Path) -> dict[str, dict[str, Any]]:
    out = {}
    for name, files in VARIANTS.items():
        proc = run_compose(files, env_file, "config")
        assert proc.returncode == 0, f"{name}: {proc.stderr}"
        out[name] = yaml.safe_load(proc.stdout)
    return out


# ---------------------------------------------------------------------------------------------
# Reading the rendered configuration


def active_services(cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services `up` starts with no COMPOSE_PROFILES (a service with profiles is opt-in)."""
    return {n: s for n, s in cfg["services"].items() if not s.get("profiles")}


def serving_service(cfg: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    found = [
        (n, s)
        for n, s in active_services(cfg).items()
        if "tensorflow_model_server" in (s.get("entrypoint") or [])
    ]
    assert len(found) == 1, f"expected one active TF Serving service, found {[n for n, _ in found]}"
    return found[0]


def network_names(name: str, service: dict[str, Any]) -> set[str]:
    names = {name}
    for net in (service.get("networks") or {}).values():
        names |= set((net or {}).get("aliases") or [])
    return names


# TF Serving flags that only mean something with a GPU: the local (CPU) server has none of them.
GPU_ONLY_FLAGS = {"per_process_gpu_memory_fraction"}


def without_gpu_flags(found: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in found.items() if k not in GPU_ONLY_FLAGS}


def flags(service: dict[str, Any]) -> dict[str, str]:
    out = {}
    for arg in service["command"]:
        key, _, value = arg.partition("=")
        assert key.startswith("--") and value, f"expected --flag=value, found {arg!r}"
        out[key[2:]] = value
    return out


@dataclass(frozen=True)
class Mount:
    source: str  # named volume, or absolute host path for a bind mount
    target: str
    read_only: bool

    @property
    def is_bind(self) -> bool:
        return self.source.startswith("/")


def mounts(service: dict[str, Any]) -> list[Mount]:
    out = []
    for v in service.get("volumes") or []:
        if isinstance(v, dict):
            out.append(Mount(v["source"], v["target"], bool(v.get("read_only"))))
        else:
            parts = v.split(":")
            out.append(Mount(parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")))
    return out


def mount_of(service: dict[str, Any], path: str) -> Mount | None:
    """The mount holding ``path`` inside the container (longest target wins)."""
    best = None
    for m in mounts(service):
        if (path == m.target or path.startswith(m.target.rstrip("/") + "/")) and (
            best is None or len(m.target) > len(best.target)
        ):
            best = m
    return best


@dataclass(frozen=True)
class Port:
    host_ip: str
    published: int
    target: int


def ports(service: dict[str, Any]) -> list[Port]:
    out = []
    for p in service.get("ports") or []:
        if isinstance(p, dict):
            out.append(Port(p.get("host_ip", ""), int(p["published"]), int(p["target"])))
            continue
        spec = str(p).split("/")[0]
        parts = spec.split(":")
        host_ip = parts[0] if len(parts) == 3 else ""
        out.append(Port(host_ip, int(parts[-2]) if len(parts) > 1 else 0, int(parts[-1])))
    return out


def pipeline_config_under(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> PipelineConfig:
    """The config a task builds from default DAG params inside a container with ``env``."""
    for key in list(os.environ):
        if key.startswith("RECFLOW_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("RECFLOW_"):
            monkeypatch.setenv(key, str(value))
    return from_params({})


# ---------------------------------------------------------------------------------------------
# Validity


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_compose_files_validate(variant: str, env_file: Path) -> None:
    proc = run_compose(VARIANTS[variant], env_file, "config", "-q")
    assert proc.returncode == 0, proc.stderr


def test_secrets_are_required_and_none_is_committed(tmp_path: Path) -> None:
    example = env_example()
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    required = set(re.findall(r"\$\{([A-Z0-9_]+):\?", text))
    assert {"POSTGRES_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET"} <= required
    for name in required:
        assert name in example, f"{name} is required by docker-compose.yml but not in .env.example"
        assert example[name] == "", f".env.example must not carry a value for secret {name}"
    # The filled-in copy must never be committed.
    if (ROOT / ".git").exists() and shutil.which("git"):
        ignored = subprocess.run(
            ["git", "check-ignore", "-q", ".env"], cwd=ROOT, capture_output=True, timeout=30
        )
        assert ignored.returncode == 0, ".env (the secrets) is not in .gitignore"
    # Copying .env.example unchanged must not start anything.
    proc = run_compose((COMPOSE_FILE,), ENV_EXAMPLE, "config", "-q")
    assert proc.returncode != 0
    assert re.search(r"set [A-Z_]+ in \.env", proc.stderr), proc.stderr


# ---------------------------------------------------------------------------------------------
# Wiring between the DAG's defaults and the services


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_dag_defaults_point_at_the_compose_services(
    variant: str, rendered: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg_yaml = rendered[variant]
    services = active_services(cfg_yaml)
    worker = services["airflow-worker"]
    name, serving = serving_service(cfg_yaml)
    serving_flags = flags(serving)
    cfg = pipeline_config_under(worker["environment"], monkeypatch)

    # gRPC: the host the DAG dials is the serving service, on the port it listens on, which
    # is also the port the `recommend` CLI and ServingClient use by default (8500).
    assert cfg.serving.host == SERVING_NAME
    assert SERVING_NAME in network_names(name, serving)
    assert cfg.serving.grpc_port == int(serving_flags["port"]) == 8500
    assert any(p.target == 8500 and p.published == 8500 for p in ports(serving))

    # The model config file the DAG rewrites is the one TF Serving polls.
    assert str(cfg.model_config_file) == serving_flags["model_config_file"]
    # The model base path the DAG copies versions into lives on a volume that TF Serving
    # mounts at the same path: base_path values written into the config are valid there.
    for path in (str(cfg.model_base_path), str(cfg.model_config_file)):
        in_worker, in_serving = mount_of(worker, path), mount_of(serving, path)
        assert in_worker is not None and in_serving is not None, path
        assert not in_worker.is_bind and in_worker.source == in_serving.source, path
        assert in_worker.target == in_serving.target, path
        assert not in_worker.read_only
    assert mount_of(serving, str(cfg.model_base_path)).read_only  # type: ignore[union-attr]

    # The example config documents exactly this layout and both labels.
    from recflow.serving.model_config import read_entries

    example = read_entries(ROOT / "serving" / "models.config.example")
    assert cfg.serving.model_name in example
    entry = example[cfg.serving.model_name]
    assert entry.base_path == str(cfg.model_base_path / cfg.serving.model_name)
    assert {"stable", "canary"} <= set(entry.labels)

    # Run folders are shared by every worker (tasks of one run may land on different ones).
    work = mount_of(worker, str(cfg.work_dir))
    assert work is not None and not work.is_bind

    # MLflow: the tracking URI is the mlflow service, which answers that Host header.
    uri = re.fullmatch(r"http://([\w-]+):(\d+)", cfg.registry.tracking_uri)
    assert uri, cfg.registry.tracking_uri
    mlflow = services[uri.group(1)]
    assert f"{uri.group(1)}:{uri.group(2)}" in mlflow["environment"]["MLFLOW_ALLOWED_HOSTS"]
    assert mlflow["environment"]["MLFLOW_BACKEND_STORE_URI"].startswith(
        "postgresql+psycopg2://mlflow:"
    )
    assert mount_of(mlflow, mlflow["environment"]["MLFLOW_ARTIFACTS_DESTINATION"]) is not None

    # airflow-init creates the empty config TF Serving starts from, on the same volume.
    init = cfg_yaml["services"]["airflow-init"]
    assert str(cfg.model_config_file) in "\n".join(init["command"])
    assert mount_of(init, str(cfg.model_config_file)).source == in_serving.source  # type: ignore[union-attr]


def test_airflow_follows_the_official_airflow3_layout(rendered: dict[str, Any]) -> None:
    services = rendered["gpu"]["services"]
    assert set(services) >= AIRFLOW_SERVICES
    commands = {n: services[n].get("command") for n in AIRFLOW_SERVICES - ONE_SHOT}
    assert commands == {
        "airflow-apiserver": "api-server",
        "airflow-scheduler": "scheduler",
        "airflow-dag-processor": "dag-processor",
        "airflow-triggerer": "triggerer",
        "airflow-worker": "celery worker",
    }
    for name in AIRFLOW_SERVICES:
        env = services[name]["environment"]
        assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor", name
        assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == (
            "http://airflow-apiserver:8080/execution/"
        )
        assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith(
            "postgresql+psycopg2://airflow:"
        )
        assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")
        # One JWT secret for all, or task tokens minted by one component fail in another.
        assert (
            env["AIRFLOW__API_AUTH__JWT_SECRET"]
            == (services["airflow-apiserver"]["environment"]["AIRFLOW__API_AUTH__JWT_SECRET"])
        )
    assert "/api/v2/version" in " ".join(services["airflow-apiserver"]["healthcheck"]["test"])


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_published_ports_bind_to_localhost(variant: str, rendered: dict[str, Any]) -> None:
    published = []
    for name, service in rendered[variant]["services"].items():
        for p in ports(service):
            published.append(name)
            assert p.host_ip == "127.0.0.1", f"{name} publishes {p} on all interfaces"
    assert {"airflow-apiserver", "mlflow"} <= set(published)
    assert serving_service(rendered[variant])[0] in published
    assert "postgres" not in published and "redis" not in published


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_healthchecks_and_start_order(variant: str, rendered: dict[str, Any]) -> None:
    services = active_services(rendered[variant])
    for name, service in services.items():
        if name in ONE_SHOT:
            assert service.get("restart") == "no", name
            continue
        test = (service.get("healthcheck") or {}).get("test")
        assert test and test != ["NONE"], f"{name} has no healthcheck"
    for name, service in services.items():
        for dep, spec in (service.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on {dep}, which does not start by default"
            condition = spec["condition"]
            if dep in ONE_SHOT:
                assert condition == "service_completed_successfully", (name, dep)
            else:
                assert condition == "service_healthy", (name, dep)
    for name in AIRFLOW_SERVICES:
        deps = services[name]["depends_on"]
        assert {"postgres", "redis"} <= set(deps), name
        if name not in ONE_SHOT:
            assert "airflow-init" in deps, name
    assert "postgres" in services["mlflow"]["depends_on"]
    assert "airflow-init" in serving_service(rendered[variant])[1]["depends_on"]


def test_gpu_variant_reserves_a_gpu_and_cpu_variant_does_not(rendered: dict[str, Any]) -> None:
    _, gpu = serving_service(rendered["gpu"])
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d["capabilities"] and d["driver"] == "nvidia" for d in devices)
    assert gpu["image"].startswith("tensorflow/serving:") and gpu["image"].endswith("-gpu")

    name, cpu = serving_service(rendered["cpu"])
    assert "deploy" not in cpu, f"{name} must not reserve a GPU"
    assert cpu["image"].startswith("tensorflow/serving:") and not cpu["image"].endswith("-gpu")
    # Same server version in both variants, the one release the exports are checked against.
    from recflow.serving.release import TF_SERVING_VERSION, image

    assert gpu["image"] == image(gpu=True) and cpu["image"] == image(gpu=False)
    assert cpu["image"].split(":")[1] == TF_SERVING_VERSION
    # Same behaviour, except the batching parameters file mounted at the same path and the
    # GPU memory share (meaningless without a GPU).
    assert without_gpu_flags(flags(cpu)) == without_gpu_flags(flags(gpu))
    assert not set(flags(cpu)) & GPU_ONLY_FLAGS
    sources = {
        v: mount_of(s, flags(s)["batching_parameters_file"]).source  # type: ignore[union-attr]
        for v, s in (("gpu", gpu), ("cpu", cpu))
    }
    assert sources["gpu"] != sources["cpu"]
    assert sources["cpu"].endswith("serving/batching_parameters.txt")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_serving_config_files_parse(variant: str, rendered: dict[str, Any]) -> None:
    from recflow.serving.server import parse_batching_parameters, parse_monitoring_config

    _, serving = serving_service(rendered[variant])
    f = flags(serving)
    assert f["allow_version_labels_for_unavailable_models"] == "true"
    assert float(f["model_config_file_poll_wait_seconds"]) > 0
    assert f["enable_batching"] == "true"
    batching = mount_of(serving, f["batching_parameters_file"])
    assert batching is not None and batching.is_bind and batching.read_only
    params = parse_batching_parameters(Path(batching.source).read_text(), source=batching.source)
    assert params["max_batch_size"] > 0 and params["batch_timeout_micros"] > 0
    if "allowed_batch_sizes" in params:
        assert params["allowed_batch_sizes"][-1] == params["max_batch_size"]
    monitoring = mount_of(serving, f["monitoring_config_file"])
    assert monitoring is not None and monitoring.is_bind
    assert parse_monitoring_config(Path(monitoring.source).read_text())
    assert int(f["rest_api_port"]) > 0  # Prometheus needs the REST port
    assert any(p.target == int(f["rest_api_port"]) for p in ports(serving))


# ---------------------------------------------------------------------------------------------
# The flags, run: recflow-model-server started with the compose command, the DAG's promotion
# code deploying through it, the compose healthcheck probing it


@dataclass
class Started:
    server: ServerProcess
    grpc_port: int
    rest_port: int
    remap: dict[str, Path]  # container mount target -> local path

    @property
    def process(self) -> subprocess.Popen[bytes]:
        assert self.server.process is not None
        return self.server.process

    @property
    def log(self) -> Path:
        return self.server.log_file

    def local(self, container_path: str | Path) -> Path:
        return local_path(self.remap, container_path)


def local_path(remap: dict[str, Path], container_path: str | Path) -> Path:
    text = str(container_path)
    for prefix in sorted(remap, key=len, reverse=True):
        if text == prefix or text.startswith(prefix.rstrip("/") + "/"):
            return remap[prefix] / os.path.relpath(text, prefix)
    raise AssertionError(f"{text} is on no mount of the serving service")


def start_from_compose(service: dict[str, Any], tmp: Path) -> Started:
    """recflow-model-server with the service's flags; its mounts become local folders."""
    grpc_port, rest_port = free_port(), free_port()
    remap: dict[str, Path] = {}
    for m in mounts(service):
        # bind mounts: the real repository files; named volumes: an empty folder
        remap[m.target] = Path(m.source) if m.is_bind else tmp / f"volume-{m.source}"
        if not m.is_bind:
            remap[m.target].mkdir(parents=True, exist_ok=True)
    args = []
    for key, value in without_gpu_flags(flags(service)).items():
        if key == "port":
            value = str(grpc_port)
        elif key == "rest_api_port":
            value = str(rest_port)
        elif value.startswith("/"):
            value = str(local_path(remap, value))
        args.append(f"--{key}={value}")
    # What airflow-init writes before TF Serving starts.
    config = local_path(remap, flags(service)["model_config_file"])
    config.write_text("model_config_list {\n}\n", encoding="utf-8")
    server = ServerProcess(
        [sys.executable, "-m", "recflow.serving.server", *args],
        port=grpc_port,
        log_file=tmp / "server.log",
        env={"TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    return Started(server.start(timeout=90), grpc_port, rest_port, remap)


@pytest.fixture()
def compose_server(rendered: dict[str, Any], tmp_path: Path) -> Iterator[tuple[dict, Started]]:
    _, service = serving_service(rendered["gpu"])
    started = start_from_compose(service, tmp_path)
    try:
        yield service, started
    finally:
        started.server.stop()


def test_compose_serving_flags_run_and_the_dag_deploys_through_them(
    compose_server: tuple[dict, Started],
    rendered: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    from _savedmodel_fixture import write_savedmodel

    from recflow.errors import ModelNotFound, ServerUnavailable
    from recflow.promotion import Promoter
    from recflow.serving.client import ServingClient

    service, server = compose_server
    worker_env = active_services(rendered["gpu"])["airflow-worker"]["environment"]
    cfg = pipeline_config_under(worker_env, monkeypatch)
    address = f"127.0.0.1:{server.grpc_port}"
    with ServingClient(address, timeout=5) as client:
        # Up, with the empty config airflow-init writes: GetModelStatus answers NOT_FOUND.
        deadline = time.monotonic() + 90
        while True:
            assert server.process.poll() is None, server.log.read_text()
            try:
                client.model_status(cfg.serving.model_name)
                raise AssertionError("a model is served before anything was deployed")
            except ModelNotFound:
                break
            except ServerUnavailable:
                assert time.monotonic() < deadline, server.log.read_text()
                time.sleep(0.5)

        # The DAG's promotion, with its compose paths mapped to this machine.
        saved = write_savedmodel(tmp_path / "export", "compose")
        promoter = Promoter(
            client,
            server.local(cfg.model_config_file),
            cfg.serving.model_name,
            server.local(cfg.model_base_path),
            load_timeout=60,
        )
        promoter.deploy_canary(saved, 1)
        promoter.promote_stable(1)
        status = client.model_status(cfg.serving.model_name)
        assert [(s.version, s.state) for s in status] == [(1, "AVAILABLE")]
        served = client.predict(
            cfg.serving.model_name,
            {"user_id": np.asarray(["u1"], dtype=object)},
            label="stable",
        )
        assert served["titles"].ravel()[0].decode().startswith("compose ")

    # The compose healthcheck, run here against the same REST port.
    test = service["healthcheck"]["test"]
    assert test[:2] == ["CMD", "bash"], test
    probe = [a.replace("/8501 ", f"/{server.rest_port} ") for a in test[2:]]
    assert probe != test[2:], "healthcheck does not probe port 8501"
    ok = subprocess.run(["bash", *probe], capture_output=True, text=True, timeout=10)
    assert ok.returncode == 0, ok.stderr
    wrong = [a.replace(f"/{server.rest_port} ", f"/{free_port()} ") for a in probe]
    assert subprocess.run(["bash", *wrong], capture_output=True, timeout=10).returncode != 0


# ---------------------------------------------------------------------------------------------
# GPU hygiene, the database healthcheck, the serving pool, the image build


def gpu_memory_fractions(cfg: dict[str, Any]) -> dict[str, float]:
    """Per TF Serving service that reserves a GPU: its --per_process_gpu_memory_fraction."""
    out = {}
    for name, service in active_services(cfg).items():
        devices = ((service.get("deploy") or {}).get("resources") or {}).get("reservations", {})
        if not any("gpu" in d.get("capabilities", []) for d in devices.get("devices", [])):
            continue
        assert "tensorflow_model_server" in (service.get("entrypoint") or []), (
            f"{name} reserves a GPU; only TF Serving is expected to"
        )
        value = flags(service).get("per_process_gpu_memory_fraction")
        assert value, f"{name} takes the whole GPU: set --per_process_gpu_memory_fraction"
        out[name] = float(value)
    return out


def test_tf_serving_takes_a_set_share_of_the_gpu(rendered: dict[str, Any], env_file: Path) -> None:
    fractions = gpu_memory_fractions(rendered["gpu"])
    assert fractions == {"tf-serving": float(env_example()["TF_SERVING_GPU_MEMORY_FRACTION"])}
    # Every TF Serving process on the GPU together stays below all of its memory.
    assert 0 < sum(fractions.values()) < 1
    assert gpu_memory_fractions(rendered["cpu"]) == {}
    # The one .env setting drives it.
    text = env_file.read_text(encoding="utf-8")
    half = env_file.with_name("half.env")
    half.write_text(
        re.sub(r"(?m)^TF_SERVING_GPU_MEMORY_FRACTION=.*$", "TF_SERVING_GPU_MEMORY_FRACTION=0.45",
               text), encoding="utf-8",
    )  # fmt: skip
    proc = run_compose(VARIANTS["gpu"], half, "config")
    assert proc.returncode == 0, proc.stderr
    assert gpu_memory_fractions(yaml.safe_load(proc.stdout)) == {"tf-serving": 0.45}


def test_worker_image_build_gets_the_one_serving_release(rendered: dict[str, Any]) -> None:
    from recflow.serving.release import TF_SERVING_VERSION

    for variant in VARIANTS:
        for name in AIRFLOW_SERVICES:
            build = rendered[variant]["services"][name]["build"]
            assert build["args"]["TF_SERVING_VERSION"] == TF_SERVING_VERSION, (variant, name)
            assert Path(build["context"]) == ROOT


def test_airflow_init_creates_the_serving_pool(rendered: dict[str, Any]) -> None:
    from recflow.pipeline.pools import SERVING_POOL, SERVING_POOL_SLOTS

    script = rendered["gpu"]["services"]["airflow-init"]["command"][-1]
    found = re.search(r"airflow pools set\s*\\?\s*(\S+)\s+(\d+)\s", script)
    assert found, script
    assert (found.group(1), int(found.group(2))) == (SERVING_POOL, SERVING_POOL_SLOTS)
    # Created after the migration (the first entrypoint call), never skipped by `set -e`.
    assert script.index("/entrypoint airflow version") < script.index("airflow pools set")


def test_postgres_healthcheck_queries_both_databases_as_their_roles(
    rendered: dict[str, Any],
) -> None:
    test = rendered["gpu"]["services"]["postgres"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    command = test[1]
    for db in ("airflow", "mlflow"):
        assert re.search(rf"psql [^&]*-U {db} -d {db} [^&]*-tAc 'SELECT 1'", command), command
        assert f'PGPASSWORD="$${db.upper()}_DB_PASSWORD"' in command
    assert "-h 127.0.0.1" in command  # TCP: not the init-time socket-only server
