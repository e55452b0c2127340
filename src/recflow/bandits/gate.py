"""The policy gate: promote a candidate only if it credibly beats the logging policy.

Rule: the candidate's lower confidence bound under the configured estimator (DR by default)
must exceed ``logging_value * (1 + margin)``. The logging policy's value is its on-policy mean
reward on the same logs. A declined candidate is a decision, not an error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from recflow.bandits.estimators import ESTIMATORS, Estimate
from recflow.errors import ConfigError


@dataclass(frozen=True)
class PolicyGateConfig:
    estimator: str = "dr"
    margin: float = 0.0  # relative: 0.02 asks for a lower bound 2% above the logging value
    min_rounds: int = 1000

    def check(self) -> None:
        if self.estimator not in ESTIMATORS:
            raise ConfigError(
                f"policy gate: expected estimator in {ESTIMATORS}, found {self.estimator!r}"
            )
        if self.margin <= -1.0 or self.min_rounds < 1:
            raise ConfigError(
                f"policy gate: expected margin > -1 and min_rounds >= 1, found "
                f"{self.margin} and {self.min_rounds}"
            )


@dataclass(frozen=True)
class PolicyGateDecision:
    passed: bool
    reasons: list[str]
    estimator: str
    threshold: float
    lower_bound: float | None
    details: Mapping[str, object] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "passed": self.passed,
            "reasons": list(self.reasons),
            "estimator": self.estimator,
            "threshold": self.threshold,
            "lower_bound": self.lower_bound,
            "details": dict(self.details),
        }


def decide_policy(
    candidate: Mapping[str, Estimate], logging_value: float, cfg: PolicyGateConfig | None = None
) -> PolicyGateDecision:
    cfg = cfg or PolicyGateConfig()
    cfg.check()
    threshold = logging_value * (1.0 + cfg.margin)
    details: dict[str, object] = {
        "estimates": {k: v.to_dict() for k, v in candidate.items()},
        "logging_value": logging_value,
    }
    est = candidate.get(cfg.estimator)
    if est is None:
        reason = (
            f"no {cfg.estimator} estimate for the candidate (found {sorted(candidate)}); "
            "estimate it or configure another estimator"
        )
        return PolicyGateDecision(False, [reason], cfg.estimator, threshold, None, details)
    reasons: list[str] = []
    if est.n_rounds < cfg.min_rounds:
        reasons.append(
            f"only {est.n_rounds} logged rounds, expected at least {cfg.min_rounds}: "
            "collect more feedback before deciding"
        )
    if est.ci_low <= threshold:
        reasons.append(
            f"{cfg.estimator} lower {1 - est.alpha:.0%} bound {est.ci_low:.6g} does not exceed "
            f"the logging value {logging_value:.6g} x (1 + margin {cfg.margin:g}) = {threshold:.6g}"
        )
    passed = not reasons
    if passed:
        reasons.append(
            f"{cfg.estimator} lower bound {est.ci_low:.6g} > {threshold:.6g} "
            f"(logging value {logging_value:.6g}, margin {cfg.margin:g})"
        )
    return PolicyGateDecision(passed, reasons, cfg.estimator, threshold, est.ci_low, details)
