"""Import direction (docs/architecture.md "Layers"), read from the source with ``ast``.

platform (everything else in recflow) < pipeline (recflow.pipeline) < entry points
(recflow.dev, recflow.ops, recflow.config_cli, recflow.settings_doc, dags/). A module imports
only its own layer or lower ones; the entry points are not imported by each other (dev and
ops are separate tools); nothing in src/ imports the DAG files; the DAG files, which are
deployed, never import the dev launchers. Every import counts: module level, inside
functions, under ``TYPE_CHECKING``, and ``importlib.import_module`` with a literal name.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
DAGS = ROOT / "dags"

PLATFORM, PIPELINE, ENTRY = 0, 1, 2
LAYER_NAMES = {PLATFORM: "platform", PIPELINE: "pipeline", ENTRY: "entry points"}
PIPELINE_PACKAGES = ("recflow.pipeline",)
# Each entry point is a separate tool: imported by itself only.
ENTRY_PACKAGES = ("recflow.dev", "recflow.ops", "recflow.config_cli", "recflow.settings_doc")
DAG_PACKAGE = "dags"


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def entry_point_of(module: str) -> str | None:
    if _within(module, DAG_PACKAGE):
        return DAG_PACKAGE
    return next((p for p in ENTRY_PACKAGES if _within(module, p)), None)


def layer_of(module: str) -> int:
    if entry_point_of(module) is not None:
        return ENTRY
    if any(_within(module, p) for p in PIPELINE_PACKAGES):
        return PIPELINE
    return PLATFORM


def module_name(path: Path, base: Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _literal_prefix(node: ast.expr) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr) and node.values:
        first = node.values[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            return first.value.rstrip(".")
    return None


def imported_modules(source: str, module: str, *, is_package: bool) -> Iterator[tuple[int, str]]:
    """(line, module) for every import in ``source``; ``from a import b`` yields a and a.b."""
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            yield node.lineno, target
            for alias in node.names:
                yield node.lineno, f"{target}.{alias.name}"
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
        ):
            name = _literal_prefix(node.args[0])
            if name:
                yield node.lineno, name


def violation(importer: str, target: str) -> str | None:
    """Why ``importer`` may not import ``target`` (None: allowed)."""
    if not (_within(target, "recflow") or _within(target, DAG_PACKAGE)):
        return None  # third-party or standard library
    own, theirs = entry_point_of(importer), entry_point_of(target)
    if theirs == DAG_PACKAGE and own != DAG_PACKAGE:
        return "imports a DAG file; DAG files only wire tasks, logic lives in src/"
    if own == DAG_PACKAGE and theirs is not None and theirs != DAG_PACKAGE:
        return f"a DAG file imports {theirs}, a tool that is not deployed with the DAGs"
    if theirs is not None and own is not None and own != theirs:
        return f"entry point {own} imports another entry point ({theirs})"
    if layer_of(target) > layer_of(importer):
        return (
            f"{LAYER_NAMES[layer_of(importer)]} imports {LAYER_NAMES[layer_of(target)]}: "
            "move the function down (or the caller up)"
        )
    return None


def violations(sources: Mapping[str, tuple[str, bool]]) -> list[str]:
    """``sources``: module -> (source text, is a package); one line per forbidden import."""
    found = []
    for module, (source, is_package) in sorted(sources.items()):
        seen = set()
        for line, target in imported_modules(source, module, is_package=is_package):
            why = violation(module, target)
            if why and line not in seen:  # `from a import b` checks a and a.b: one report
                seen.add(line)
                found.append(f"{module}:{line} imports {target}: {why}")
    return found


def project_sources() -> dict[str, tuple[str, bool]]:
    out = {}
    for base, folder in ((SRC, SRC / "recflow"), (ROOT, DAGS)):
        for path in sorted(folder.rglob("*.py")):
            name = module_name(path, base)
            out[name] = (path.read_text(encoding="utf-8"), path.name == "__init__.py")
    return out


def test_project_imports_follow_the_layers():
    sources = project_sources()
    # the walk found the layers it checks (a wrong root would pass vacuously)
    assert {"recflow.config", "recflow.pipeline.context", "recflow.dev.launch"} <= set(sources)
    assert any(_within(m, DAG_PACKAGE) for m in sources)
    assert violations(sources) == []


def test_layers_of_known_modules():
    assert layer_of("recflow.config") == PLATFORM
    assert layer_of("recflow.serving.client") == PLATFORM
    assert layer_of("recflow.pipeline.reporting") == PIPELINE
    assert layer_of("recflow.pipeline") == PIPELINE
    assert layer_of("recflow.dev.demo") == ENTRY
    assert layer_of("recflow.ops.compose_smoke") == ENTRY
    assert layer_of("dags.recsys_training") == ENTRY
    assert layer_of("recflow.pipelines_elsewhere") == PLATFORM  # a prefix, not a package


def test_each_kind_of_forbidden_import_is_found():
    sources = {
        # platform reaching up, at module level, in a function, by importlib
        "recflow.gate": ("from recflow.pipeline.names import CHAMPION\n", False),
        "recflow.drift": ("def f():\n    from recflow.dev import launch\n", False),
        "recflow.models.zoo": (
            "import importlib\nimportlib.import_module(f'recflow.pipeline.{x}')\n",
            False,
        ),
        # relative import from a package's __init__ into the pipeline
        "recflow": ("from .pipeline import context\n", True),
        # pipeline reaching into the dev launchers
        "recflow.pipeline.deploy": ("import recflow.dev.launch\n", False),
        # one tool importing another
        "recflow.ops.compose_smoke": ("from recflow.dev.launch import x\n", False),
        # src importing a DAG file; a DAG file importing a dev launcher
        "recflow.serving.client": ("import dags.recsys_training\n", False),
        "dags.recsys_training": ("from recflow.dev.airflow_env import airflow_env\n", False),
    }
    found = violations(sources)
    assert [line.split(" imports ")[0] for line in found] == [
        "dags.recsys_training:1",
        "recflow:1",
        "recflow.drift:2",
        "recflow.gate:1",
        "recflow.models.zoo:2",
        "recflow.ops.compose_smoke:1",
        "recflow.pipeline.deploy:1",
        "recflow.serving.client:1",
    ], found


def test_allowed_directions_pass():
    sources = {
        "recflow.pipeline.deploy": ("from recflow.serving.client import ServingClient\n", False),
        "recflow.dev.demo": ("from recflow.pipeline.context import RunContext\n", False),
        "recflow.dev.launch": ("from recflow.dev.airflow_env import airflow_env\n", False),
        "dags.recsys_training": ("from recflow.pipeline import reporting\n", False),
        "recflow.ops.compose_smoke": ("from recflow.pipeline.pools import SERVING_POOL\n", False),
        "recflow.serving.client": ("import numpy\nfrom recflow import contract\n", False),
    }
    assert violations(sources) == []
