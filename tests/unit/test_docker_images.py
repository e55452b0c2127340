"""The images, checked without an engine: Dockerfiles, build contexts, pinned versions.

What a `docker build` would refuse or get wrong is checked from the files themselves: the
official Airflow image's documented way of adding packages, every COPY source present in the
build context and let through by the context's .dockerignore (matched with Docker's own rules,
recflow.ops.dockerignore), and one TF Serving release everywhere it is named.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from recflow.ops import dockerfile as df
from recflow.ops.dockerignore import DockerIgnore, parse
from recflow.serving.release import TF_SERVING_VERSION

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
AIRFLOW_DOCKERFILE = ROOT / "docker" / "airflow" / "Dockerfile"
MLFLOW_DOCKERFILE = ROOT / "mlflow" / "Dockerfile"
# Dockerfile -> its build context (docker-compose.yml: `context: .` and `build: ./mlflow`)
IMAGES = {AIRFLOW_DOCKERFILE: ROOT, MLFLOW_DOCKERFILE: ROOT / "mlflow"}


def lock(name: str) -> str:
    text = (ROOT / "requirements" / "constraints.txt").read_text(encoding="utf-8")
    found = re.search(rf"(?im)^{re.escape(name)}==([^\s;]+)", text)
    assert found, f"{name} is not pinned in requirements/constraints.txt"
    return found.group(1)


def ignore_for(context: Path) -> DockerIgnore:
    return DockerIgnore.from_file(context / ".dockerignore")


# ---------------------------------------------------------------------------------------------
# The .dockerignore matcher against Docker's documented examples and moby's rules


@pytest.mark.parametrize(
    ("patterns", "path", "excluded"),
    [
        # docs.docker.com, "Build context" / .dockerignore examples
        (["*/temp*"], "somedir/temporary.txt", True),
        (["*/temp*"], "somedir/temp", True),
        (["*/temp*"], "temp.txt", False),
        (["*/temp*"], "a/b/temp.txt", False),
        (["*/*/temp*"], "somedir/subdir/temporary.txt", True),
        (["temp?"], "tempa", True),
        (["temp?"], "temp", False),
        (["temp?"], "temp/x", False),
        (["**/*.go"], "a/b/c.go", True),
        (["**/*.go"], "c.go", True),
        (["*.md", "!README*.md"], "README-secret.md", False),
        (["*.md", "!README*.md"], "CHANGES.md", True),
        (["*.md", "!README*.md", "README-secret.md"], "README-secret.md", True),
        (["*.md", "README-secret.md", "!README*.md"], "README-secret.md", False),
        # a matching directory excludes what is below it; leading/trailing slashes dropped
        ([".venv"], ".venv/lib/python3.11/site.py", True),
        (["/var/"], "var/runs/x.json", True),
        (["./bench/results"], "bench/results/serving.json", True),
        (["bench/results"], "bench/serving.py", False),
        # "**" at the end, "**" in the middle (zero or more directories), "**foo" suffix
        (["src/**"], "src/recflow/x.py", True),
        (["a/**/b"], "a/b", True),
        (["a/**/b"], "a/x/y/b", True),
        (["**foo"], "barfoo", True),
        (["**/foo"], "foo", True),
        (["**/foo"], "barfoo", False),
        # character classes, escapes, regex metacharacters taken literally
        (["file[0-9].txt"], "file7.txt", True),
        (["file[^0-9].txt"], "file7.txt", False),
        (["file[^0-9].txt"], "filex.txt", True),
        (["a+b.txt"], "a+b.txt", True),
        (["a+b.txt"], "aab.txt", False),
        (["x.py"], "xapy", False),
        (["\\*"], "*", True),
        (["\\*"], "a", False),
        # "*" never crosses a "/"; comments and blank lines are no patterns
        (["*"], "a/b", True),  # "a" matches, so everything below it
        (["#comment", "", "  "], "#comment", False),
    ],
)
def test_dockerignore_matches_like_docker(patterns: list[str], path: str, excluded: bool) -> None:
    assert DockerIgnore(parse("\n".join(patterns))).excluded(path) is excluded


def test_context_walk_skips_excluded_directories_unless_an_exception_starts_there(
    tmp_path: Path,
) -> None:
    for rel in ("keep/a.txt", "drop/b.txt", "drop/sub/c.txt", "other/d.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    rules = DockerIgnore(parse("*\n!keep\n!drop/sub/c.txt"))
    assert sorted(str(p) for p in rules.context_files(tmp_path)) == [
        "drop/sub/c.txt",
        "keep/a.txt",
    ]


# ---------------------------------------------------------------------------------------------
# The build contexts


@pytest.mark.parametrize("dockerfile", sorted(IMAGES), ids=lambda p: p.parent.name)
def test_every_copy_source_exists_and_is_in_the_context(dockerfile: Path) -> None:
    context = IMAGES[dockerfile]
    text = dockerfile.read_text(encoding="utf-8")
    stage_names = {name for _, name in df.stages(text) if name}
    rules = ignore_for(context)
    tracked = tracked_files(context)
    for copy in df.copies(text):
        if copy.stage:
            assert copy.stage in stage_names, f"COPY --from={copy.stage}: no such stage"
            continue
        for source in copy.sources:
            path = context / source
            assert path.exists(), f"{dockerfile}: COPY source {source} does not exist"
            assert not rules.excluded(source), f"{source} is excluded by the .dockerignore"
            if path.is_dir():
                # Every tracked file below it reaches the builder.
                below = [f for f in tracked if f.startswith(source.rstrip("/") + "/")]
                assert below, source
                left_out = [f for f in below if rules.excluded(f)]
                assert not left_out, f"{source}: {left_out[:5]} are excluded"


def tracked_files(context: Path) -> list[str]:
    proc = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=context,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0:
        pytest.skip(f"not a git checkout: {proc.stderr.strip()}")
    return proc.stdout.splitlines()


def test_root_context_leaves_out_the_environment_runs_secrets_and_caches() -> None:
    rules = ignore_for(ROOT)
    for path in (
        ".venv/bin/python",
        "var/runs/recsys_training/x/model/saved_model.pb",
        ".git/HEAD",
        ".env",
        "bench/results/serving.json",
        "test-artifacts/ui/01-dag.png",
        "tests/unit/test_docker_images.py",
        "src/recflow/__pycache__/config.cpython-311.pyc",
        "src/recflow.egg-info/PKG-INFO",
        ".pytest_cache/v/cache/nodeids",
        ".mypy_cache/3.11/x.json",
        "node_modules/x/index.js",
    ):
        assert rules.excluded(path), f"{path} would be sent to the builder"
    # Compose v1's builder reads only the root file: no per-Dockerfile ignore file to drift.
    assert not list((ROOT / "docker").rglob("*.dockerignore"))


def test_root_context_is_small() -> None:
    """What `docker compose build` would send, walked with Docker's rules: no .venv, no var/."""
    files = list(ignore_for(ROOT).context_files(ROOT))
    assert files, "empty build context"
    tops = {f.parts[0] for f in files}
    assert tops <= {"requirements", "pyproject.toml", "README.md", "src", "dags", "serving"}
    size = sum((ROOT / f).stat().st_size for f in files)
    assert size < 20 * 2**20, f"build context of {size / 2**20:.0f} MiB"


# ---------------------------------------------------------------------------------------------
# The Airflow image


def _pip_installs(text: str) -> list[str]:
    out = []
    for i in df.instructions(text):
        if i.keyword == "RUN":
            out += [c.strip() for c in re.split(r"&&|;", i.args) if "pip install" in c]
    return out


def test_airflow_image_adds_packages_the_documented_way() -> None:
    text = AIRFLOW_DOCKERFILE.read_text(encoding="utf-8")
    installs = _pip_installs(text)
    assert installs, "no pip install found"
    # The official image's Python environment lives in ~/.local: pip refuses --user there.
    assert not re.search(r"(?m)^[^#]*--user\b", text)
    for command in installs:
        assert "--no-cache-dir" in command, command
        # Either pins Airflow alongside (pip cannot change it) or installs nothing else.
        assert '"apache-airflow==${AIRFLOW_VERSION}"' in command or "--no-deps" in command
    requirements = [c for c in installs if "-r " in c]
    assert (
        len(requirements) == 1
        and "-c /opt/recflow/requirements/constraints.txt" in (requirements[0])
    )
    assert re.search(r"pip check", text)
    # pip runs as the airflow user (the image refuses pip as root).
    users = [(n, i.args) for n, i in enumerate(df.instructions(text)) if i.keyword == "USER"]
    first_pip = next(
        n for n, i in enumerate(df.instructions(text)) if i.keyword == "RUN" and "pip " in i.args
    )
    assert users and max((n, u) for n, u in users if n < first_pip)[1] == "airflow"


def test_airflow_base_tag_is_the_locked_airflow_and_python() -> None:
    text = AIRFLOW_DOCKERFILE.read_text(encoding="utf-8")
    airflow = [img for img, _ in df.stages(text) if img.startswith("apache/airflow:")]
    assert len(airflow) == 1, airflow
    found = re.fullmatch(r"apache/airflow:(slim-)?(\d+\.\d+\.\d+)-python(\d+\.\d+)", airflow[0])
    assert found, f"expected apache/airflow:[slim-]<version>-python<X.Y>, found {airflow[0]}"
    assert found.group(2) == lock("apache-airflow")
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert f'"apache-airflow=={found.group(2)}"' in pyproject
    assert found.group(3) == f"{sys.version_info.major}.{sys.version_info.minor}"
    # The image's final stage is the Airflow one (the TF Serving stage only lends a binary).
    assert df.stages(text)[-1][0] == airflow[0]


def test_airflow_image_pins_agree_with_the_lock() -> None:
    text = AIRFLOW_DOCKERFILE.read_text(encoding="utf-8")
    locked = (ROOT / "requirements" / "constraints.txt").read_text(encoding="utf-8").lower()
    checked = 0
    for name, version in re.findall(r'"([A-Za-z0-9_.-]+)==([^"$]+)"', text):
        if f"\n{name.lower()}==" in f"\n{locked}":
            assert version == lock(name), f"{name}=={version} disagrees with the lock"
            checked += 1
    assert checked >= 2  # at least the FAB provider and flask-appbuilder are in the lock


def test_worker_image_carries_the_pinned_tf_serving_binary() -> None:
    text = AIRFLOW_DOCKERFILE.read_text(encoding="utf-8")
    args = df.global_args(text)
    assert args.get("TF_SERVING_VERSION") == TF_SERVING_VERSION
    images = {name: df.expand(img, args) for img, name in df.stages(text) if name}
    [copy] = [c for c in df.copies(text) if c.stage]
    assert images[copy.stage or ""] == f"tensorflow/serving:{TF_SERVING_VERSION}"  # CPU build
    # Where the official image keeps it (tensorflow_serving/tools/docker/Dockerfile), onto PATH,
    # where recflow.infra_validation looks for it.
    assert copy.sources == ("/usr/bin/tensorflow_model_server",)
    assert copy.dest == "/usr/bin/tensorflow_model_server"
    # The build fails when a shared library is missing or the binary does not start.
    runs = " ".join(i.args for i in df.instructions(text) if i.keyword == "RUN")
    assert "ldd /usr/bin/tensorflow_model_server" in runs
    assert "tensorflow_model_server --version" in runs


def test_mlflow_image_matches_the_client() -> None:
    text = MLFLOW_DOCKERFILE.read_text(encoding="utf-8")
    assert f'"mlflow=={lock("mlflow")}"' in text
    assert f'"psycopg2-binary=={lock("psycopg2-binary")}"' in text
    assert not re.search(r"(?m)^[^#]*--user\b", text)


# ---------------------------------------------------------------------------------------------
# One TF Serving release


def test_one_tf_serving_release_everywhere() -> None:
    compose = {
        name: (ROOT / name).read_text(encoding="utf-8")
        for name in ("docker-compose.yml", "docker-compose.cpu.yml")
    }
    for name, text in compose.items():
        defaults = re.findall(r"\$\{TF_SERVING_VERSION:-([^}]+)\}", text)
        assert defaults and set(defaults) == {TF_SERVING_VERSION}, (name, defaults)
        # No image names a release of its own.
        assert not re.findall(r"tensorflow/serving:\d", text), name
    env = dict(
        line.split("=", 1)
        for line in (ROOT / ".env.example").read_text(encoding="utf-8").splitlines()
        if "=" in line and not line.startswith("#")
    )
    assert env["TF_SERVING_VERSION"] == TF_SERVING_VERSION
    docs = (ROOT / "docs" / "production.md").read_text(encoding="utf-8")
    named = set(re.findall(r"tensorflow/serving:(\d+\.\d+\.\d+)", docs))
    assert named == {TF_SERVING_VERSION}, named
