"""Policy pipeline stages without Airflow or servers: in-memory registry, synthetic logs
written by PolicyClient, real GX / Keras / estimators."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recflow.bandits.client import PolicyClient, UniformPredictor
from recflow.bandits.synthetic import drive_client, linear_environment
from recflow.config import PolicyConfig, from_policy_params
from recflow.errors import ConfigError, DataSourceError, ValidationFailed
from recflow.pipeline.policy import common, estimate, gate, learn, load, validate
from recflow.registry import InMemoryRegistry


def make_cfg(work: Path, logs: Path, **params) -> PolicyConfig:
    base = {
        "work_dir": str(work),
        "data_path": str(logs),
        "tracking_uri": "memory:",
        "epochs": 15,
        "n_boot": 300,
        "min_rounds": 500,
    }
    return from_policy_params({**base, **params})


@pytest.fixture(scope="module")
def uniform_logs(tmp_path_factory) -> Path:
    """1200 requests x 2 slots logged by a uniform policy on a bandit with a clear best action."""
    folder = tmp_path_factory.mktemp("logs")
    env = linear_environment(n_users=150, dim=4, n_actions=6, seed=1)
    client = PolicyClient(UniformPredictor(env.action_ids), folder, slate_size=2, seed=1)
    drive_client(env, client, 1200, epsilon=1.0, seed=1)
    return folder


def test_params_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown policy params"):
        from_policy_params({"data_path": "x", "no_such_param": 1})
    with pytest.raises(ConfigError, match="epsilon"):
        from_policy_params({"data_path": "x", "epsilon": 0})
    with pytest.raises(ConfigError, match="data_path is required"):
        from_policy_params({})
    with pytest.raises(ConfigError, match="candidate"):
        from_policy_params({"data_path": "x", "candidate": "linear_ts"})
    cfg = from_policy_params({"data_path": "x", "catalogue": "a, b", "serving_port": 9001})
    assert cfg.catalogue == ("a", "b") and cfg.serving.grpc_port == 9001
    assert cfg.serving.model_name == "policy" and cfg.registry.model_name == "recflow-policy"


def test_stages_learn_estimate_and_gate(tmp_path: Path, uniform_logs: Path) -> None:
    cfg = make_cfg(tmp_path, uniform_logs)
    ctx = common.run_context(cfg, "recsys_policy", "manual__1")
    reg = InMemoryRegistry(tmp_path / "artifacts")

    loaded = load.run(cfg, ctx, reg)
    assert loaded["rounds"] == 2400 and loaded["len_list"] == 2 and loaded["actions"] == 6
    assert loaded["policy_versions"] == {"0": 2400}
    assert validate.run(cfg, ctx, reg)["success"]
    learned = learn.run(cfg, ctx, reg)
    assert (ctx.saved_model_dir / "saved_model.pb").is_file()
    assert learned["candidate"] == "neural"
    values = estimate.run(cfg, ctx, reg)
    assert set(values["policies"]) == {"neural", "linucb", "linear_ts"}
    for per in values["policies"].values():
        assert set(per) == {"ips", "snips", "dr"}
        for e in per.values():
            assert e["ci_low"] <= e["value"] <= e["ci_high"]
    # Uniform logging leaves plenty of room: the learned policy is far better.
    logging_value = values["logging"]["value"]
    assert values["policies"]["neural"]["dr"]["ci_low"] > logging_value
    decision = gate.run(cfg, ctx, reg)
    assert decision["passed"], decision["reasons"]

    run_id = common.tracking_run(cfg, ctx, reg)
    info = reg.get_run(run_id)
    assert info.tags["gate"] == "passed" and info.status == "RUNNING"
    assert {"neural.dr.ci_low", "logging.value", "linear_ts.snips.value"} <= set(info.metrics)

    # Same estimates, a margin no policy can meet: declined, the run still ends FINISHED.
    strict = make_cfg(tmp_path, uniform_logs, margin=5.0)
    declined = gate.run(strict, ctx, reg)
    assert not declined["passed"]
    assert any("does not exceed" in r for r in declined["reasons"])
    info = reg.get_run(run_id)
    assert info.tags["gate"] == "declined" and info.status == "FINISHED"


def _write_bad_log(folder: Path) -> None:
    lines = []
    for i, props in enumerate(([0.0, 0.5], [None, 0.25], [0.5, 0.5])):
        slate = [
            {
                "position": k,
                "action_id": f"a{(i + k) % 3}",
                **({} if p is None else {"propensity": p}),
            }
            for k, p in enumerate(props)
        ]
        lines.append(
            {
                "schema": "recflow.bandit_log",
                "version": 1,
                "type": "impression",
                "request_id": f"r{i}",
                "timestamp": 100.0 + i,
                "policy_name": "policy",
                "policy_version": "1",
                "epsilon": 0.1,
                "context": [0.1 * i, 1.0],
                "slate": slate,
            }
        )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bad.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


def test_zero_or_missing_propensities_fail_validation(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    _write_bad_log(logs)
    cfg = make_cfg(tmp_path, logs)
    ctx = common.run_context(cfg, "recsys_policy", "manual__bad")
    reg = InMemoryRegistry(tmp_path / "artifacts")
    assert load.run(cfg, ctx, reg)["rounds"] == 6
    with pytest.raises(ValidationFailed) as caught:
        validate.run(cfg, ctx, reg)
    failed = {(f["column"], f["expectation"]) for f in caught.value.failures}
    assert ("pscore", "expect_column_values_to_not_be_null") in failed
    assert ("pscore", "expect_column_values_to_be_between") in failed
    assert "propensity" in str(caught.value)
    info = reg.get_run(common.tracking_run(cfg, ctx, reg))
    assert info.status == "FAILED" and info.tags["validation"] == "failed"


def test_missing_log_folder_and_unknown_actions_are_reported(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, tmp_path / "nowhere")
    ctx = common.run_context(cfg, "recsys_policy", "manual__none")
    reg = InMemoryRegistry(tmp_path / "artifacts")
    with pytest.raises(DataSourceError, match="found none"):
        load.run(cfg, ctx, reg)
    logs = tmp_path / "logs"
    _write_bad_log(logs)
    cfg = make_cfg(tmp_path, logs, catalogue=["a0", "a1"])
    ctx = common.run_context(cfg, "recsys_policy", "manual__catalogue")
    with pytest.raises(DataSourceError, match="a2"):
        load.run(cfg, ctx, reg)


def test_learned_distributions_are_slate_marginals(tmp_path: Path, uniform_logs: Path) -> None:
    """What estimate reads for the candidate is the served policy's exact slot distribution."""
    from recflow.bandits.feedback import read_feedback
    from recflow.bandits.slates import slate_marginals
    from recflow.pipeline.policy.common import exported_outputs

    cfg = make_cfg(tmp_path, uniform_logs, candidate="linucb", epochs=1)
    ctx = common.run_context(cfg, "recsys_policy", "manual__lin")
    reg = InMemoryRegistry(tmp_path / "artifacts")
    load.run(cfg, ctx, reg)
    learn.run(cfg, ctx, reg)
    fb, _ = read_feedback(common.feedback_dir(ctx))
    with np.load(common.policies_dir(ctx) / learn.PROBS_FILE) as z:
        pi = z["pi_linucb"]
    rows = np.arange(20)
    x = fb.context[rows].astype(np.float32)
    served = exported_outputs(ctx.saved_model_dir, x, np.full(len(x), cfg.epsilon, np.float32))
    index = {a: i for i, a in enumerate(fb.action_ids)}
    for i in rows:
        order = [index[a.decode()] for a in served["action_ids"][i]]
        probs = np.empty(fb.n_actions)
        probs[order] = served["action_probs"][i]
        want = slate_marginals(probs[None], fb.len_list)[0, :, fb.position[i]]
        np.testing.assert_allclose(pi[i], want, atol=1e-5)
