"""The Registry contract, run here on InMemoryRegistry.

tests/integration/test_registry_mlflow.py runs the same ``test_contract_*`` functions on
MlflowRegistry (sqlite store) by overriding the ``registry`` fixture, so both implementations
are held to one behaviour.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from recflow.errors import RegistryError
from recflow.registry import (
    TAG_DAG_RUN_ID,
    TAG_GIT_COMMIT,
    TAG_RECFLOW_VERSION,
    DatasetRef,
    InMemoryRegistry,
    Registry,
    make_registry,
    resume_or_start_run,
)
from recflow.registry.base import MAX_PARAM_VALUE_LENGTH, TRUNCATION_MARK, flatten_params

EXP = "recflow-test"
MODEL = "recflow-recommender"


@pytest.fixture()
def registry(tmp_path: Path) -> Registry:
    return InMemoryRegistry(tmp_path / "registry")


def make_model_dir(folder: Path, marker: str) -> Path:
    """A folder shaped like an exported SavedModel; ``marker`` makes versions distinguishable."""
    (folder / "variables").mkdir(parents=True)
    (folder / "assets.extra").mkdir()
    (folder / "saved_model.pb").write_bytes(b"\x08\x01" + marker.encode())
    (folder / "variables" / "variables.index").write_bytes(marker.encode() * 3)
    (folder / "assets.extra" / "tf_serving_warmup_requests").write_bytes(b"warm")
    return folder


def files_of(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


def new_run(registry: Registry, dag_run_id: str = "manual__2026-11-27T22:00:00+00:00") -> str:
    return registry.start_run(EXP, "train", {TAG_DAG_RUN_ID: dag_run_id})


def run_with_model(registry: Registry, tmp_path: Path, marker: str) -> str:
    run_id = new_run(registry, dag_run_id=f"scheduled__{marker}")
    registry.log_artifacts(run_id, make_model_dir(tmp_path / f"export-{marker}", marker), "model")
    return run_id


# ------------------------------------------------------------------------------ runs


def test_contract_run_lifecycle(registry: Registry) -> None:
    assert isinstance(registry, Registry)
    dag_run = "manual__2026-11-27T22:00:00+00:00"
    run_id = new_run(registry, dag_run)

    info = registry.get_run(run_id)
    assert info.status == "RUNNING"
    assert info.run_name == "train"
    assert info.tags[TAG_DAG_RUN_ID] == dag_run
    assert info.tags["mlflow.runName"] == "train"
    assert info.tags[TAG_RECFLOW_VERSION] == "0.1.0"
    assert info.tags[TAG_GIT_COMMIT]  # a sha, or "unknown" outside a checkout
    assert info.artifact_uri

    # A retried task (or the next task of the same DAG run) finds the same run.
    assert registry.find_run(EXP, {TAG_DAG_RUN_ID: dag_run}) == run_id
    assert resume_or_start_run(registry, EXP, "train", {TAG_DAG_RUN_ID: dag_run}) == run_id
    assert registry.find_run(EXP, {TAG_DAG_RUN_ID: "manual__other"}) is None
    assert registry.find_run("no-such-experiment", {TAG_DAG_RUN_ID: dag_run}) is None
    other = resume_or_start_run(registry, EXP, "train", {TAG_DAG_RUN_ID: "manual__other"})
    assert other != run_id
    assert registry.find_run(EXP, {TAG_DAG_RUN_ID: "manual__other"}) == other

    registry.end_run(run_id, "FINISHED")
    registry.end_run(other, "FAILED")
    assert registry.get_run(run_id).status == "FINISHED"
    assert registry.get_run(other).status == "FAILED"
    # A later task may still log into a finished run of its DAG run.
    registry.set_tags(run_id, {"stage": "after"})
    assert registry.get_run(run_id).tags["stage"] == "after"

    with pytest.raises(RegistryError, match="status"):
        registry.end_run(run_id, "DONE")
    with pytest.raises(RegistryError):
        registry.get_run("0" * 32)


def test_contract_find_run_with_quotes_in_tag(registry: Registry) -> None:
    odd = 'it\'s "odd"'
    run_id = new_run(registry, odd)
    new_run(registry, "it")  # shares the prefix before the quote
    assert registry.find_run(EXP, {TAG_DAG_RUN_ID: odd}) == run_id


def test_contract_params(registry: Registry) -> None:
    run_id = new_run(registry)
    params = {
        "train": {"epochs": 5, "learning_rate": 0.002},
        "data": {"source": "synthetic", "column_mapping": {}, "path": None},
        "eval_k": 10,
        "long": "x" * (MAX_PARAM_VALUE_LENGTH + 50),
    }
    registry.log_params(run_id, params)
    registry.log_params(run_id, params)  # a retried task logs the same values: no error

    got = registry.get_run(run_id).params
    assert got["train.epochs"] == "5"
    assert got["train.learning_rate"] == "0.002"
    assert got["data.source"] == "synthetic"
    assert got["data.column_mapping"] == "{}"
    assert got["data.path"] == "None"
    assert got["eval_k"] == "10"
    assert len(got["long"]) == MAX_PARAM_VALUE_LENGTH
    assert got["long"].endswith(TRUNCATION_MARK)

    registry.log_params(run_id, {"train": {"epochs": 5}, "extra": True})  # adds, keeps the rest
    assert registry.get_run(run_id).params["extra"] == "True"
    with pytest.raises(RegistryError, match=r"write-once.*train\.epochs"):
        registry.log_params(run_id, {"train": {"epochs": 6}})
    with pytest.raises(RegistryError, match="key"):
        registry.log_params(run_id, {"../escape": 1})
    registry.log_params(run_id, {"hr@10 floor": 0.05})
    assert registry.get_run(run_id).params["hr_at_10 floor"] == "0.05"


def test_contract_metrics_and_tags(registry: Registry) -> None:
    run_id = new_run(registry)
    registry.log_metrics(run_id, {"loss": 0.9, "val_ndcg@10": 0.10}, step=0)
    registry.log_metrics(run_id, {"loss": 0.5, "val_ndcg@10": 0.20}, step=1)
    registry.log_metrics(run_id, {"ndcg@10": 0.25})
    metrics = registry.get_run(run_id).metrics
    assert metrics["loss"] == pytest.approx(0.5)
    # MLflow refuses '@' in names: both implementations store ndcg@10 as ndcg_at_10.
    assert metrics["val_ndcg_at_10"] == pytest.approx(0.20)
    assert metrics["ndcg_at_10"] == pytest.approx(0.25)

    registry.set_tags(run_id, {"gate.passed": True, "gate.metric": "ndcg@10", "n": 3})
    tags = registry.get_run(run_id).tags
    assert tags["gate.passed"] == "True"
    assert tags["gate.metric"] == "ndcg@10"  # values are free text
    assert tags["n"] == "3"


def test_contract_artifacts(registry: Registry, tmp_path: Path) -> None:
    run_id = new_run(registry)
    model = make_model_dir(tmp_path / "export", "a")
    registry.log_artifacts(run_id, model, "model")
    report = tmp_path / "report.html"
    report.write_text("<html></html>")
    registry.log_artifact(run_id, report)
    registry.log_artifact(run_id, report, "docs")
    registry.log_text(run_id, "hello\n", "notes/readme.txt")
    registry.log_dict(run_id, {"b": 1, "a": [1, 2]}, "eval/metrics.json")
    registry.log_dict(run_id, {"b": 1, "a": [1, 2]}, "eval/metrics.yaml")

    assert registry.list_artifacts(run_id) == sorted(
        [
            "docs/report.html",
            "eval/metrics.json",
            "eval/metrics.yaml",
            "model/assets.extra/tf_serving_warmup_requests",
            "model/saved_model.pb",
            "model/variables/variables.index",
            "notes/readme.txt",
            "report.html",
        ]
    )
    assert registry.list_artifacts(run_id, "notes/readme.txt") == ["notes/readme.txt"]
    assert registry.list_artifacts(run_id, "nothing-here") == []

    got = registry.download_artifacts(run_id, "model", tmp_path / "dl")
    assert got == tmp_path / "dl" / "model"
    assert files_of(got) == files_of(model)
    # Downloading again (a retried task) replaces the earlier copy.
    assert files_of(registry.download_artifacts(run_id, "model", tmp_path / "dl")) == files_of(
        model
    )
    ev = registry.download_artifacts(run_id, "eval", tmp_path / "dl")
    assert (ev / "metrics.json").read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    assert yaml.safe_load((ev / "metrics.yaml").read_text()) == {"a": [1, 2], "b": 1}
    txt = registry.download_artifacts(run_id, "notes/readme.txt", tmp_path / "dl")
    assert txt.read_text() == "hello\n"

    with pytest.raises(RegistryError, match="folder"):
        registry.log_artifacts(run_id, tmp_path / "missing", "model")
    with pytest.raises(RegistryError, match="file"):
        registry.log_artifact(run_id, tmp_path / "missing.txt")
    with pytest.raises(RegistryError, match="relative"):
        registry.log_text(run_id, "x", "../escape.txt")
    with pytest.raises(RegistryError):
        registry.download_artifacts(run_id, "", tmp_path / "dl")


def test_contract_datasets(registry: Registry) -> None:
    run_id = new_run(registry)
    df = pd.DataFrame(
        {
            "user_id": pd.array(["u1", "u2", None], dtype="string"),
            "item_id": pd.array(["i1", "i2", "i3"], dtype="string"),
            "rating": pd.array([1.0, 4.5, None], dtype="Float64"),
            "timestamp": pd.array([1, 2, 3], dtype="Int64"),
        }
    )
    for _ in range(2):  # a retried task records the input once
        registry.log_dataset(
            run_id, df, name="interactions", digest="abc123", source="/data/x.parquet",
            context="training",
        )  # fmt: skip
    registry.log_dataset(
        run_id, df.head(1), name="interactions-test", digest="def456",
        source="/data/x.parquet", context="test",
    )  # fmt: skip
    got = sorted(registry.get_run(run_id).datasets, key=lambda d: d.name)
    assert got == [
        DatasetRef("interactions", "abc123", "/data/x.parquet", "training"),
        DatasetRef("interactions-test", "def456", "/data/x.parquet", "test"),
    ]


# ------------------------------------------------------------------------------ registry


def test_contract_versions_and_aliases(registry: Registry, tmp_path: Path) -> None:
    run1 = run_with_model(registry, tmp_path, "one")
    run2 = run_with_model(registry, tmp_path, "two")
    v1 = registry.register_version(
        MODEL, run1, "model", tags={"gate.passed": True}, description="first"
    )
    v2 = registry.register_version(MODEL, run2, "model", tags={"gate.passed": "true"})
    assert (v1, v2) == (1, 2)
    # A retried registration returns the version it made, and does not add one.
    assert registry.register_version(MODEL, run2, "model", tags={"retry": "1"}) == 2

    mv1 = registry.get_version(MODEL, 1)
    assert mv1.name == MODEL
    assert mv1.version == 1
    assert mv1.run_id == run1
    assert mv1.status == "READY"
    assert mv1.description == "first"
    assert mv1.tags == {"gate.passed": "True"}
    assert mv1.source == registry.get_run(run1).artifact_uri.rstrip("/") + "/model"
    assert mv1.aliases == ()
    assert registry.get_version(MODEL, 2).tags == {"gate.passed": "true", "retry": "1"}

    # First model: champion. Second arrives as challenger, then is promoted.
    assert registry.get_version_by_alias(MODEL, "champion") is None
    registry.set_alias(MODEL, "champion", v1)
    registry.set_alias(MODEL, "challenger", v2)
    champ = registry.get_version_by_alias(MODEL, "champion")
    assert champ is not None and champ.version == 1 and champ.aliases == ("champion",)
    registry.set_alias(MODEL, "previous", v1)
    registry.set_alias(MODEL, "champion", v2)
    registry.delete_alias(MODEL, "challenger")
    registry.delete_alias(MODEL, "challenger")  # absent: no error
    registry.delete_alias("no-such-model", "champion")

    champ = registry.get_version_by_alias(MODEL, "champion")
    prev = registry.get_version_by_alias(MODEL, "previous")
    assert champ is not None and champ.version == 2 and champ.run_id == run2
    assert prev is not None and prev.version == 1
    assert registry.get_version(MODEL, 1).aliases == ("previous",)
    assert registry.get_version(MODEL, 2).aliases == ("champion",)
    assert registry.get_version_by_alias(MODEL, "challenger") is None
    assert registry.get_version_by_alias("no-such-model", "champion") is None

    registry.set_version_tag(MODEL, 2, "promoted_at", 1764280800)
    registry.update_description(MODEL, 2, "promoted: ndcg@10 0.21 vs 0.19")
    mv2 = registry.get_version(MODEL, 2)
    assert mv2.tags["promoted_at"] == "1764280800"
    assert mv2.description == "promoted: ndcg@10 0.21 vs 0.19"

    with pytest.raises(RegistryError):
        registry.set_alias(MODEL, "champion", 9)
    with pytest.raises(RegistryError, match="reserved"):
        registry.set_alias(MODEL, "latest", 1)
    with pytest.raises(RegistryError, match="reserved"):
        registry.set_alias(MODEL, "v3", 1)
    with pytest.raises(RegistryError):
        registry.get_version(MODEL, 9)
    with pytest.raises(RegistryError):
        registry.get_version("no-such-model", 1)


def test_contract_register_needs_artifacts(registry: Registry) -> None:
    run_id = new_run(registry)
    with pytest.raises(RegistryError, match="log_artifacts"):
        registry.register_version(MODEL, run_id, "model")


def test_contract_download_version(registry: Registry, tmp_path: Path) -> None:
    run1 = run_with_model(registry, tmp_path, "one")
    run2 = run_with_model(registry, tmp_path, "two")
    registry.register_version(MODEL, run1, "model")
    registry.register_version(MODEL, run2, "model")
    got1 = registry.download_version(MODEL, 1, tmp_path / "champion")
    assert got1.parent == tmp_path / "champion"
    assert files_of(got1) == files_of(tmp_path / "export-one")
    got2 = registry.download_version(MODEL, 2, tmp_path / "v2")
    assert files_of(got2) == files_of(tmp_path / "export-two")
    # Re-downloading into the same folder replaces the copy rather than mixing files.
    again = registry.download_version(MODEL, 2, tmp_path / "champion")
    assert files_of(again) == files_of(tmp_path / "export-two")


# ------------------------------------------------------------------------------ memory only


def test_flatten_params_is_dotted_and_stringified() -> None:
    assert flatten_params({"a": {"b": {"c": 1}}, "d": [1, 2], "e": {}}) == {
        "a.b.c": "1",
        "d": "[1, 2]",
        "e": "{}",
    }


def test_make_registry_memory_and_mlflow(tmp_path: Path) -> None:
    mem = make_registry("memory:", tmp_path / "m")
    assert isinstance(mem, InMemoryRegistry)
    db = tmp_path / "deep" / "store" / "mlflow.db"
    reg = make_registry(f"sqlite:///{db}", tmp_path / "artifacts")
    assert type(reg).__name__ == "MlflowRegistry"
    assert db.parent.is_dir()  # ready for sqlite to create the file


def test_building_a_registry_does_not_import_mlflow(tmp_path: Path) -> None:
    # DAG files build registries at parse time; mlflow must wait until a method runs.
    code = (
        "import sys; from recflow.registry import make_registry; "
        f"make_registry('sqlite:///{tmp_path}/x/mlflow.db', None); "
        "assert 'mlflow' not in sys.modules, sorted(m for m in sys.modules if 'mlflow' in m)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_resume_needs_dag_run_tag(registry: Registry) -> None:
    with pytest.raises(RegistryError, match="airflow.dag_run_id"):
        resume_or_start_run(registry, EXP, "train", {"other": "x"})
