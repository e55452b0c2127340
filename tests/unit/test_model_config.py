"""Model config file handling, and how the server applies configs (fake loader, no TF)."""

from __future__ import annotations

from pathlib import Path

import pytest

from recflow.errors import ConfigError
from recflow.serving import model_config as mc
from recflow.serving.server import (
    AVAILABLE,
    END,
    ModelManager,
    Servable,
    ServableError,
    build_parser,
    parse_batching_parameters,
    parse_monitoring_config,
    scan_versions,
    server_from_args,
)

# --------------------------------------------------------------------------------------------
# ModelEntry and the text format


def test_write_then_read_round_trips_and_uses_tf_serving_text_format(tmp_path: Path) -> None:
    path = tmp_path / "serving" / "models.config"
    entries = {
        "rec": mc.ModelEntry("rec", "/models/rec", (4, 3), {"stable": 3, "canary": 4}),
        "pop": mc.ModelEntry("pop", "/models/pop", policy="latest", num_latest=2),
        "all": mc.ModelEntry("all", "/models/all", policy="all"),
    }
    mc.write_entries(path, entries)
    text = path.read_text()
    assert 'name: "rec"' in text and 'model_platform: "tensorflow"' in text
    assert "specific {\n        versions: 3\n        versions: 4" in text
    assert 'key: "stable"\n      value: 3' in text
    assert mc.read_entries(path) == entries
    assert [p.name for p in path.parent.iterdir()] == ["models.config"]  # no scratch left


def test_missing_file_is_empty_and_default_policy_is_latest_one(tmp_path: Path) -> None:
    assert mc.read_entries(tmp_path / "nope.config") == {}
    path = tmp_path / "m.config"
    path.write_text('model_config_list { config { name: "a" base_path: "/m/a" } }')
    assert mc.read_entries(path)["a"] == mc.ModelEntry("a", "/m/a", policy="latest", num_latest=1)


def test_label_must_point_at_a_listed_version() -> None:
    with pytest.raises(ConfigError, match=r"label 'stable' points at version 5.*\[1, 2\]"):
        mc.ModelEntry("rec", "/m", (1, 2), {"stable": 5})
    entry = mc.ModelEntry("rec", "/m", (1, 2), {"stable": 1})
    with pytest.raises(ConfigError, match="label 'stable' points at version 1"):
        entry.remove_version(1)
    moved = entry.add_version(3).with_label("stable", 3).remove_version(1)
    assert moved.versions == (2, 3) and moved.labels == {"stable": 3}
    assert entry.versions == (1, 2)  # entries are immutable


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "non-empty model name"),
        ({"base_path": ""}, "expected a base_path"),
        ({"versions": (-1,)}, "versions must be >= 0"),
        ({"policy": "latest", "versions": (1,)}, "only used by the 'specific' policy"),
        ({"policy": "newest"}, "policy expected one of"),
    ],
)
def test_entry_checks(kwargs: dict, message: str) -> None:
    fields = {"name": "rec", "base_path": "/m", **kwargs}
    with pytest.raises(ConfigError, match=message):
        mc.ModelEntry(**fields)


def test_unreadable_or_duplicated_configs_are_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.config"
    bad.write_text("model_config_list { config { nme: 1 } }")
    with pytest.raises(ConfigError, match=f"{bad}: not a text-format ModelServerConfig"):
        mc.read_entries(bad)
    with pytest.raises(ConfigError, match="unique"):
        mc.to_proto([mc.ModelEntry("a", "/a"), mc.ModelEntry("a", "/b")])
    dup = tmp_path / "dup.config"
    dup.write_text(
        'model_config_list { config { name: "a" base_path: "/a" } '
        'config { name: "a" base_path: "/b" } }'
    )
    with pytest.raises(ConfigError, match="listed twice"):
        mc.read_entries(dup)


# --------------------------------------------------------------------------------------------
# How the server applies configs (loading replaced by a fake: these tests need no TF)


class FakeLoader:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []
        self.fail: set[int] = set()

    def __call__(self, name: str, version: int, path: Path) -> Servable:
        self.calls.append((name, version))
        if version in self.fail:
            raise ValueError(f"bad saved_model.pb in {path}")
        return Servable(name, version, path, {}, {})


def make_versions(base: Path, *versions: int) -> None:
    for v in versions:
        (base / str(v)).mkdir(parents=True, exist_ok=True)
        (base / str(v) / "saved_model.pb").write_bytes(b"x")


def spec(name: str = "rec", *, version: int | None = None, label: str | None = None):
    from tensorflow_serving.apis import model_pb2

    s = model_pb2.ModelSpec(name=name)
    if version is not None:
        s.version.value = version
    if label is not None:
        s.version_label = label
    return s


def config(base: Path, versions=(), labels=None, **kw):
    return mc.to_proto([mc.ModelEntry("rec", str(base), tuple(versions), labels or {}, **kw)])


def test_scan_ignores_scratch_and_incomplete_directories(tmp_path: Path) -> None:
    make_versions(tmp_path, 1, 10)
    (tmp_path / ".3.tmp-xyz").mkdir()
    (tmp_path / ".3.tmp-xyz" / "saved_model.pb").write_bytes(b"x")
    (tmp_path / "4").mkdir()  # no saved_model.pb yet
    (tmp_path / "notes").mkdir()
    assert sorted(scan_versions(tmp_path)) == [1, 10]
    assert scan_versions(tmp_path / "missing") == {}


def test_policies_pick_versions_and_unload_after_loading(tmp_path: Path) -> None:
    make_versions(tmp_path, 1, 2, 3)
    loader = FakeLoader()
    m = ModelManager(loader=loader)
    m.reload(config(tmp_path, policy="latest", num_latest=2))
    assert m.snapshot() == {"rec": {2: AVAILABLE, 3: AVAILABLE}}
    m.reload(config(tmp_path, policy="all"))
    assert m.snapshot() == {"rec": {1: AVAILABLE, 2: AVAILABLE, 3: AVAILABLE}}
    m.reload(config(tmp_path, (2, 7)))  # 7 is listed but not on disk
    assert m.snapshot() == {"rec": {1: END, 2: AVAILABLE, 3: END}}
    make_versions(tmp_path, 7)
    m.poll()
    assert m.servable(spec()).version == 7  # latest available by default
    assert loader.calls == [("rec", 2), ("rec", 3), ("rec", 1), ("rec", 7)]
    m.reload(mc.to_proto([]))  # a model dropped from the config is unloaded
    assert set(m.snapshot()["rec"].values()) == {END}


def test_label_on_unavailable_version_is_refused_and_nothing_changes(tmp_path: Path) -> None:
    make_versions(tmp_path, 1, 2)
    m = ModelManager(loader=FakeLoader())
    with pytest.raises(ServableError) as info:  # at start nothing is loaded (TF Serving too)
        m.reload(config(tmp_path, (1,), {"stable": 1}))
    assert info.value.code == "FAILED_PRECONDITION"
    m.reload(config(tmp_path, (1,)))
    m.reload(config(tmp_path, (1,), {"stable": 1}))
    with pytest.raises(ServableError, match="assign label to version 2 of model rec, which is not"):
        m.reload(config(tmp_path, (1, 2), {"stable": 2}))
    assert m.snapshot() == {"rec": {1: AVAILABLE}}  # version 2 was not loaded either
    assert m.servable(spec(label="stable")).version == 1


def test_allow_labels_for_unavailable_models_only_for_unassigned_labels(tmp_path: Path) -> None:
    make_versions(tmp_path, 1, 2)
    m = ModelManager(loader=FakeLoader(), allow_version_labels_for_unavailable_models=True)
    m.reload(config(tmp_path, (1,), {"stable": 1}))
    m.reload(config(tmp_path, (1, 2), {"stable": 1, "canary": 2}))  # new label: allowed
    m.reload(config(tmp_path, (1, 2, 3), {"stable": 1, "canary": 2}))
    with pytest.raises(ServableError, match="version 3"):  # moving a label still needs it loaded
        m.reload(config(tmp_path, (1, 2, 3), {"stable": 3, "canary": 2}))


def test_failed_load_ends_with_error_and_is_not_retried_while_listed(tmp_path: Path) -> None:
    make_versions(tmp_path, 1, 2)
    loader = FakeLoader()
    loader.fail = {2}
    m = ModelManager(loader=loader)
    m.reload(config(tmp_path, (1, 2)))
    assert m.status(spec(version=2)) == [
        (2, END, "ValueError: bad saved_model.pb in " + str(tmp_path / "2"))
    ]
    m.poll()
    assert loader.calls.count(("rec", 2)) == 1
    loader.fail = set()
    m.reload(config(tmp_path, (1,)))
    m.reload(config(tmp_path, (1, 2)))  # listed again: retried
    assert m.snapshot()["rec"][2] == AVAILABLE


def test_a_new_model_that_cannot_load_fails_the_reload(tmp_path: Path) -> None:
    make_versions(tmp_path, 1)
    loader = FakeLoader()
    loader.fail = {1}
    with pytest.raises(ServableError, match=r"1 model\(s\) did not become available") as info:
        ModelManager(loader=loader).reload(config(tmp_path, (1,)))
    assert info.value.code == "UNKNOWN"


def test_request_errors_match_tf_serving(tmp_path: Path) -> None:
    make_versions(tmp_path, 1)
    m = ModelManager(loader=FakeLoader())
    m.reload(config(tmp_path, (1,)))
    cases = [
        (spec("nope"), "NOT_FOUND", "Servable not found for request: Latest(nope)"),
        (spec(version=5), "NOT_FOUND", "Servable not found for request: Specific(rec, 5)"),
        (spec(label="x"), "INVALID_ARGUMENT", "Unrecognized servable version label: x"),
        (spec(""), "INVALID_ARGUMENT", "ModelSpec has no name specified."),
    ]
    for s, code, message in cases:
        with pytest.raises(ServableError) as info:
            m.servable(s)
        assert (info.value.code, info.value.message) == (code, message)
    with pytest.raises(ServableError, match="Could not find version 5 of model rec"):
        m.status(spec(version=5))
    with pytest.raises(ServableError, match="Could not find any versions of model nope"):
        m.status(spec("nope"))
    with pytest.raises(ServableError, match="Illegal to list model rec, 2 times"):
        m.reload(mc.to_proto([]).__class__.FromString(_two_entries(tmp_path)))


def _two_entries(base: Path) -> bytes:
    c = config(base, (1,))
    c.model_config_list.config.add().CopyFrom(c.model_config_list.config[0])
    return c.SerializeToString()


# --------------------------------------------------------------------------------------------
# Flags and the side files


def test_batching_and_monitoring_files(tmp_path: Path) -> None:
    text = Path(__file__).resolve().parents[2].joinpath("serving", "batching_parameters.txt")
    params = parse_batching_parameters(text.read_text(), source=str(text))
    assert params["max_batch_size"] > 0 and params["num_batch_threads"] > 0
    with pytest.raises(ConfigError, match='has no field named "max_batch"'):
        parse_batching_parameters("max_batch { value: 3 }")
    with pytest.raises(ConfigError, match="max_batch_size: 3.*Expected"):  # a wrapper message
        parse_batching_parameters("max_batch_size: 3")
    monitoring = text.with_name("monitoring.config").read_text()
    assert parse_monitoring_config(monitoring) == "/monitoring/prometheus/metrics"
    assert parse_monitoring_config("prometheus_config { enable: false }") is None


def test_single_model_flags_and_config_file_precedence(tmp_path: Path) -> None:
    args = build_parser().parse_args(["--model_name", "rec", "--model_base_path", str(tmp_path)])
    server = server_from_args(args)
    model = server._initial.model_config_list.config[0]  # type: ignore[union-attr]
    assert (model.name, model.base_path) == ("rec", str(tmp_path))
    assert model.model_version_policy.latest.num_versions == 1
    args = build_parser().parse_args(
        ["--model_config_file", "x.config", "--model_base_path", str(tmp_path),
         "--enable_batching", "--allow_version_labels_for_unavailable_models=true"]
    )  # fmt: skip
    assert server_from_args(args)._config_file == Path("x.config")
    with pytest.raises(ConfigError, match="--model_config_file"):
        server_from_args(build_parser().parse_args([]))


def test_an_unloaded_version_is_freed_even_inside_reference_cycles(tmp_path: Path) -> None:
    # A SavedModel's functions and variables refer to each other: only a full collection frees
    # them, and the soak saw 10-15 MB per hot swap stay until one happened by chance.
    import gc
    import weakref

    class Cyclic(Servable):
        pass

    held: list[weakref.ref[Servable]] = []

    def loader(name: str, version: int, path: Path) -> Servable:
        servable = Cyclic(name, version, path, {}, {})
        servable.me = servable  # type: ignore[attr-defined]
        held.append(weakref.ref(servable))
        return servable

    make_versions(tmp_path, 1, 2)
    m = ModelManager(loader=loader)
    gc.disable()  # only the manager's own collection may free it
    try:
        m.reload(config(tmp_path, (1,)))
        m.reload(config(tmp_path, (2,)))
        assert held[0]() is None
        assert held[1]() is not None
    finally:
        gc.enable()
