"""docker-compose.yml (GPU) and docker-compose.cpu.yml: valid, wired the way the DAG writes.

No Docker engine is needed: docker-compose 1.29 validates and renders the files
(`docker-compose config`, compose_files.py), and the rendered YAML is checked against what the
pipeline does under the compose environment (src/recflow/config.py defaults from the RECFLOW_*
variables). test_compose_serving.py runs the serving service's flags.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from compose_files import (
    AIRFLOW_SERVICES,
    COMPOSE_FILE,
    ENV_EXAMPLE,
    GPU_ONLY_FLAGS,
    ONE_SHOT,
    ROOT,
    SERVING_NAME,
    VARIANTS,
    active_services,
    env_example,
    flags,
    mount_of,
    needs_docker_compose,
    network_names,
    pipeline_config_under,
    ports,
    run_compose,
    serving_service,
    without_gpu_flags,
)

pytestmark = needs_docker_compose


# ---------------------------------------------------------------------------------------------
# Validity


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_compose_files_validate(variant: str, compose_env_file: Path) -> None:
    proc = run_compose(VARIANTS[variant], compose_env_file, "config", "-q")
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
    variant: str, compose_rendered: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg_yaml = compose_rendered[variant]
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


def test_airflow_follows_the_official_airflow3_layout(compose_rendered: dict[str, Any]) -> None:
    services = compose_rendered["gpu"]["services"]
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
def test_published_ports_bind_to_localhost(variant: str, compose_rendered: dict[str, Any]) -> None:
    published = []
    for name, service in compose_rendered[variant]["services"].items():
        for p in ports(service):
            published.append(name)
            assert p.host_ip == "127.0.0.1", f"{name} publishes {p} on all interfaces"
    assert {"airflow-apiserver", "mlflow"} <= set(published)
    assert serving_service(compose_rendered[variant])[0] in published
    assert "postgres" not in published and "redis" not in published


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_healthchecks_and_start_order(variant: str, compose_rendered: dict[str, Any]) -> None:
    services = active_services(compose_rendered[variant])
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
    assert "airflow-init" in serving_service(compose_rendered[variant])[1]["depends_on"]


def test_gpu_variant_reserves_a_gpu_and_cpu_variant_does_not(
    compose_rendered: dict[str, Any],
) -> None:
    _, gpu = serving_service(compose_rendered["gpu"])
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert any("gpu" in d["capabilities"] and d["driver"] == "nvidia" for d in devices)
    assert gpu["image"].startswith("tensorflow/serving:") and gpu["image"].endswith("-gpu")

    name, cpu = serving_service(compose_rendered["cpu"])
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
def test_serving_config_files_parse(variant: str, compose_rendered: dict[str, Any]) -> None:
    from recflow.serving.server import parse_batching_parameters, parse_monitoring_config

    _, serving = serving_service(compose_rendered[variant])
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


def test_tf_serving_takes_a_set_share_of_the_gpu(
    compose_rendered: dict[str, Any], compose_env_file: Path
) -> None:
    fractions = gpu_memory_fractions(compose_rendered["gpu"])
    assert fractions == {"tf-serving": float(env_example()["TF_SERVING_GPU_MEMORY_FRACTION"])}
    # Every TF Serving process on the GPU together stays below all of its memory.
    assert 0 < sum(fractions.values()) < 1
    assert gpu_memory_fractions(compose_rendered["cpu"]) == {}
    # The one .env setting drives it.
    text = compose_env_file.read_text(encoding="utf-8")
    half = compose_env_file.with_name("half.env")
    half.write_text(
        re.sub(r"(?m)^TF_SERVING_GPU_MEMORY_FRACTION=.*$", "TF_SERVING_GPU_MEMORY_FRACTION=0.45",
               text), encoding="utf-8",
    )  # fmt: skip
    proc = run_compose(VARIANTS["gpu"], half, "config")
    assert proc.returncode == 0, proc.stderr
    assert gpu_memory_fractions(yaml.safe_load(proc.stdout)) == {"tf-serving": 0.45}


def test_worker_image_build_gets_the_one_serving_release(compose_rendered: dict[str, Any]) -> None:
    from recflow.serving.release import TF_SERVING_VERSION

    for variant in VARIANTS:
        for name in AIRFLOW_SERVICES:
            build = compose_rendered[variant]["services"][name]["build"]
            assert build["args"]["TF_SERVING_VERSION"] == TF_SERVING_VERSION, (variant, name)
            assert Path(build["context"]) == ROOT


def test_airflow_init_creates_the_serving_pool(compose_rendered: dict[str, Any]) -> None:
    from recflow.pipeline.pools import SERVING_POOL, SERVING_POOL_SLOTS

    script = compose_rendered["gpu"]["services"]["airflow-init"]["command"][-1]
    found = re.search(r"airflow pools set\s*\\?\s*(\S+)\s+(\d+)\s", script)
    assert found, script
    assert (found.group(1), int(found.group(2))) == (SERVING_POOL, SERVING_POOL_SLOTS)
    # Created after the migration (the first entrypoint call), never skipped by `set -e`.
    assert script.index("/entrypoint airflow version") < script.index("airflow pools set")


def test_postgres_healthcheck_queries_both_databases_as_their_roles(
    compose_rendered: dict[str, Any],
) -> None:
    test = compose_rendered["gpu"]["services"]["postgres"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    command = test[1]
    for db in ("airflow", "mlflow"):
        assert re.search(rf"psql [^&]*-U {db} -d {db} [^&]*-tAc 'SELECT 1'", command), command
        assert f'PGPASSWORD="$${db.upper()}_DB_PASSWORD"' in command
    assert "-h 127.0.0.1" in command  # TCP: not the init-time socket-only server
