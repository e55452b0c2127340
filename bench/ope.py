"""Off-policy evaluation benchmark (``make bench-ope``): writes <out>/ope.json and <out>/ope.md.

Part 1 reproduces the Open Bandit Pipeline quickstart on the Open Bandit Dataset sample: the
value of ZOZOTOWN's Bernoulli-TS policy estimated from the ``random`` logs, against its
on-policy value measured on the ``bts`` logs, for all three campaigns.
Part 2 uses a MovieLens-100K simulator with known truth: learned policies' true values, and
each estimator's bias and interval coverage over repeated log samples.

    python bench/ope.py --data /work/shared/datasets/open-bandit-small \
        --movielens /work/shared/datasets/movielens-100k --out bench/results
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

# OBP quickstart (obp 0.5.4), random/all logs -> BTS, relative estimation errors and values.
PUBLISHED = {
    "ipw": {"value": 0.004553, "relative_error": 0.084},
    "dm": {"value": 0.003545, "relative_error": 0.156},
    "dr": {"value": 0.004727, "relative_error": 0.126},
}
OURS_TO_OBP = {"ips": "ipw", "dm": "dm", "dr": "dr"}


def machine() -> dict[str, Any]:
    from recflow.ops.machine import describe

    return describe("numpy", "tensorflow", "scikit-learn")


def obd_part(root: Path, n_boot: int, seed: int) -> dict[str, Any]:
    from recflow.bandits.bts import bts_action_dist, load_prior
    from recflow.bandits.estimators import bootstrap_ci, estimate_policy_value
    from recflow.bandits.obd import CAMPAIGNS, load_obd
    from recflow.bandits.validate import validate_feedback

    out: dict[str, Any] = {}
    for campaign in CAMPAIGNS:
        t0 = time.perf_counter()
        logs = load_obd(root, "random", campaign)
        on_policy_logs = load_obd(root, "bts", campaign)
        validation = validate_feedback(logs)
        alpha, beta = load_prior(root / "prior_bts.yaml", campaign)
        dist = bts_action_dist(alpha, beta, len_list=logs.len_list, n_sim=100_000, seed=12345)
        pi = np.broadcast_to(dist[None], (logs.n_rounds, *dist.shape))
        estimates = estimate_policy_value(logs, pi, n_boot=n_boot, seed=seed)
        truth = on_policy_logs.on_policy_value()
        truth_ci = bootstrap_ci(on_policy_logs.reward, n_boot, seed)
        rows = {}
        for name, e in estimates.items():
            rows[name] = {
                **e.to_dict(),
                "relative_error": abs(e.value - truth) / truth,
                "covers_on_policy_value": e.covers(truth),
            }
        out[campaign] = {
            "rounds": logs.n_rounds,
            "actions": logs.n_actions,
            "positions": logs.len_list,
            "clicks_random": int(logs.reward.sum()),
            "clicks_bts": int(on_policy_logs.reward.sum()),
            "validation": {k: validation[k] for k in ("success", "expectations_evaluated")},
            "on_policy_value": truth,
            "on_policy_ci": list(truth_ci),
            "estimates": rows,
            "seconds": round(time.perf_counter() - t0, 2),
        }
    ipw_all = out["all"]["estimates"]["ips"]["value"]
    targets = {
        "ipw_all_within_2pct_of_published": abs(ipw_all - PUBLISHED["ipw"]["value"])
        / PUBLISHED["ipw"]["value"]
        <= 0.02,
        "on_policy_inside_ips_snips_dr_ci_every_campaign": all(
            out[c]["estimates"][k]["covers_on_policy_value"]
            for c in out
            for k in ("ips", "snips", "dr")
        ),
    }
    return {"campaigns": out, "published_all": PUBLISHED, "targets": targets}


def simulator_part(
    folder: Path, reps: int, n_rounds: int, n_boot: int, seed: int
) -> dict[str, Any]:
    from recflow.bandits.estimators import estimate_policy_value, fit_reward_model
    from recflow.bandits.gate import PolicyGateConfig, decide_policy
    from recflow.bandits.policies import LinearTS, LinUCB, NeuralPolicy
    from recflow.bandits.simulator import movielens_environment

    t0 = time.perf_counter()
    setup = {
        "n_actions": 50,
        "rank": 20,
        "l2": 5.0,
        "logging_temperature": 0.1,
        "logging_epsilon": 0.2,
    }
    env = movielens_environment(folder, n_actions=50, rank=20, l2=5.0, seed=seed)
    logging = env.softmax_policy(0.1, 0.2)
    optimal = env.optimal_value()
    logging_value = env.policy_value(logging)
    train = env.sample_log(logging, 50_000, seed=seed + 1)
    q_train = fit_reward_model(train, kind="ridge", n_folds=2, seed=seed)
    policies: dict[str, Any] = {
        "linucb": LinUCB.fit(train, alpha=0.5),
        "linear_ts": LinearTS.fit(train, n_samples=500, seed=seed),
        "neural_dr": NeuralPolicy.fit(train, q_hat=q_train, objective="dr", seed=seed),
    }
    learned = {}
    for name, policy in policies.items():
        value = env.policy_value(policy.action_probs(env.contexts))
        learned[name] = {
            "true_value": value,
            "share_of_optimal": value / optimal,
            "share_of_logging": value / logging_value,
        }
    train_seconds = time.perf_counter() - t0

    # Coverage: the neural policy is fixed; only the evaluation logs are redrawn.
    target = policies["neural_dr"]
    pi_users = target.action_probs(env.contexts)
    truth = env.policy_value(pi_users)
    user_of = {c.tobytes(): i for i, c in enumerate(env.contexts)}
    per: dict[str, list[tuple[float, bool, float]]] = {k: [] for k in ("ips", "snips", "dm", "dr")}
    gate_runs = []
    t1 = time.perf_counter()
    for r in range(reps):
        log = env.sample_log(logging, n_rounds, seed=10_000 + r)
        users = np.array([user_of[c.tobytes()] for c in log.context])
        est = estimate_policy_value(
            log, pi_users[users], n_boot=n_boot, seed=r, reward_model="ridge"
        )
        for k, e in est.items():
            per[k].append((e.value - truth, e.covers(truth), e.ci_high - e.ci_low))
        if r < 10:
            gate_runs.append(decide_policy(est, log.on_policy_value(), PolicyGateConfig()).passed)
    estimators = {}
    for k, rows in per.items():
        err = np.array([x[0] for x in rows])
        estimators[k] = {
            "bias": float(err.mean()),
            "bias_se": float(err.std(ddof=1) / np.sqrt(len(err))),
            "rmse": float(np.sqrt(np.mean(err**2))),
            "coverage": float(np.mean([x[1] for x in rows])),
            "mean_ci_width": float(np.mean([x[2] for x in rows])),
        }
    return {
        "setup": {
            **setup,
            "users": env.n_users,
            "train_rounds": train.n_rounds,
            "eval_rounds": n_rounds,
            "repetitions": reps,
            "n_boot": n_boot,
        },
        "optimal_value": optimal,
        "logging_value": logging_value,
        "learned": learned,
        "evaluated_policy": "neural_dr",
        "evaluated_policy_true_value": truth,
        "estimators": estimators,
        "gate_passes_first_10_logs": int(sum(gate_runs)),
        "targets": {
            "neural_share_of_optimal_ge_0.9": learned["neural_dr"]["share_of_optimal"] >= 0.9,
            "coverage_ge_0.9": {k: v["coverage"] >= 0.9 for k, v in estimators.items()},
        },
        "seconds": {
            "train": round(train_seconds, 1),
            "coverage": round(time.perf_counter() - t1, 1),
        },
    }


def markdown(doc: dict[str, Any]) -> str:
    lines = [
        "# Off-policy evaluation benchmark",
        "",
        f"- date: {doc['date']}",
        f"- command: `{doc['command']}`",
        f"- machine: {json.dumps(doc['machine'])}",
        f"- wall time: {doc['wall_seconds']} s",
        "",
        "## Open Bandit Dataset: Bernoulli TS estimated from the random logs",
        "",
        "On-policy value = mean click of the `bts/<campaign>` logs (its 95% bootstrap interval "
        "shown: few clicks). Relative error = |estimate - on-policy| / on-policy. Intervals: "
        f"percentile bootstrap, {doc['settings']['obd_n_boot']} resamples.",
        "",
        "| campaign | estimator | estimate | 95% CI | rel. error | covers on-policy | OBP published (all) |",
        "|---|---|---|---|---|---|---|",
    ]
    obd = doc["obd"]
    for campaign, c in obd["campaigns"].items():
        lo, hi = c["on_policy_ci"]
        lines.append(
            f"| {campaign} | on-policy (bts logs, {c['clicks_bts']} clicks) | {c['on_policy_value']:.6f} "
            f"| [{lo:.6f}, {hi:.6f}] | | | |"
        )
        for name, e in c["estimates"].items():
            pub = ""
            if campaign == "all" and name in OURS_TO_OBP:
                p = obd["published_all"][OURS_TO_OBP[name]]
                pub = f"{p['value']:.6f} (rel. error {p['relative_error']})"
            lines.append(
                f"| {campaign} | {name} | {e['value']:.6f} | [{e['ci_low']:.6f}, {e['ci_high']:.6f}] "
                f"| {e['relative_error']:.3f} | {'yes' if e['covers_on_policy_value'] else 'no'} | {pub} |"
            )
    lines += ["", f"Targets: `{json.dumps(obd['targets'])}`", ""]
    sim = doc["simulator"]
    lines += [
        "## MovieLens-100K simulator (known truth)",
        "",
        f"Setup: `{json.dumps(sim['setup'])}`",
        "",
        f"Optimal value {sim['optimal_value']:.4f}; logging policy {sim['logging_value']:.4f} "
        f"({sim['logging_value'] / sim['optimal_value']:.3f} of optimal).",
        "",
        "| policy | true value | share of optimal | share of logging |",
        "|---|---|---|---|",
    ]
    for name, v in sim["learned"].items():
        lines.append(
            f"| {name} | {v['true_value']:.4f} | {v['share_of_optimal']:.3f} | {v['share_of_logging']:.3f} |"
        )
    lines += [
        "",
        f"Estimating `{sim['evaluated_policy']}` (true value {sim['evaluated_policy_true_value']:.4f}) "
        f"from {sim['setup']['repetitions']} independent logs of {sim['setup']['eval_rounds']} rounds:",
        "",
        "| estimator | bias (± s.e.) | RMSE | 95% CI coverage | mean CI width |",
        "|---|---|---|---|---|",
    ]
    for name, v in sim["estimators"].items():
        lines.append(
            f"| {name} | {v['bias']:+.4f} (± {v['bias_se']:.4f}) | {v['rmse']:.4f} | {v['coverage']:.2f} | {v['mean_ci_width']:.4f} |"
        )
    lines += [
        "",
        f"Gate (DR lower bound > logging on-policy value) passed on {sim['gate_passes_first_10_logs']} of the first 10 logs.",
        "",
        f"Targets: `{json.dumps(sim['targets'])}`",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/datasets/open-bandit-small"))
    parser.add_argument("--movielens", type=Path, default=Path("../shared/datasets/movielens-100k"))
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--obd-n-boot", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=100)
    parser.add_argument("--eval-rounds", type=int, default=5000)
    parser.add_argument("--sim-n-boot", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=12345)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")

    from recflow.storage import atomic_write_text

    started = time.perf_counter()
    doc: dict[str, Any] = {
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    doc["obd"] = obd_part(args.data, args.obd_n_boot, args.seed)
    print(json.dumps(doc["obd"]["targets"]), flush=True)
    doc["simulator"] = simulator_part(
        args.movielens, args.reps, args.eval_rounds, args.sim_n_boot, args.seed
    )
    doc["wall_seconds"] = round(time.perf_counter() - started, 1)
    atomic_write_text(args.out / "ope.json", json.dumps(doc, indent=2, default=float) + "\n")
    atomic_write_text(args.out / "ope.md", markdown(doc))
    print(markdown(doc))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
