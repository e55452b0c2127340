"""The policy DAG's trigger form, derived from the PolicyConfig defaults (one source of truth)."""

from __future__ import annotations

from typing import Any

from recflow.config import (
    OBD_BEHAVIOR_POLICIES,
    OBD_CAMPAIGNS,
    POLICY_CANDIDATES,
    POLICY_ESTIMATORS,
    POLICY_REWARD_MODELS,
    POLICY_SOURCES,
    PolicyConfig,
    policy_param_names,
)
from recflow.errors import ConfigError
from recflow.pipeline.params import server_spec, work_dir_spec

DATA = "Logged feedback"
VALIDATION = "Validation"
LEARNING = "Policy learning"
GATE = "Estimation and gate"
SERVING = "Registry and serving"


def _spec() -> dict[str, tuple[Any, dict[str, Any]]]:
    d = PolicyConfig()
    opt_str = {"type": ["null", "string"]}
    return {
        "source": (
            d.source,
            {
                "type": "string",
                "enum": list(POLICY_SOURCES),
                "section": DATA,
                "title": "Feedback source",
                "description": "serving_log: a folder of JSON-lines files in the serving-log format v1 (docs/serving_log.md), e.g. written by PolicyClient next to the served policy; obd: the Open Bandit Dataset (one behaviour policy and campaign).",
            },
        ),
        "data_path": (
            d.data_path,
            {
                "type": "string",
                "section": DATA,
                "title": "Feedback path",
                "description": "serving_log: the log folder. obd: the folder that holds random/ and bts/ (e.g. /work/shared/datasets/open-bandit-small).",
            },
        ),
        "log_glob": (
            d.log_glob,
            {
                "type": "string",
                "minLength": 1,
                "section": DATA,
                "title": "Log file pattern",
                "description": "serving_log only: which files of the folder to read (glob).",
            },
        ),
        "catalogue": (
            list(d.catalogue),
            {
                "type": "array",
                "items": {"type": "string"},
                "section": DATA,
                "title": "Action catalogue",
                "description": "serving_log only: every action id the policy may choose. Empty: the actions found in the logs (with exploration every action shows up).",
            },
        ),
        "fill_missing_rewards": (
            d.fill_missing_rewards,
            {
                "type": "boolean",
                "section": DATA,
                "title": "Fill missing rewards",
                "description": "serving_log only: a shown slot with no reward record gets the value below (e.g. 0 for a click never seen within the attribution window). Off: such slots fail validation.",
            },
        ),
        "missing_reward": (
            d.missing_reward,
            {
                "type": "number",
                "section": DATA,
                "title": "Missing reward value",
                "description": "Reward of a slot with no reward record when filling is on.",
            },
        ),
        "obd_behavior_policy": (
            d.obd_behavior_policy,
            {
                "type": "string",
                "enum": list(OBD_BEHAVIOR_POLICIES),
                "section": DATA,
                "title": "OBD behaviour policy",
                "description": "obd only: which logging policy's feedback to read (uniform random or Bernoulli Thompson sampling).",
            },
        ),
        "obd_campaign": (
            d.obd_campaign,
            {
                "type": "string",
                "enum": list(OBD_CAMPAIGNS),
                "section": DATA,
                "title": "OBD campaign",
                "description": "obd only: the campaign's logs to read.",
            },
        ),
        "binary_reward": (
            d.binary_reward,
            {
                "type": "boolean",
                "section": VALIDATION,
                "title": "Binary rewards",
                "description": "Validation requires every reward to be 0 or 1 (clicks). Off: any finite number.",
            },
        ),
        "min_rounds": (
            d.min_rounds,
            {
                "type": "integer",
                "minimum": 1,
                "section": GATE,
                "title": "Minimum held-out slots",
                "description": "The gate declines a candidate whose value was estimated on fewer held-out slots (collect more feedback or hold out a larger share first).",
            },
        ),
        "holdout_fraction": (
            d.holdout_fraction,
            {
                "type": "number",
                "exclusiveMinimum": 0,
                "exclusiveMaximum": 1,
                "section": GATE,
                "title": "Held-out share of requests",
                "description": "Share of requests (all slots of a request together, drawn with the seed) kept out of learning: every policy and the logging policy are estimated on them only, so the gate is not fooled by a policy that memorised the learning logs. The rest is learned from.",
            },
        ),
        "candidate": (
            d.candidate,
            {
                "type": "string",
                "enum": list(POLICY_CANDIDATES),
                "section": LEARNING,
                "title": "Candidate policy",
                "description": "Which learned policy is gated, exported and served: the neural softmax policy (Keras, trained off-policy on doubly robust pseudo-rewards) or LinUCB. Linear Thompson sampling is estimated as a baseline only.",
            },
        ),
        "epsilon": (
            d.epsilon,
            {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 1,
                "section": LEARNING,
                "title": "Serving exploration rate",
                "description": "Share of uniform exploration the policies are evaluated with and the candidate's warmup uses; clients send it with each request. Keeps every propensity >= epsilon / actions so the next logs stay usable.",
            },
        ),
        "epochs": (
            d.epochs,
            {
                "type": "integer",
                "minimum": 1,
                "maximum": 1000,
                "section": LEARNING,
                "title": "Neural policy epochs",
                "description": "Passes over the logged slots.",
            },
        ),
        "hidden_units": (
            d.hidden_units,
            {
                "type": "integer",
                "minimum": 1,
                "maximum": 4096,
                "section": LEARNING,
                "title": "Hidden units",
                "description": "Width of the neural policy's hidden ReLU layer.",
            },
        ),
        "learning_rate": (
            d.learning_rate,
            {
                "type": "number",
                "exclusiveMinimum": 0,
                "maximum": 1,
                "section": LEARNING,
                "title": "Learning rate",
                "description": "Adam learning rate of the neural policy.",
            },
        ),
        "linucb_alpha": (
            d.linucb_alpha,
            {
                "type": "number",
                "minimum": 0,
                "section": LEARNING,
                "title": "LinUCB alpha",
                "description": "Weight of LinUCB's upper-confidence bonus.",
            },
        ),
        "ts_scale": (
            d.ts_scale,
            {
                "type": "number",
                "exclusiveMinimum": 0,
                "section": LEARNING,
                "title": "Thompson posterior scale",
                "description": "Multiplier of the linear Thompson sampling posterior's standard deviation.",
            },
        ),
        "reward_model": (
            d.reward_model,
            {
                "type": "string",
                "enum": list(POLICY_REWARD_MODELS),
                "section": LEARNING,
                "title": "Reward model",
                "description": "Cross-fitted q(x, a, position) used by the neural policy's DR objective and by the DR estimates: logistic (0/1 rewards, as the Open Bandit Pipeline) or ridge.",
            },
        ),
        "seed": (
            d.seed,
            {
                "type": "integer",
                "minimum": 0,
                "section": LEARNING,
                "title": "Seed",
                "description": "Seed of the held-out split, training, cross-fitting folds and bootstrap resampling.",
            },
        ),
        "n_boot": (
            d.n_boot,
            {
                "type": "integer",
                "minimum": 1,
                "maximum": 100000,
                "section": GATE,
                "title": "Bootstrap resamples",
                "description": "Resamples of logged slots for each confidence interval.",
            },
        ),
        "confidence": (
            d.confidence,
            {
                "type": "number",
                "exclusiveMinimum": 0,
                "exclusiveMaximum": 1,
                "section": GATE,
                "title": "Confidence level",
                "description": "Two-sided level of the bootstrap intervals (0.95: the gate reads the 2.5% lower bound).",
            },
        ),
        "gate_estimator": (
            d.gate_estimator,
            {
                "type": "string",
                "enum": list(POLICY_ESTIMATORS),
                "section": GATE,
                "title": "Gate estimator",
                "description": "Whose lower bound the gate reads (IPS, SNIPS or doubly robust).",
            },
        ),
        "margin": (
            d.margin,
            {
                "type": "number",
                "exclusiveMinimum": -1,
                "section": GATE,
                "title": "Margin over logging",
                "description": "Relative margin: the candidate's lower bound must exceed the logging policy's value x (1 + margin). 0.05 asks for 5% better.",
            },
        ),
        "tracking_uri": (
            None,
            {
                **opt_str,
                "section": SERVING,
                "title": "MLflow tracking URI",
                "description": "Empty: $RECFLOW_TRACKING_URI or a SQLite store under the work folder.",
            },
        ),
        "experiment": (
            d.registry.experiment,
            {
                "type": "string",
                "minLength": 1,
                "section": SERVING,
                "title": "MLflow experiment",
                "description": "Experiment that holds one MLflow run per DAG run.",
            },
        ),
        "registered_model_name": (
            d.registry.model_name,
            {
                "type": "string",
                "minLength": 1,
                "section": SERVING,
                "title": "Registered model",
                "description": "MLflow registered model of the policy (aliases challenger, champion, previous).",
            },
        ),
        "serving_model_name": (
            d.serving.model_name,
            {
                "type": "string",
                "minLength": 1,
                "section": SERVING,
                "title": "Serving model name",
                "description": "Model name of the policy in TF Serving's model config (labels canary, stable).",
            },
        ),
        **server_spec(d.serving, SERVING),
        **work_dir_spec(SERVING),
    }


def policy_params() -> dict[str, Any]:
    """Airflow Params for the trigger form, grouped by section (every config param, no more)."""
    from airflow.sdk import Param

    spec = _spec()
    missing = set(policy_param_names()) ^ set(spec)
    if missing:  # a new config field without a form entry (or the reverse) is a bug
        raise ConfigError(
            f"policy DAG form: expected one entry per PolicyConfig param, found a mismatch on "
            f"{sorted(missing)}; add them to recflow.pipeline.policy_params"
        )
    return {name: Param(default, **schema) for name, (default, schema) in spec.items()}
