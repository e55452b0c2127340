from __future__ import annotations

import dataclasses
import json

import pytest

from recflow import config, settings, settings_views
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
        ({"epochs": "many"}, "epochs: expected a int"),
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


def test_every_param_has_a_title_help_and_section():
    for cfg in (config.PipelineConfig(), config.PolicyConfig()):
        spec = settings_views.form_schemas(cfg)
        for name, (_, schema) in spec.items():
            assert schema.get("title") and schema.get("description"), name
            assert schema.get("section"), name
    assert set(settings_views.form_schemas(config.PipelineConfig())) == set(config.param_names())


def test_bad_values_are_refused_outside_airflow_naming_field_bound_and_value():
    with pytest.raises(ConfigError) as err:
        config.from_params(
            {"learning_rate": -1, "synthetic_users": 1, "bootstrap_samples": 0, "confidence": 1.5}
        )
    message = str(err.value)
    for fragment in (
        "learning_rate: expected > 0, found -1.0",
        "synthetic_users: expected >= 10, found 1",
        "bootstrap_samples: expected >= 100, found 0",
        "confidence: expected < 1, found 1.5",
    ):
        assert fragment in message


def test_bounds_hold_however_a_config_is_built():
    # direct construction and dataclasses.replace run the same checks as from_params
    with pytest.raises(ConfigError, match="learning_rate: expected > 0, found -1"):
        config.TrainConfig(learning_rate=-1)
    with pytest.raises(ConfigError, match="sasrec_epochs: expected >= 1, found 0"):
        dataclasses.replace(config.SasrecSettings(), epochs=0)
    with pytest.raises(ConfigError, match="model: expected one of"):
        config.train_config(model="xgboost")
    with pytest.raises(ConfigError, match="floor_ndcg"):
        config.GateConfig(floors={"ndcg": 2.0})


def test_cross_field_rules_live_beside_their_fields():
    with pytest.raises(ConfigError, match="DP-SGD exists for model 'ranking_mlp' only"):
        config.train_config(dp_enabled=True, model="ease")
    with pytest.raises(ConfigError, match="DP-SGD runs on one device"):
        config.TrainConfig(dp=config.DpSettings(enabled=True), distribution="multi_worker")
    with pytest.raises(ConfigError, match="sasrec_heads: expected a divisor"):
        config.train_config(sasrec_dim=10, sasrec_heads=3)


def test_the_zoo_is_the_only_list_of_kinds():
    from recflow.models import zoo

    _, schema = settings_views.form_schemas(config.PipelineConfig())["model"]
    assert schema["enum"] == list(zoo.kind_names())
    assert not hasattr(config, "MODELS")


def test_mlflow_params_cover_every_setting():
    params = config.to_dict(config.PipelineConfig())
    assert params["train.epochs"] == 5
    assert params["train.sasrec.dim"] == 64
    assert params["gate.floors"] == {"ndcg": 0.02, "hr": 0.05}
    assert params["validation.sample_rows"] == 5  # config-only settings too
    assert len(params) == len(settings.walk(config.PipelineConfig, params_only=False)) - 2


def test_settings_docs_are_up_to_date(monkeypatch):
    from recflow.settings_doc import DOC_PATH, render

    for name in (config.ENV_SERVING_HOST, config.ENV_SERVING_PORT, config.ENV_TRAIN_DISTRIBUTION):
        monkeypatch.delenv(name, raising=False)

    assert DOC_PATH.read_text(encoding="utf-8") == render(), (
        "docs/settings.md is stale: run `python -m recflow.settings_doc`"
    )


def test_boolean_params_accept_strings():
    assert config.from_params({"accept_drift": "false"}).drift.accept_drift is False
    assert config.from_params({"accept_drift": "true"}).drift.accept_drift is True
    with pytest.raises(ConfigError, match="accept_drift"):
        config.from_params({"accept_drift": "maybe"})


def test_config_cli_checks_a_conf_like_the_dag(capsys):
    from recflow.config_cli import main

    assert main(["model=sasrec", "sasrec_dim=32", "--conf", '{"epochs": 2}']) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["model"], shown["sasrec_dim"], shown["epochs"]) == ("sasrec", 32, 2)
    assert main(["learning_rate=-1"]) == 2
    assert "learning_rate: expected > 0, found -1.0" in capsys.readouterr().err
