"""bench/scale.py --merge: a size's models may run in separate sessions, on one host only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import scale  # noqa: E402
import scale_results  # noqa: E402

from recflow.ops.machine import describe, summary  # noqa: E402


def _row(seconds: float) -> dict[str, Any]:
    return {"seconds": seconds, "cpu_seconds": seconds, "peak_rss_mb": 100}


def test_carry_keeps_other_models_rows_and_orders_them_after_the_data_stages() -> None:
    earlier = {
        "stages": {
            "ingest": _row(1),
            "ranking_mlp.train": _row(10),
            "ranking_mlp.evaluate": _row(2),
            "sasrec.train": _row(20),
        },
        "run": {"date": "d1", "models": ["ranking_mlp", "sasrec"]},
    }
    size: dict[str, Any] = {"generate": {"seconds": 1.0}, "stages": {}}
    scale._carry(earlier, size, ["sasrec"])
    size["stages"].update({"ingest": _row(3), "sasrec.train": _row(30)})

    # Items, not the dict: dict equality ignores order, and the order is what is checked here.
    assert list(scale_results.in_stage_order(size["stages"]).items()) == [
        ("ingest", _row(3)),  # this run's data stage, not the earlier one
        ("ranking_mlp.train", {**_row(10), "run": "d1"}),  # an untagged row: its file's run
        ("ranking_mlp.evaluate", {**_row(2), "run": "d1"}),
        ("sasrec.train", _row(30)),  # this run's model replaces the earlier rows
    ]
    assert list(size["stages"])[0] != "ingest"  # before ordering, the carried rows came first
    assert size["carried_from"] == [{"date": "d1", "models": ["ranking_mlp"]}]

    doc = {"sizes": {"1M": size}}
    scale_results.finish(doc)
    assert size["end_to_end_seconds"] == 3 + 10 + 2 + 30
    assert "Rows carried from the run (models: ranking_mlp): d1" in scale_results.markdown(
        {**doc, "date": "d2", "machine": "m", "command": "c", "recipe": {}}
    )


def test_carried_rows_keep_the_run_that_measured_them_and_replaced_runs_drop_out() -> None:
    # d1 measured ranking_mlp; d2 ran two_stage and carried d1's rows; then a run of sasrec
    # carries both, and a run of ranking_mlp carries d2's rows only.
    d1 = {"date": "d1", "code": "c1"}
    d2 = {"date": "d2", "code": "c2"}
    earlier = {
        "stages": {
            "ranking_mlp.train": {**_row(10), "run": "d1"},
            "two_stage.train": {**_row(20), "run": "d2"},
        },
        "run": d2,
        "carried_from": [{**d1, "models": ["ranking_mlp"]}],
    }
    kept_both: dict[str, Any] = {"stages": {}}
    scale._carry(earlier, kept_both, ["sasrec"])
    assert kept_both["carried_from"] == [
        {**d2, "models": ["two_stage"]},  # not ranking_mlp: d2 did not measure it
        {**d1, "models": ["ranking_mlp"]},
    ]
    replaced: dict[str, Any] = {"stages": {}}
    scale._carry(earlier, replaced, ["ranking_mlp"])
    assert replaced["carried_from"] == [{**d2, "models": ["two_stage"]}]
    assert replaced["stages"] == {"two_stage.train": {**_row(20), "run": "d2"}}


def test_untagged_rows_of_a_joined_file_are_refused() -> None:
    earlier = {
        "stages": {"ranking_mlp.train": _row(10), "two_stage.train": _row(20)},
        "run": {"date": "d2"},
        "carried_from": [{"date": "d1", "models": ["ranking_mlp"]}],
    }
    with pytest.raises(ValueError, match="ranking_mlp.train, two_stage.train do not name the run"):
        scale._carry(earlier, {"stages": {}}, ["sasrec"])


def test_a_run_line_gives_the_host_costs_measured_at_its_start_when_recorded() -> None:
    costs = {"python_loop_ms": 1.4, "syscall_ns": 250.0, "thread_handoff_us": 31.0}
    size = {"generate": {}, "stages": {"ingest": _row(1)}}
    doc = {"date": "d", "machine": "m", "command": "c", "recipe": {}, "sizes": {"1M": size}}
    scale_results.finish(doc)
    size["run"] = {"date": "d1", "host_costs": costs}
    text = scale_results.markdown(doc)
    assert "a fixed Python loop 1.4 ms, a system call 250.0 ns, a thread hand-off 31.0 us" in text
    size["run"] = {"date": "d1"}  # a run recorded before host costs were
    assert "a system call" not in scale_results.markdown(doc)


def test_goals_add_the_data_stages_to_each_kind_and_judge_the_largest_size() -> None:
    def train(seconds: float, examples_per_s: int) -> dict[str, Any]:
        return {**_row(seconds), "examples_per_s": examples_per_s}

    data = {"ingest": _row(100), "validate": _row(100), "features": _row(100)}
    small = {**data, "ranking_mlp.train": train(10, 1000), "sasrec.train": train(10, 500)}
    refused = "exit 1:   File x.py | raise TrainingError( | recflow.errors.TrainingError: too big"
    large = {
        **data,
        "ranking_mlp.train": train(2000, 900),  # 2,300 s with the rest: within the hour
        "ranking_mlp.export": _row(100),
        "ranking_mlp.evaluate": {**_row(100), "peak_rss_mb": 15_300},  # over 16 GB (15,259 MiB)
        "sasrec.train": train(3100, 300),  # 3,600.5 s: half a second over the hour
        "sasrec.export": _row(100),
        "sasrec.evaluate": _row(100.5),
        "two_stage.train": train(1000, 800),
        "two_stage.export": _row(100),
        "two_stage.evaluate": _row(100),
        "ease.train": {"error": refused},
    }
    doc = {"sizes": {"1M": {"stages": small}, "20M": {"stages": large}}}
    rows = {line.split(" | ")[0].strip("| "): line for line in scale_results.goals(doc)}
    assert rows["ranking_mlp"] == (
        "| ranking_mlp | 2,500.0 | 41.67 | 15300 | MISSED | 90% (goal 80%: met) |"
    )
    assert rows["sasrec"] == "| sasrec | 3,600.5 | 60.01 | 100 | MISSED | 60% (goal 80%: MISSED) |"
    assert rows["two_stage"] == "| two_stage | 1,500.0 | 25.00 | 100 | met |  |"
    assert rows["ease"] == "| ease | | | | not run to the end: too big | |"


def test_seed_of_an_older_file_comes_from_its_command() -> None:
    assert scale._seed_in("python bench/scale.py --sizes 1M --seed 11") == 11
    assert scale._seed_in("python bench/scale.py --sizes 1M") == scale.DEFAULT_SEED


def _merge_into(tmp_path: Path, previous: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    (tmp_path / "scale.json").write_text(json.dumps(previous))
    cmd = [sys.executable, str(BENCH / "scale.py"), "--sizes", "smoke", "--models", "ease",
           "--merge", "--out", str(tmp_path), "--work", str(tmp_path / "work")]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=300)


def test_merge_refuses_another_host(tmp_path: Path) -> None:
    other = {**describe(), "cpu_family": 1, "cpu_model": 2, "cpu_mhz": 1.0}
    done = _merge_into(tmp_path, {"machine": summary(other), "machine_info": other, "sizes": {}})
    assert done.returncode == 2, done.stderr
    assert "ratios between sizes are only meaningful from one host" in done.stderr


def test_merge_refuses_another_recipe(tmp_path: Path) -> None:
    host = describe("tensorflow")
    previous = {"machine": summary(host), "machine_info": host, "recipe": {"epochs": 99},
                "overrides": {"eval_user_sample": 5000}, "sizes": {}}  # fmt: skip
    done = _merge_into(tmp_path, previous)
    assert done.returncode == 2, done.stderr
    assert "recorded with recipe {'epochs': 99}" in done.stderr
    assert not (tmp_path / "work").exists()  # refused before generating or running anything
