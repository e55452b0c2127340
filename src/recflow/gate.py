"""The promotion gate: may a candidate model replace the champion?

A declined candidate is a normal outcome, not an error: :func:`decide` returns a
:class:`GateDecision` whose reasons say why. Only a gate that cannot be evaluated (a floor
or metric that was not computed, an unknown rule) raises :class:`ConfigError`.

Given per-user values of the gate metric for candidate and champion (same users, same
order), the champion rule is decided on a paired bootstrap interval of the per-user
difference candidate - champion, so noise neither promotes nor blocks a model:
superiority needs the interval's lower end above ``min_improvement`` (default 0: the whole
interval above zero); non-inferiority needs it above ``-tolerance``. Without per-user values
the rule compares the two means (the original behaviour).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from recflow.config import GateConfig
from recflow.errors import ConfigError
from recflow.jsontypes import JSONObject


@dataclass(frozen=True)
class GateCheck:
    """One check. ``baseline`` is the compared model's value (popularity/champion) if any."""

    name: str  # "floor", "slice_floor", "lift_over_popularity", "catalogue" or "champion"
    metric: str  # e.g. "ndcg@10"
    value: float  # the candidate's value
    threshold: float | None  # what value had to reach (None when skipped)
    passed: bool  # a skipped check passes: it does not block
    baseline: float | None = None
    skipped: bool = False
    message: str = ""
    # paired bootstrap interval of candidate - champion, when per-user values were given
    interval: tuple[float, float] | None = None


@dataclass(frozen=True)
class GateDecision:
    passed: bool
    reasons: list[str] = field(default_factory=list)
    checks: list[GateCheck] = field(default_factory=list)

    def to_dict(self) -> JSONObject:
        return {
            "passed": self.passed,
            "reasons": list(self.reasons),
            "checks": [asdict(c) for c in self.checks],
        }

    def summary(self) -> str:
        verdict = "passed" if self.passed else "failed"
        return f"gate {verdict}: " + "; ".join(self.reasons)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def _get(metrics: Mapping[str, float], metric: str, whose: str, purpose: str) -> float:
    if metric not in metrics:
        raise ConfigError(
            f"gate {purpose}: expected metric {metric!r} in the {whose} metrics, found only "
            f"{sorted(metrics)}; use one of those names (without '@k') in the gate config"
        )
    return float(metrics[metric])


def _floor_checks(candidate: Mapping[str, float], cfg: GateConfig, k: int) -> list[GateCheck]:
    checks = []
    for name, floor in sorted(cfg.floors.items()):
        metric = f"{name}@{k}"
        value = _get(candidate, metric, "candidate", f"floor on {name!r}")
        ok = value >= floor
        relation = "is at or above" if ok else "is below"
        checks.append(
            GateCheck(
                "floor",
                metric,
                value,
                float(floor),
                ok,
                message=f"{metric} {_fmt(value)} {relation} the floor {_fmt(floor)}",
            )
        )
    return checks


def _lift_check(
    candidate: Mapping[str, float], popularity: Mapping[str, float], cfg: GateConfig, metric: str
) -> GateCheck:
    value = _get(candidate, metric, "candidate", "metric")
    base = _get(popularity, metric, "popularity baseline", "lift over popularity")
    threshold = base * (1.0 + cfg.min_lift_over_popularity)
    # Must also be strictly better: a lift of 0 would otherwise admit a popularity clone.
    ok = value >= threshold and value > base
    need = f"popularity {_fmt(base)} x (1 + {cfg.min_lift_over_popularity:g}) = {_fmt(threshold)}"
    if ok:
        msg = f"{metric} {_fmt(value)} beats popularity {_fmt(base)} (needed >= {need})"
    else:
        msg = (
            f"{metric} {_fmt(value)} does not beat popularity: needed >= {need} and > {_fmt(base)}"
        )
    return GateCheck("lift_over_popularity", metric, value, threshold, ok, base, message=msg)


def _champion_check(
    candidate: Mapping[str, float],
    champion: Mapping[str, float] | None,
    cfg: GateConfig,
    metric: str,
) -> GateCheck:
    value = _get(candidate, metric, "candidate", "metric")
    if champion is None:
        return GateCheck(
            "champion",
            metric,
            value,
            None,
            True,
            skipped=True,
            message=f"champion check skipped: no champion to compare with ({cfg.rule})",
        )
    base = _get(champion, metric, "champion", "champion comparison")
    if cfg.rule == "non-inferiority":
        threshold = base - cfg.tolerance
        ok = value >= threshold
        rule = f"champion {_fmt(base)} - tolerance {cfg.tolerance:g} = {_fmt(threshold)}"
    else:
        threshold = base + cfg.min_improvement
        ok = value >= threshold and value > base
        rule = (
            f"champion {_fmt(base)} + min_improvement {cfg.min_improvement:g} = "
            f"{_fmt(threshold)}, strictly above the champion"
        )
    if ok:
        msg = f"{metric} {_fmt(value)} meets {cfg.rule} against the {rule}"
    else:
        msg = f"{metric} {_fmt(value)} fails {cfg.rule}: needed >= {rule}"
    return GateCheck("champion", metric, value, threshold, ok, base, message=msg)


def _slice_floor_checks(
    slices: Mapping[str, Mapping[str, float]] | None, cfg: GateConfig, metric: str
) -> list[GateCheck]:
    checks = []
    for name, floor in sorted(cfg.slice_floors.items()):
        if slices is None or name not in slices:
            found = sorted(slices) if slices else []
            raise ConfigError(
                f"gate slice floor {name!r}: expected sliced metrics for it, found only slices "
                f"{found}; fix the slice name (e.g. 'activity:cold', 'popularity:tail', "
                "'genre:Drama') or drop the floor"
            )
        value = _get(slices[name], metric, f"slice {name!r}", f"slice floor on {name!r}")
        ok = value >= floor
        relation = "is at or above" if ok else "is below"
        checks.append(
            GateCheck(
                "slice_floor",
                f"{name}/{metric}",
                value,
                float(floor),
                ok,
                message=f"{name} {metric} {_fmt(value)} {relation} the floor {_fmt(floor)}",
            )
        )
    return checks


def _bootstrap_champion_check(
    value: float,
    base: float,
    candidate_per_user: np.ndarray,
    champion_per_user: np.ndarray,
    cfg: GateConfig,
    metric: str,
) -> GateCheck:
    from recflow.evaluation.bootstrap import paired_bootstrap

    ci = paired_bootstrap(
        candidate_per_user,
        champion_per_user,
        samples=cfg.bootstrap_samples,
        confidence=cfg.confidence,
        seed=cfg.bootstrap_seed,
    )
    if cfg.rule == "non-inferiority":
        threshold = -cfg.tolerance
        need = f"lower end above -tolerance = {-cfg.tolerance:g}"
    else:
        threshold = cfg.min_improvement
        need = f"lower end above min_improvement = {cfg.min_improvement:g}"
    ok = ci.low > threshold
    interval = (ci.low, ci.high)
    pct = f"{100 * cfg.confidence:g}%"
    detail = (
        f"{metric} {_fmt(value)} vs champion {_fmt(base)}: paired bootstrap {pct} interval of "
        f"the per-user difference [{ci.low:+.4f}, {ci.high:+.4f}] over {ci.users} users"
    )
    if ok:
        msg = f"{detail} meets {cfg.rule} ({need})"
    else:
        msg = f"{detail} fails {cfg.rule}: needed its {need}"
    return GateCheck("champion", metric, value, threshold, ok, base, message=msg, interval=interval)


def _catalogue_check(catalogue: Mapping[str, Any] | None, cfg: GateConfig) -> GateCheck | None:
    """May candidate and champion be compared at all? None without a champion to compare."""
    overlap = (catalogue or {}).get("overlap")
    if not catalogue or not overlap:
        return None
    share = float(overlap["share_of_champion"])
    need = float(cfg.catalogue_min_overlap)
    cand = catalogue.get("candidate") or {}
    champ = catalogue.get("champion") or {}
    facts = (
        f"the candidate knows {overlap['candidate_size']} items (data source "
        f"{cand.get('source', 'unknown')}), the champion {overlap['champion_size']} (data source "
        f"{champ.get('source', 'unknown')}); they share {overlap['shared']} items = {share:.1%} "
        "of the champion's catalogue"
    )
    metric = "catalogue_overlap"
    if share >= need:
        message = f"catalogues comparable: {facts} (minimum {need:.0%})"
        return GateCheck("catalogue", metric, share, need, True, message=message)
    if cfg.allow_catalogue_change:
        message = (
            f"catalogue change allowed by the trigger (allow_catalogue_change): {facts}, below "
            f"the minimum {need:.0%}; the champion comparison ranks only the shared items"
        )
        return GateCheck("catalogue", metric, share, need, True, message=message)
    message = (
        f"catalogue changed: {facts}, below catalogue_min_overlap {need:.0%}, so the champion's "
        "metrics would measure other items. Retrain on the champion's data, or trigger with "
        "allow_catalogue_change=true to replace the champion knowingly"
    )
    return GateCheck("catalogue", metric, share, need, False, message=message)


def decide(
    candidate: Mapping[str, float],
    popularity: Mapping[str, float],
    champion: Mapping[str, float] | None,
    cfg: GateConfig,
    k: int,
    *,
    candidate_per_user: np.ndarray | None = None,
    champion_per_user: np.ndarray | None = None,
    slices: Mapping[str, Mapping[str, float]] | None = None,
    catalogue: Mapping[str, Any] | None = None,
    candidate_on_shared: Mapping[str, float] | None = None,
) -> GateDecision:
    """Apply floors, slice floors, lift over popularity and the champion rule.

    All metrics must come from the same split and evaluator (the champion re-scored, not
    its logged metrics). NaN values fail every comparison. ``candidate_per_user`` and
    ``champion_per_user`` (the gate metric per evaluated user, same users in the same order)
    switch the champion rule to the paired bootstrap; ``slices`` (slice name -> candidate
    metrics) feeds ``cfg.slice_floors``.

    ``catalogue`` (evaluate's ``catalogue`` record: each model's item-set digest, size and
    data source, and their ``overlap``) adds the check that the two are comparable: the
    candidate must know ``cfg.catalogue_min_overlap`` of the champion's items unless
    ``cfg.allow_catalogue_change``. ``candidate_on_shared``: the candidate's metrics on the items
    both know, which the champion rule then uses (the champion's were measured on those too).
    """
    # cfg.rule is one of GATE_RULES: declared and checked in recflow.gate_config.GateConfig
    metric = f"{cfg.metric}@{k}"
    catalogue_check = _catalogue_check(catalogue, cfg)
    versus = candidate_on_shared if candidate_on_shared is not None else candidate
    champion_check = _champion_check(versus, champion, cfg, metric)
    if champion is None and catalogue_check is not None:
        why = (catalogue or {}).get("no_comparison") or "nothing to compare on"
        champion_check = dataclasses.replace(
            champion_check,
            message=f"champion check skipped: no user's held-out item is known to both ({why})",
        )
    paired = candidate_per_user is not None and champion_per_user is not None
    if champion is not None and paired and not champion_check.skipped:
        champion_check = _bootstrap_champion_check(
            champion_check.value,
            float(champion_check.baseline or 0.0),
            np.asarray(candidate_per_user),
            np.asarray(champion_per_user),
            cfg,
            metric,
        )
    checks = [
        *_floor_checks(candidate, cfg, k),
        *_slice_floor_checks(slices, cfg, metric),
        _lift_check(candidate, popularity, cfg, metric),
        *([catalogue_check] if catalogue_check is not None else []),
        champion_check,
    ]
    checks = [_nan_failed(c) if math.isnan(c.value) and not c.skipped else c for c in checks]
    passed = all(c.passed for c in checks)
    reasons = [c.message for c in checks if passed or not c.passed]
    return GateDecision(passed=passed, reasons=reasons, checks=checks)


def _nan_failed(check: GateCheck) -> GateCheck:
    return GateCheck(
        check.name,
        check.metric,
        check.value,
        check.threshold,
        False,
        check.baseline,
        message=f"{check.metric} is NaN: the candidate's evaluation is broken",
        interval=check.interval,
    )


def retrieval_check(metrics: Mapping[str, float], cfg: GateConfig) -> GateCheck | None:
    """The two-stage retrieval floor, from the train stage's metrics (None for other kinds).

    recall@N of the towers on validation must reach ``cfg.min_retrieval_recall`` and the
    recall@N of the trivial retrieval stage (the N most popular unseen items) on the same
    users: below that, the towers lose held-out items that popularity would have kept, and the
    ranking stage's hit rate can never exceed the retrieval stage's recall.
    """
    name = next((k for k in metrics if k.startswith("retrieval_recall_at_")), None)
    if name is None:
        return None
    n = name.removeprefix("retrieval_recall_at_")
    value = float(metrics[name])
    popular = float(metrics.get(f"popularity_recall_at_{n}", 0.0))
    threshold = max(cfg.min_retrieval_recall, popular)
    ok = value >= threshold  # NaN fails
    need = f"max(floor {cfg.min_retrieval_recall:g}, popularity's {_fmt(popular)})"
    relation = "meets" if ok else "is below"
    return GateCheck(
        "retrieval_recall",
        f"recall@{n}",
        value,
        threshold,
        ok,
        popular,
        message=f"retrieval recall@{n} {_fmt(value)} {relation} {need} = {_fmt(threshold)}",
    )


def with_check(
    decision: GateDecision, train_metrics: Mapping[str, float], cfg: GateConfig
) -> GateDecision:
    """``decision`` plus the retrieval check when the train stage measured one."""
    check = retrieval_check(train_metrics, cfg)
    if check is None:
        return decision
    checks = [*decision.checks, check]
    passed = decision.passed and check.passed
    reasons = [c.message for c in checks if passed or not c.passed]
    return GateDecision(passed=passed, reasons=reasons, checks=checks)
