from __future__ import annotations

import pytest

from recflow import config
from recflow.errors import ConfigError


def test_defaults_are_consistent():
    cfg = config.PipelineConfig()
    config.check(cfg)
    assert cfg.gate.floors["ndcg"] > 0


def test_from_params_sets_nested_fields_and_floors(tmp_path):
    cfg = config.from_params(
        {"epochs": 2, "floor_ndcg": 0.2, "gate_rule": "superiority", "work_dir": str(tmp_path)}
    )
    assert cfg.train.epochs == 2
    assert cfg.gate.floors == {"ndcg": 0.2, "hr": 0.05}
    assert cfg.gate.rule == "superiority"
    assert cfg.work_dir == tmp_path.resolve()
    assert cfg.model_base_path == tmp_path.resolve() / "models"


def test_empty_values_keep_defaults():
    cfg = config.from_params({"data_path": None, "tracking_uri": ""})
    assert cfg.data.path is None
    assert cfg.tracking_uri.startswith("sqlite:///")


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"nope": 1}, "unknown params"),
        ({"epochs": "many"}, "expected a int"),
        ({"epochs": 0}, "epochs"),
        ({"data_source": "csv"}, "data_path is required"),
        ({"data_source": "oracle"}, "data_source"),
        ({"gate_rule": "vibes"}, "gate_rule"),
        ({"k": 50, "top_k": 20}, "k: expected"),
        ({"min_rating": 6, "max_rating": 5}, "exceeds"),
    ],
)
def test_bad_params_name_the_problem(params, fragment):
    with pytest.raises(ConfigError, match=fragment):
        config.from_params(params)


def test_every_param_has_a_trigger_form_entry():
    from recflow.pipeline.params import _spec

    spec = _spec()
    assert set(spec) == set(config.param_names())
    for name, (_, schema) in spec.items():
        assert schema.get("title") and schema.get("description"), name
        assert schema.get("section"), name


def test_boolean_params_accept_strings():
    assert config.from_params({"accept_drift": "false"}).drift.accept_drift is False
    assert config.from_params({"accept_drift": "true"}).drift.accept_drift is True
    with pytest.raises(ConfigError, match="accept_drift"):
        config.from_params({"accept_drift": "maybe"})
