"""Landing pipeline: new interaction batches -> PII check, pseudonyms, validation -> history.

This file only wires tasks; the logic lives in ``recflow.pipeline.landing``.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, dag, get_current_context, task

from recflow.pipeline.landing import HISTORY_ASSET_URI, landing_params
from recflow.pipeline.retries import fail_fast

HISTORY = Asset(HISTORY_ASSET_URI)

DOC_MD = """
# Land new interaction batches

| step | what it does |
|---|---|
| `land` | reads each batch file from the landing folder (or `data_path`), refuses personal-data columns, pseudonymises user ids, validates it and appends it to the append-only history (`history/batch=<digest>/`). Re-landing a batch changes nothing. |
| `publish_history` | runs only when a batch was new: updates the asset `recflow://history/interactions`, which schedules `recsys_training` on the whole history. |
"""


@dag(
    dag_id="recsys_ingest",
    schedule=None,
    start_date=pendulum.datetime(2024, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params=landing_params(),
    doc_md=DOC_MD,
    tags=["recflow", "ingest"],
)
def recsys_ingest():
    @task.short_circuit
    @fail_fast
    def land() -> bool:
        from recflow.pipeline.context import from_airflow
        from recflow.pipeline.landing import land as stage

        return bool(stage(*from_airflow(get_current_context()))["new"])

    @task(outlets=[HISTORY])
    @fail_fast
    def publish_history() -> None:
        from recflow.pipeline.context import from_airflow

        context = get_current_context()
        _, ctx = from_airflow(context)
        context["outlet_events"][HISTORY].extra = {
            "new_batches": ctx.read_json("landing.json")["new"]
        }

    land() >> publish_history()


recsys_ingest()
