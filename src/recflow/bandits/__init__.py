"""Contextual bandits with off-policy evaluation (issue 5).

Light to import: numpy only; pandas, scikit-learn, TensorFlow and Great Expectations load when
a function needs them. Modules: ``feedback`` (LoggedFeedback arrays), ``obd`` (Open Bandit
Dataset reader), ``logformat`` (serving-log format v1), ``validate`` (GX checks),
``estimators`` (IPS, SNIPS, DM, DR, bootstrap), ``bts`` (ZOZOTOWN's Bernoulli TS),
``policies`` (LinUCB, LinearTS, NeuralPolicy), ``simulator`` (MovieLens environment with known
truth), ``export`` (SavedModel for TF Serving), ``gate`` (promotion rule), ``slates``
(slates drawn without replacement and their exact per-position propensities), ``client``
(PolicyClient: Predict on the served policy, show a slate, write the serving log),
``synthetic`` (a seeded bandit with known rewards that drives PolicyClient).
"""

from __future__ import annotations

from recflow.bandits.estimators import (
    ESTIMATORS,
    Estimate,
    bootstrap_ci,
    estimate_policy_value,
    fit_reward_model,
)
from recflow.bandits.feedback import LoggedFeedback
from recflow.bandits.gate import PolicyGateConfig, PolicyGateDecision, decide_policy
from recflow.bandits.policies import LinearTS, LinUCB, NeuralPolicy

__all__ = [
    "ESTIMATORS",
    "Estimate",
    "LinUCB",
    "LinearTS",
    "LoggedFeedback",
    "NeuralPolicy",
    "PolicyGateConfig",
    "PolicyGateDecision",
    "bootstrap_ci",
    "decide_policy",
    "estimate_policy_value",
    "fit_reward_model",
]
