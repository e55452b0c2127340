"""Infra validation's pieces that need no server: comparison, server choice, early refusals."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from recflow import infra_validation as iv
from recflow.errors import ContractError, ServerUnavailable


def answers(scores: list[float], items: list[str]) -> dict[str, np.ndarray]:
    return {"scores": np.array([scores], np.float32), "item_ids": np.array([items], object)}


def test_identical_answers_have_no_problems_including_padding() -> None:
    a = answers([0.9, float("-inf")], ["i1", ""])
    assert iv.compare_outputs(a, answers([0.9, float("-inf")], ["i1", ""]), atol=1e-5, rtol=0) == []


def test_differences_are_named_per_output() -> None:
    # Same comparison as the canary check (recflow.serving.compare): items compared by id.
    problems = iv.compare_outputs(
        answers([0.9, 0.5], ["i1", "i2"]), answers([0.9, 0.4], ["i2", "i1"]), atol=1e-5, rtol=0
    )
    assert problems == [
        "output 'scores', row 0: item 'i1': score 0.9 served, 0.4 in the reference (tolerance 1e-05); "
        "item 'i2': score 0.5 served, 0.9 in the reference (tolerance 1e-05)"
    ]
    missing = iv.compare_outputs({"scores": np.zeros((1, 2))}, answers([0, 0], ["a", "b"]),
                                 atol=1, rtol=0)  # fmt: skip
    assert missing == ["output 'item_ids' missing from the served answer"]
    # a wider reference is top-(K+m): fine
    assert iv.compare_outputs(answers([2.0], ["b"]), answers([2.0, 1.0], ["b", "a"]), atol=1e-5,
                              rtol=0) == []  # fmt: skip
    wider = iv.compare_outputs(answers([1.0, 2.0], ["a", "b"]), answers([1.0], ["a"]), atol=1,
                               rtol=0)  # fmt: skip
    assert wider[0].startswith("output 'item_ids': shape (1, 2) served, (1, 1) in the reference")


def test_server_choice(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(iv.shutil, "which", lambda name: None)
    name, argv = iv.server_command(None, 9000, tmp_path / "m.config")
    assert name == "recflow-model-server" and argv[:3] == [sys.executable, "-m",
                                                           "recflow.serving.server"]  # fmt: skip
    assert "--port=9000" in argv and f"--model_config_file={tmp_path / 'm.config'}" in argv
    with pytest.raises(ServerUnavailable, match="expected tensorflow_model_server on PATH"):
        iv.server_command("tensorflow_model_server", 9000, tmp_path / "m.config")
    monkeypatch.setattr(iv.shutil, "which", lambda name: "/usr/bin/tensorflow_model_server")
    name, argv = iv.server_command(None, 9000, tmp_path / "m.config")
    assert name == "tensorflow_model_server" and argv[0] == "/usr/bin/tensorflow_model_server"
    name, _ = iv.server_command("recflow-model-server", 9000, tmp_path / "m.config")
    assert name == "recflow-model-server"


def test_refused_before_any_server_starts(tmp_path: Path) -> None:
    result = iv.validate_model(tmp_path / "nothing")
    assert not result.passed and "found no saved_model.pb" in result.reason
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "saved_model.pb").write_bytes(b"x")
    result = iv.validate_model(tmp_path / "model")
    assert not result.passed and "expected warmup requests" in result.reason
    assert result.attempts == 0 and result.server == ""
    with pytest.raises(ContractError, match="export the model with recflow.models.export_model"):
        iv.read_warmup_requests(tmp_path / "model")
