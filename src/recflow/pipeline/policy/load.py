"""Stage 1: read logged bandit feedback into arrays under the run folder (one atomic rename).

Two sources: the Open Bandit Dataset (``<data_path>/<behavior_policy>/<campaign>/``) or a
folder of serving-log files (format v1, ``recflow.bandits.logformat``) such as the ones
``recflow.bandits.client.PolicyClient`` writes next to a served policy.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from recflow.config import PolicyConfig, policy_to_dict
from recflow.errors import DataSourceError
from recflow.jsontypes import JSONObject
from recflow.pipeline.context import RunContext, make_registry, say, tracking_run
from recflow.pipeline.names import FEEDBACK_JSON
from recflow.pipeline.policy.common import feedback_dir

if TYPE_CHECKING:
    from recflow.bandits.feedback import LoggedFeedback
    from recflow.registry import Registry


def _digest(fb: LoggedFeedback) -> str:
    h = hashlib.sha256()
    for arr in (fb.context, fb.action, fb.position, fb.reward, fb.pscore):
        h.update(arr.tobytes())
    h.update("\x1f".join(fb.action_ids).encode())
    return h.hexdigest()


def _from_serving_log(cfg: PolicyConfig) -> tuple[LoggedFeedback, list[str]]:
    from recflow.bandits.logformat import read_log, to_feedback

    folder = Path(cfg.data_path)
    files = sorted(p for p in folder.glob(cfg.log_glob) if p.is_file()) if folder.is_dir() else []
    if not files:
        raise DataSourceError(
            f"serving log: expected files matching {cfg.log_glob!r} in the folder {folder}, "
            "found none; point data_path at the folder PolicyClient writes to"
        )
    frame = read_log(files, missing_reward=cfg.missing_reward if cfg.fill_missing_rewards else None)
    if frame.empty:
        raise DataSourceError(
            f"serving log: expected impression records in {len(files)} file(s) under {folder}, "
            "found none (only rewards, or empty files)"
        )
    logged = sorted({str(a) for a in frame["action_id"]})
    catalogue = list(cfg.catalogue) or logged
    unknown = sorted(set(logged) - set(catalogue))
    if unknown:
        raise DataSourceError(
            f"serving log: expected actions from the configured catalogue of {len(catalogue)}, "
            f"found {len(unknown)} others, e.g. {unknown[:10]}; fix the catalogue param or the "
            "logs (were they written by another policy's catalogue?)"
        )
    len_list = int(frame["position"].max()) + 1
    return to_feedback(frame, catalogue, len_list), [str(p) for p in files]


def run(cfg: PolicyConfig, ctx: RunContext, registry: Registry | None = None) -> JSONObject:
    from recflow.bandits.feedback import save_feedback
    from recflow.bandits.validate import feedback_frame

    registry = registry or make_registry(cfg)
    mlflow_run = tracking_run(cfg, ctx, registry)
    registry.log_params(mlflow_run, policy_to_dict(cfg))
    if cfg.source == "obd":
        from recflow.bandits.obd import campaign_file, load_obd

        root = Path(cfg.data_path)
        source = f"obd:{root}/{cfg.obd_behavior_policy}/{cfg.obd_campaign}"
        say(f"load_feedback: reading the Open Bandit Dataset ({source})")
        fb = load_obd(root, cfg.obd_behavior_policy, cfg.obd_campaign)
        files = [str(campaign_file(root, cfg.obd_behavior_policy, cfg.obd_campaign))]
    else:
        source = f"serving_log:{cfg.data_path}"
        say(f"load_feedback: reading serving logs {cfg.data_path}/{cfg.log_glob}")
        fb, files = _from_serving_log(cfg)
    digest = _digest(fb)
    versions = dict(Counter(fb.policy_version)) if fb.policy_version else {}
    summary: JSONObject = {
        "source": source,
        "files": files,
        "digest": digest,
        "rounds": fb.n_rounds,
        "actions": fb.n_actions,
        "len_list": fb.len_list,
        "dim_context": fb.dim_context,
        "policy_versions": versions,
        "mean_reward": float(fb.reward[fb.reward == fb.reward].mean()) if fb.n_rounds else None,
    }
    save_feedback(fb, feedback_dir(ctx), meta=summary)
    registry.set_tags(mlflow_run, {"dataset.digest": digest, "dataset.source": source})
    registry.log_dataset(
        mlflow_run,
        feedback_frame(fb),
        name="logged_feedback",
        digest=digest[:32],
        source=source,
        context="training",
    )
    registry.log_dict(mlflow_run, summary, "feedback/summary.json")
    ctx.write_json(FEEDBACK_JSON, summary)
    by_version = ", ".join(f"v{k}: {v}" for k, v in sorted(versions.items())) or "not recorded"
    say(
        f"load_feedback: {fb.n_rounds} logged slots, {fb.n_actions} actions, "
        f"{fb.len_list} position(s), context dim {fb.dim_context}; by policy version: {by_version}"
    )
    return {k: v for k, v in summary.items() if k != "files"}
