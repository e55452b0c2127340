"""Policy pipeline: logged bandit feedback -> validated -> policies -> off-policy gate -> serving.

This file only wires tasks; each step's logic lives in ``recflow.pipeline.policy.<stage>``.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, get_current_context, task

from recflow.pipeline.params import policy_params
from recflow.pipeline.pools import SERVING_POOL
from recflow.pipeline.retries import fail_fast, retry_args

DOC_MD = """
# Contextual-bandit policy pipeline

Learns a recommendation *policy* from logged bandit feedback (what a policy showed, with which
probability, and what the user did), estimates its value off-policy, and serves it over gRPC
only when it credibly beats the policy that produced the logs. Clients of the served policy
(`recflow.bandits.client.PolicyClient`) write the serving log this DAG reads next time: the
loop is closed (format: `docs/serving_log.md`).

| step | what it does |
|---|---|
| `load_feedback` | reads the Open Bandit Dataset (behaviour policy + campaign) or a folder of serving-log files (JSON-lines v1, late rewards joined by request id and position) into arrays under the run folder |
| `validate_feedback` | Great Expectations: propensities in (0, 1], actions in the catalogue, positions in range, rewards present (and 0/1), finite contexts. **A failure stops the run** with the failed expectations and sample rows |
| `learn_policies` | splits the logs by request: `1 - holdout_fraction` of requests to learn from, the rest held out; on the learning part, a reward model; the neural softmax policy (Keras, doubly robust objective), LinUCB and linear Thompson sampling; the candidate is exported as a SavedModel (`context`, `epsilon` -> `action_ids`, `action_scores`, `action_probs`) |
| `estimate_values` | IPS, SNIPS and DR with bootstrap intervals for every policy, and the logging policy's own value, on the held-out requests only (an estimate on the rounds a policy learned from is optimistic); all logged to MLflow as metrics |
| `gate_policy` | the candidate's held-out lower bound must beat the logging value x (1 + margin); fewer held-out slots than `min_rounds` declines. **A decline is recorded (log, MLflow tags and `gate/decision.json`), then the task fails (`AirflowFailException`, never retried): the steps below do not run, the champion policy keeps serving, and the run is marked failed** |
| `register_policy` | MLflow model version with alias `challenger` |
| `deploy_canary` | copies the version into the model base path and loads it under TF Serving label `canary` |
| `verify_canary` | gRPC Predict through `canary` with sample contexts and epsilons must equal the exported model's answers |
| `promote_stable` | label `stable` and alias `champion` move to it; the old champion becomes `previous` |
"""


def _stage():
    from recflow.config import from_policy_params
    from recflow.pipeline.context import from_airflow

    return from_airflow(get_current_context(), from_policy_params)


@dag(
    dag_id="recsys_policy",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    # transient faults (MLflow, model server) retried with backoff; verdicts fail at once
    default_args=retry_args(),
    params=policy_params(),
    doc_md=DOC_MD,
    tags=["recflow", "bandits", "policy"],
)
def recsys_policy():
    @task
    @fail_fast
    def load_feedback() -> dict:
        from recflow.pipeline.policy import load as stage

        return stage.run(*_stage())

    @task
    @fail_fast
    def validate_feedback(_: dict) -> dict:
        from recflow.pipeline.policy import validate as stage

        return stage.run(*_stage())

    @task
    @fail_fast
    def learn_policies(_: dict) -> dict:
        from recflow.pipeline.policy import learn as stage

        return stage.run(*_stage())

    @task
    @fail_fast
    def estimate_values(_: dict) -> dict:
        from recflow.pipeline.policy import estimate as stage

        return stage.run(*_stage())

    # A decline is recorded, then fails the task (never retried); the steps below do not run.
    @task
    @fail_fast
    def gate_policy(_: dict) -> dict:
        from recflow.pipeline.policy import gate as stage
        from recflow.pipeline.stages import raise_if_declined

        return raise_if_declined(stage.run(*_stage()), step="gate_policy")

    @task
    @fail_fast
    def register_policy() -> dict:
        from recflow.pipeline.policy import register as stage

        return stage.run(*_stage())

    @task(pool=SERVING_POOL)
    @fail_fast
    def deploy_canary(_: dict) -> dict:
        from recflow.pipeline.policy import deploy

        return deploy.deploy_canary(*_stage())

    @task(pool=SERVING_POOL)
    @fail_fast
    def verify_canary(_: dict) -> dict:
        from recflow.pipeline.policy import deploy

        return deploy.verify_canary(*_stage())

    @task(pool=SERVING_POOL)
    @fail_fast
    def promote_stable(_: dict) -> dict:
        from recflow.pipeline.policy import deploy

        return deploy.promote(*_stage())

    estimated = estimate_values(learn_policies(validate_feedback(load_feedback())))
    registered = register_policy()
    gate_policy(estimated) >> registered
    promote_stable(verify_canary(deploy_canary(registered)))


recsys_policy()
