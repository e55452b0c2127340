"""Training under tf.distribute: the strategy is chosen by config and really splits batches."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from recflow.config import TrainConfig, from_params
from recflow.errors import ConfigError, TrainingError
from recflow.models.ranking_mlp.training import distribution_strategy

HERE = Path(__file__).resolve().parent


def test_unknown_distribution_is_refused_by_config_and_training(monkeypatch):
    monkeypatch.setenv("RECFLOW_TRAIN_DISTRIBUTION", "horovod")
    with pytest.raises(ConfigError, match="horovod"):
        from_params({})
    with pytest.raises(TrainingError, match="horovod"):
        distribution_strategy("horovod")


def test_distribution_defaults_to_one_device_and_follows_env(monkeypatch):
    monkeypatch.delenv("RECFLOW_TRAIN_DISTRIBUTION", raising=False)
    assert TrainConfig().distribution == "default"
    assert distribution_strategy("default").num_replicas_in_sync == 1
    monkeypatch.setenv("RECFLOW_TRAIN_DISTRIBUTION", "mirrored")
    assert from_params({}).train.distribution == "mirrored"


# Two logical CPUs must be declared before TensorFlow initialises: a fresh interpreter.
_TWO_REPLICAS = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2
    )
    sys.path.insert(0, sys.argv[1])
    from test_ranking_mlp import CFG, favourite_hits, planted_features
    from recflow.models.ranking_mlp.training import score_users, train_ranking_mlp

    features, fav, genre = planted_features()
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    lines = []
    trained = train_ranking_mlp(features, CFG, progress=lines.append, strategy=strategy)
    scores = score_users(trained, features, np.arange(features.n_users))
    kernel = trained.model.trainable_variables[0]
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "model_strategy": type(trained.model.distribute_strategy).__name__,
        "variable": type(getattr(kernel, "value", kernel)).__name__,
        "loss": trained.history["loss"],
        "hits": favourite_hits(scores, features, fav, genre),
        "lines": lines,
    }))
    """
)


def test_mirrored_strategy_trains_data_parallel_on_two_replicas(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "-c", _TWO_REPLICAS, str(HERE)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["replicas"] == 2
    assert out["model_strategy"] == "MirroredStrategy"
    # Variables created in the scope are mirrored, one copy per replica.
    assert "Mirrored" in out["variable"], out["variable"]
    assert any("2 replicas" in line for line in out["lines"])
    assert out["loss"][-1] < out["loss"][0]
    # Learned, not just ran: most of each user's top 5 comes from the planted genre
    # (random ranking gives 5 * 9/33 ~ 1.4; see test_ranking_mlp for the single-device bar).
    assert out["hits"] > 2.5, out
