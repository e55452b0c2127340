"""What a person does, in a real browser: sign in to Airflow, fill the training DAG's trigger
form with non-default values, trigger it, watch it succeed, then find the new model version
with alias ``champion`` in the MLflow UI. Screenshots go to test-artifacts/ui/.

One test, a few minutes: Airflow standalone (~40 s to start) plus one small DAG run.
"""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import quote

import pytest

from recflow.config import PipelineConfig
from recflow.dev.launch import (
    airflow_login,
    airflow_standalone_env,
    mlflow_command,
    prepare_airflow_db,
)
from recflow.net import free_port
from recflow.serving.server_process import ModelServerProcess

pytestmark = pytest.mark.slow

DAG_ID = "recsys_training"
# Non-default values typed into the form; small data so the run takes about two minutes.
FORM_VALUES = {
    "epochs": "2",
    "synthetic_users": "300",
    "synthetic_items": "200",
    "min_interactions": "300",
    # The first run has no champion; keep the floors from declining a two-epoch model.
    "min_lift_over_popularity": "0",
}


def _chromium_or_skip() -> None:
    from ui_helpers import CHROMIUM

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: install it with `apt-get install -y chromium`")
    pytest.importorskip("playwright.sync_api", reason="pip install playwright (dev extra)")


@pytest.fixture()
def services(tmp_path: Path):
    import ui_helpers as ui

    work = tmp_path / "work"
    stack: list = []
    server = ModelServerProcess(
        work / "serving" / "models.config",
        port=free_port(),
        log_file=work / "logs" / "server.log",
        poll_seconds=0.5,
    ).start()
    stack.append(server)
    try:
        port = free_port()
        env = airflow_standalone_env(work, port=port)
        user, password = airflow_login(work / "airflow")
        prepare_airflow_db(env)
        airflow = ui.start_service(
            "airflow",
            ui.python_module("airflow", "standalone"),
            env,
            f"http://localhost:{port}",
            "/api/v2/version",
            work / "logs" / "airflow.log",
            timeout=240,
        )
        stack.append(airflow)
        yield {
            "work": work,
            "server": server,
            "airflow": airflow,
            "user": user,
            "password": password,
        }
    finally:
        for service in reversed(stack):
            service.stop()


def test_trigger_from_the_form_then_see_the_champion_in_mlflow(services):
    _chromium_or_skip()
    import ui_helpers as ui
    from playwright.sync_api import expect, sync_playwright

    airflow, work = services["airflow"], services["work"]
    ui.SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    token = ui.airflow_token(airflow.url, services["user"], services["password"])
    ui.wait_for(
        lambda: ui.airflow_get(airflow.url, token, f"dags/{DAG_ID}"),
        120,
        "the DAG processor to parse recsys_training",
    )
    values = {**FORM_VALUES, "serving_port": str(services["server"].port)}

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(ui.CHROMIUM), args=ui.CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(30_000)
        expect.set_options(timeout=30_000)  # 2 shared CPUs: the UI can take seconds to react
        try:
            # --- sign in (simple auth manager) and open the DAG
            page.goto(f"{airflow.url}/dags/{DAG_ID}")
            page.locator("input[name=username]").fill(services["user"])
            page.locator("input[name=password]").fill(services["password"])
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"**/dags/{DAG_ID}**")
            # A single-page app: wait for its data and translations before looking at it.
            page.wait_for_load_state("networkidle")
            expect(page.get_by_role("button", name="Trigger").first).to_be_visible()
            page.screenshot(path=ui.SCREENSHOTS / "01-dag.png")

            # --- the trigger form: sections, titles, descriptions, bounds
            page.get_by_role("button", name="Trigger").first.click()
            dialog = page.get_by_role("dialog")
            sections = {
                "Data": ("synthetic_users", "synthetic_items"),
                "Validation": ("min_interactions",),
                "Model and training": ("epochs",),
                "Evaluation and gate": ("min_lift_over_popularity",),
                "Registry and serving": ("serving_port",),
            }
            for section, names in sections.items():
                first = dialog.locator(f"input[name=element_{names[0]}]")
                if not first.is_visible():  # sections are collapsed accordions
                    dialog.get_by_text(section, exact=True).click()
                    expect(first).to_be_visible()
                for name in names:
                    field = dialog.locator(f"input[name=element_{name}]")
                    field.fill(values[name])
                    field.blur()
                    expect(field).to_have_value(values[name])
                if section == "Model and training":
                    # Title, description and bounds of a field, as a person sees them; the
                    # accordion shows one section at a time, so check while it is open.
                    epochs = dialog.locator("input[name=element_epochs]")
                    expect(epochs).to_have_attribute("aria-valuemin", "1")
                    expect(epochs).to_have_attribute("aria-valuemax", "500")
                    expect(dialog.locator("label", has_text="Epochs").first).to_be_visible()
                    expect(
                        dialog.get_by_text("Passes over the training interactions").first
                    ).to_be_visible()
                    page.screenshot(path=ui.SCREENSHOTS / "02-trigger-form.png")
            dialog.get_by_role("button", name="Trigger").click()
            expect(dialog).to_be_hidden()

            # --- the run: the form's values arrive as its conf; wait for success
            def new_run():
                runs = ui.airflow_get(airflow.url, token, f"dags/{DAG_ID}/dagRuns")["dag_runs"]
                return runs[0] if runs else None

            run = ui.wait_for(new_run, 60, "the triggered run to appear")
            run_id = run["dag_run_id"]
            assert int(run["conf"]["epochs"]) == 2
            assert int(run["conf"]["serving_port"]) == services["server"].port

            def finished():
                quoted = quote(run_id, safe="")
                state = ui.airflow_get(airflow.url, token, f"dags/{DAG_ID}/dagRuns/{quoted}")[
                    "state"
                ]
                return state if state in ("success", "failed") else None

            started = time.monotonic()
            state = ui.wait_for(finished, 600, f"run {run_id} to finish", interval=5)
            states = ui.task_states(airflow.url, token, DAG_ID, run_id)
            page.goto(f"{airflow.url}/dags/{DAG_ID}/runs/{quote(run_id, safe='')}")
            page.wait_for_load_state("networkidle")
            expect(page.get_by_text("report_run").first).to_be_visible(timeout=60_000)
            page.screenshot(path=ui.SCREENSHOTS / "03-run.png", full_page=True)
            failed = [t for t, s in states.items() if s not in ("success", "skipped")]
            assert state == "success", (
                f"run {run_id} {state} after {time.monotonic() - started:.0f} s; tasks {states}\n"
                + "\n".join(ui.task_log(airflow.url, token, DAG_ID, run_id, t) for t in failed)
            )
            assert states["promote_stable"] == "success" and states["report_run"] == "success"

            # --- MLflow UI on the same store: the new version, alias champion, and the plots
            cfg = PipelineConfig(work_dir=work)
            port = free_port()
            mlflow = ui.start_service(
                "mlflow",
                mlflow_command(cfg, port=port),
                ui.clean_env(),
                f"http://127.0.0.1:{port}",
                "/health",
                work / "logs" / "mlflow.log",
                timeout=120,
            )
            try:
                model = cfg.registry.model_name
                page.goto(f"{mlflow.url}/#/models/{model}")
                expect(page.get_by_text("Version 1").first).to_be_visible(timeout=60_000)
                expect(page.get_by_text("champion").first).to_be_visible()
                page.screenshot(path=ui.SCREENSHOTS / "04-mlflow-model.png", full_page=True)

                from mlflow import MlflowClient

                client = MlflowClient(tracking_uri=cfg.tracking_uri)
                mv = client.get_model_version_by_alias(model, "champion")
                assert int(mv.version) == 1
                assert "Gate passed" in (mv.description or "")
                report = {a.path for a in client.list_artifacts(mv.run_id, "report")}
                assert {
                    "report/summary.md",
                    "report/loss_curves.png",
                    "report/metrics_vs_champion.png",
                    "report/long_tail.png",
                } <= report
                page.goto(f"{mlflow.url}/#/models/{model}/versions/1")
                expect(page.get_by_text("champion").first).to_be_visible(timeout=60_000)
                page.screenshot(path=ui.SCREENSHOTS / "05-mlflow-version.png", full_page=True)
            finally:
                mlflow.stop()
        finally:
            browser.close()
