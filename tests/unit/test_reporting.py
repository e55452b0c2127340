"""Run report: plots and summary from whatever the run left behind, logged under report/."""

from __future__ import annotations

import json

import numpy as np
import pytest

from recflow.config import PipelineConfig
from recflow.pipeline import report_plots, reporting
from recflow.pipeline.context import RunContext
from recflow.registry.memory import InMemoryRegistry

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _metrics(ndcg: float, hr: float) -> dict[str, float]:
    return {"ndcg@10": ndcg, "hr@10": hr, "mrr@10": ndcg / 2, "coverage@10": 0.3}


def _evaluation(champion: bool = True) -> dict:
    ev = {
        "k": 10,
        "candidate": {"validation": _metrics(0.20, 0.40), "test": _metrics(0.18, 0.38)},
        "popularity": {"validation": _metrics(0.10, 0.25), "test": _metrics(0.09, 0.24)},
        "champion": None,
        "slices": {
            "candidate": {
                "new_users": {**_metrics(0.12, 0.3), "users": 12.0},
                "heavy_users": {**_metrics(0.25, 0.5), "users": 30.0},
            }
        },
    }
    if champion:
        ev["champion"] = {"validation": _metrics(0.19, 0.41), "test": _metrics(0.17, 0.37)}
        ev["champion_version"] = 3
    return ev


@pytest.fixture()
def run(tmp_path):
    cfg = PipelineConfig(work_dir=tmp_path)
    ctx = RunContext.create(cfg, "recsys_training", "manual__1")
    ctx.run_dir.mkdir(parents=True)
    return cfg, ctx


def _write_all(ctx: RunContext, *, passed: bool) -> None:
    ctx.write_json(
        "ingest.json",
        {"source": "synthetic", "rows": 900, "users": 60, "items": 40, "digest": "ab" * 32},
    )
    ctx.write_json(
        "train.json",
        {
            "model": "ranking_mlp",
            "seconds": 3.2,
            "final_loss": 0.41,
            "history": {"loss": [0.7, 0.5, 0.41]},
        },
    )
    ctx.write_json("evaluation.json", _evaluation())
    ctx.write_json(
        "gate.json",
        {
            "passed": passed,
            "reasons": ["ndcg@10 0.2000 >= floor 0.02", "non-inferior to champion v3"],
        },
    )


def test_metric_deltas_and_sentence():
    ev = _evaluation()
    deltas = reporting.metric_deltas(ev)
    assert deltas["ndcg@10"] == pytest.approx(0.01)
    assert deltas["hr@10"] == pytest.approx(-0.01)
    sentence = reporting.deltas_sentence(ev)
    assert "champion v3" in sentence and "ndcg@10 0.2000 (+0.0100)" in sentence
    assert "hr@10 0.4000 (-0.0100)" in sentence
    assert reporting.deltas_sentence(_evaluation(champion=False)).startswith("No champion")


def test_popularity_deciles_rank_items_by_training_events():
    # item 3 is the most popular, then 1; items 0 and 2 have no events.
    train = np.array([3, 3, 3, 1, 1, 4, 5, 6, 7, 8, 9, 3])
    deciles = report_plots.popularity_deciles(train, 20)
    assert deciles[3] == 0 and deciles[1] == 0  # top 10% of 20 items = 2 items
    assert np.bincount(deciles).tolist() == [2] * 10  # equal-sized deciles
    assert deciles[0] >= 4 and deciles[2] >= 4  # never-seen items sit in the tail


def test_long_tail_shares_count_recommendations_per_decile():
    train = np.array([0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    deciles = report_plots.popularity_deciles(train, 10)
    index = {f"i{j}": j for j in range(10)}
    recommended = np.array([["i0", "i9"], ["i0", "unknown"]])
    shares = report_plots.long_tail_shares(recommended, index, deciles, train)
    assert shares["recommended"][0] == pytest.approx(2 / 3, abs=1e-4)
    assert sum(shares["recommended"]) == pytest.approx(1.0, abs=1e-3)
    assert shares["interactions"][0] == pytest.approx(3 / 13, abs=1e-4)


def test_plots_are_png_files(tmp_path):
    ev = _evaluation()
    outputs = [
        report_plots.plot_loss_curves({"loss": [1.0, 0.5]}, tmp_path / "a.png"),
        report_plots.plot_metric_comparison(ev, tmp_path / "b.png"),
        report_plots.plot_slices(ev["slices"], "ndcg@10", tmp_path / "c.png"),
        report_plots.plot_long_tail(
            {"recommended": [0.1] * 10, "interactions": [0.1] * 10}, 10, tmp_path / "d.png"
        ),
    ]
    for out in outputs:
        assert out is not None and out.read_bytes()[:8] == PNG_MAGIC
    assert report_plots.plot_loss_curves({}, tmp_path / "none.png") is None
    assert report_plots.plot_slices({"candidate": {}}, "ndcg@10", tmp_path / "none.png") is None


@pytest.mark.parametrize("passed", [True, False])
def test_report_logged_for_promoted_and_declined_runs(run, tmp_path, passed):
    cfg, ctx = run
    _write_all(ctx, passed=passed)
    registry = InMemoryRegistry(tmp_path / "registry")
    result = reporting.log_run_report(cfg, ctx, registry)
    # No SavedModel in this unit test: the long-tail plot is left out, everything else is there.
    assert result["plots"] == ["loss_curves.png", "metrics_vs_champion.png", "slices.png"]
    artifacts = registry.list_artifacts(result["mlflow_run"], "report")
    assert sorted(artifacts) == sorted(
        f"report/{name}" for name in [*result["plots"], "summary.md"]
    )
    summary = (
        registry.download_artifacts(result["mlflow_run"], "report/summary.md", tmp_path / "dl")
    ).read_text()
    assert ("Gate PASSED" in summary) is passed
    assert ("DECLINED" in summary) is not passed
    assert "| validation | ndcg@10 | 0.2000 | 0.1000 | 0.1900 | +0.0100 |" in summary
    assert "non-inferior to champion v3" in summary
    assert registry.get_run(result["mlflow_run"]).tags["report"] == "report/summary.md"
    assert json.loads((ctx.run_dir / "report.json").read_text())["plots"] == result["plots"]


def test_report_without_evaluation_still_has_a_summary(run, tmp_path):
    """A run that stopped early (no evaluation, no gate) gets a summary and no plots."""
    cfg, ctx = run
    ctx.write_json("ingest.json", {"source": "synthetic", "rows": 10})
    result = reporting.write_report(cfg, ctx, tmp_path / "out")
    assert result["plots"] == []
    text = (tmp_path / "out" / "summary.md").read_text()
    assert "No decision" in text and "No evaluation" in text and "rows: 10" in text
