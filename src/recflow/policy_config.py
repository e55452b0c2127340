"""The policy pipeline's settings (dags/recsys_policy.py): logged bandit feedback -> policy.

A config of its own rather than more PipelineConfig fields: the two DAGs share only the
registry and serving blocks, with their own names (a policy is not a recommender). Declared
with :func:`recflow.settings.setting` like the training settings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from recflow import settings as _settings
from recflow import settings_views
from recflow.errors import ConfigError
from recflow.settings import Settings, block, setting
from recflow.work_layout import SERVING, RegistryConfig, ServingConfig, WorkLayout, default_work_dir

POLICY_SOURCES: tuple[str, ...] = ("serving_log", "obd")
POLICY_CANDIDATES: tuple[str, ...] = ("neural", "linucb")  # exportable; Thompson is a baseline
POLICY_ESTIMATORS: tuple[str, ...] = ("ips", "snips", "dr")
POLICY_REWARD_MODELS: tuple[str, ...] = ("logistic", "ridge")
OBD_BEHAVIOR_POLICIES: tuple[str, ...] = ("random", "bts")
OBD_CAMPAIGNS: tuple[str, ...] = ("all", "men", "women")

DATA = "Logged feedback"
VALIDATION = "Validation"
LEARNING = "Policy learning"
GATE = "Estimation and gate"
# Served names of the policy's registry and serving blocks; the server blocks' other fields
# (top_k, infra validation) belong to the recommender and are not policy DAG params.
_POLICY_HIDDEN = (
    "top_k",
    "reload_timeout",
    "answer_rtol",
    "infra_load_timeout",
    "infra_attempts",
    "infra_server",
)


@dataclass(frozen=True)
class PolicyConfig(WorkLayout, Settings):
    """Settings of the policy DAG, one declaration each."""

    FORM_SECTION: ClassVar[str] = LEARNING

    source: str = setting(
        "serving_log",
        "Feedback source",
        "serving_log: a folder of JSON-lines files in the serving-log format v1 (docs/serving_log.md), e.g. written by PolicyClient next to the served policy; obd: the Open Bandit Dataset (one behaviour policy and campaign).",
        choices=POLICY_SOURCES,
        section=DATA,
    )
    data_path: str = setting(
        "",
        "Feedback path",
        "serving_log: the log folder. obd: the folder that holds random/ and bts/ (e.g. /work/shared/datasets/open-bandit-small).",
        section=DATA,
    )
    log_glob: str = setting(
        "*.jsonl",
        "Log file pattern",
        "serving_log only: which files of the folder to read (glob).",
        min_length=1,
        section=DATA,
    )
    catalogue: tuple[str, ...] = setting(
        (),
        "Action catalogue",
        "serving_log only: every action id the policy may choose. Empty: the actions found in the logs (with exploration every action shows up).",
        section=DATA,
    )
    fill_missing_rewards: bool = setting(
        True,
        "Fill missing rewards",
        "serving_log only: a shown slot with no reward record gets the value below (e.g. 0 for a click never seen within the attribution window). Off: such slots fail validation.",
        section=DATA,
    )
    missing_reward: float = setting(
        0.0,
        "Missing reward value",
        "Reward of a slot with no reward record when filling is on.",
        section=DATA,
    )
    obd_behavior_policy: str = setting(
        "random",
        "OBD behaviour policy",
        "obd only: which logging policy's feedback to read (uniform random or Bernoulli Thompson sampling).",
        choices=OBD_BEHAVIOR_POLICIES,
        section=DATA,
    )
    obd_campaign: str = setting(
        "all",
        "OBD campaign",
        "obd only: the campaign's logs to read.",
        choices=OBD_CAMPAIGNS,
        section=DATA,
    )
    binary_reward: bool = setting(
        True,
        "Binary rewards",
        "Validation requires every reward to be 0 or 1 (clicks). Off: any finite number.",
        section=VALIDATION,
    )
    min_rounds: int = setting(
        1000,
        "Minimum held-out slots",
        "The gate declines a candidate whose value was estimated on fewer held-out slots (collect more feedback or hold out a larger share first).",
        ge=1,
        section=GATE,
    )
    holdout_fraction: float = setting(
        0.3,
        "Held-out share of requests",
        "Share of requests (all slots of a request together, drawn with the seed) kept out of learning: every policy and the logging policy are estimated on them only, so the gate is not fooled by a policy that memorised the learning logs. The rest is learned from.",
        gt=0,
        lt=1,
        section=GATE,
    )
    candidate: str = setting(
        "neural",
        "Candidate policy",
        "Which learned policy is gated, exported and served: the neural softmax policy (Keras, trained off-policy on doubly robust pseudo-rewards) or LinUCB. Linear Thompson sampling is estimated as a baseline only.",
        choices=POLICY_CANDIDATES,
    )
    epsilon: float = setting(
        0.1,
        "Serving exploration rate",
        "Share of uniform exploration the policies are evaluated with and the candidate's warmup uses; clients send it with each request. Keeps every propensity >= epsilon / actions so the next logs stay usable.",
        gt=0,
        le=1,
    )
    epochs: int = setting(
        20,
        "Neural policy epochs",
        "Passes over the logged slots.",
        ge=1,
        le=1000,
    )
    hidden_units: int = setting(
        64,
        "Hidden units",
        "Width of the neural policy's hidden ReLU layer.",
        ge=1,
        le=4096,
    )
    learning_rate: float = setting(
        0.003,
        "Learning rate",
        "Adam learning rate of the neural policy.",
        gt=0,
        le=1,
    )
    linucb_alpha: float = setting(
        0.5,
        "LinUCB alpha",
        "Weight of LinUCB's upper-confidence bonus.",
        ge=0,
    )
    ts_scale: float = setting(
        0.25,
        "Thompson posterior scale",
        "Multiplier of the linear Thompson sampling posterior's standard deviation.",
        gt=0,
    )
    reward_model: str = setting(
        "logistic",
        "Reward model",
        "Cross-fitted q(x, a, position) used by the neural policy's DR objective and by the DR estimates: logistic (0/1 rewards, as the Open Bandit Pipeline) or ridge.",
        choices=POLICY_REWARD_MODELS,
    )
    seed: int = setting(
        0,
        "Seed",
        "Seed of the held-out split, training, cross-fitting folds and bootstrap resampling.",
        ge=0,
    )
    n_boot: int = setting(
        2000,
        "Bootstrap resamples",
        "Resamples of logged slots for each confidence interval.",
        ge=1,
        le=100000,
        section=GATE,
    )
    confidence: float = setting(
        0.95,
        "Confidence level",
        "Two-sided level of the bootstrap intervals (0.95: the gate reads the 2.5% lower bound).",
        gt=0,
        lt=1,
        section=GATE,
    )
    gate_estimator: str = setting(
        "dr",
        "Gate estimator",
        "Whose lower bound the gate reads (IPS, SNIPS or doubly robust).",
        choices=POLICY_ESTIMATORS,
        section=GATE,
    )
    margin: float = setting(
        0.0,
        "Margin over logging",
        "Relative margin: the candidate's lower bound must exceed the logging policy's value x (1 + margin). 0.05 asks for 5% better.",
        gt=-1,
        section=GATE,
    )
    registry: RegistryConfig = block(
        lambda: RegistryConfig(experiment="recflow-policy", model_name="recflow-policy")
    )
    serving: ServingConfig = block(lambda: ServingConfig(model_name="policy"), hide=_POLICY_HIDDEN)
    work_dir: Path = setting(
        title="Work folder",
        help="Where run data, the MLflow store and models live. Empty: $RECFLOW_HOME or ./var.",
        factory=default_work_dir,
        section=SERVING,
    )


def policy_param_names() -> tuple[str, ...]:
    return tuple(_settings.param_map(PolicyConfig))


def from_policy_params(
    params: Mapping[str, object], base: PolicyConfig | None = None
) -> PolicyConfig:
    """A PolicyConfig from the policy DAG's flat params; unknown names and bad values raise."""
    cfg: PolicyConfig = _settings.parse(PolicyConfig, params, base)
    check_policy(cfg)
    return cfg


def check_policy(cfg: PolicyConfig) -> None:
    """What a run needs beyond valid values: the feedback to learn from."""
    if not cfg.data_path:
        raise ConfigError(
            f"data_path is required for source={cfg.source!r}: give the serving-log folder "
            "(JSON-lines files) or the Open Bandit Dataset folder that holds random/ and bts/"
        )


def policy_to_dict(cfg: PolicyConfig) -> dict[str, object]:
    """A JSON-friendly view, for logging as MLflow params."""
    return settings_views.mlflow_params(cfg)
