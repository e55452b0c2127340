"""The local server's choice of TensorFlow's oneDNN custom ops (recflow.serving.server.onednn)."""

from __future__ import annotations

import os

import pytest

from recflow.errors import ConfigError
from recflow.serving.server import onednn

pytestmark = pytest.mark.unit


def test_auto_turns_them_off_unless_the_environment_chose() -> None:
    env: dict[str, str] = {}
    onednn.choose("auto", env)
    assert env == {onednn.ENV: "0"}
    chosen = {onednn.ENV: "1"}
    onednn.choose("auto", chosen)
    assert chosen == {onednn.ENV: "1"}


def test_on_and_off_set_the_variable_and_a_bad_choice_is_refused() -> None:
    for choice, value in (("on", "1"), ("off", "0")):
        env = {onednn.ENV: "x"}
        onednn.choose(choice, env)
        assert env[onednn.ENV] == value
    with pytest.raises(ConfigError, match="--onednn: expected one of"):
        onednn.choose("fast", {})


def test_an_explicit_choice_after_tensorflow_is_imported_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import tensorflow  # noqa: F401  (the situation: TensorFlow already read the variable)

    monkeypatch.setenv(onednn.ENV, "1")
    with pytest.raises(ConfigError, match="set TF_ENABLE_ONEDNN_OPTS=0 in the environment"):
        onednn.choose("off")
    onednn.choose("on")  # already what TensorFlow saw
    monkeypatch.delenv(onednn.ENV)
    onednn.choose("auto")  # too late to choose: runs on as it is, the log says which
    assert onednn.ENV not in os.environ
