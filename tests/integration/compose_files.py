"""Reading docker-compose.yml and docker-compose.cpu.yml as docker-compose renders them.

No Docker engine is needed: docker-compose 1.29 validates and renders the files
(`docker-compose config`). Used by test_compose.py (the rendered files' checks) and
test_compose_serving.py (their TF Serving flags, run); the fixtures are in conftest.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from recflow.config import PipelineConfig, from_params

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
CPU_FILE = ROOT / "docker-compose.cpu.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKER_COMPOSE = shutil.which("docker-compose")

needs_docker_compose = pytest.mark.skipif(
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


def write_env_file(folder: Path) -> Path:
    """.env.example with every empty (secret) value filled in, as an operator would."""
    lines = []
    for key, value in env_example().items():
        lines.append(f"{key}={value or 'test-' + key.lower().replace('_', '-')}")
    path = folder / ".env"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def render_variants(env_file: Path) -> dict[str, dict[str, Any]]:
    """Each variant's configuration as `docker-compose config` renders it."""
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
