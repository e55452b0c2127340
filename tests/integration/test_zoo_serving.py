"""Every zoo kind: fit (tiny) -> export -> LocalModelServer -> Predict over gRPC.

One server serves all kinds at once (one model name per kind), so the test pays the server
start once; the models are trained for one epoch on a small synthetic catalogue, because
what is checked here is the serving contract end to end, not quality.
"""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

from recflow import contract
from recflow.config import SyntheticConfig, TrainConfig, train_config
from recflow.data import generate_synthetic
from recflow.features import build_features, split_leave_last_out
from recflow.models import load_recommender
from recflow.models.zoo import get_kind, kind_names

TOP_K = 5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _fast_config(name: str) -> TrainConfig:
    fast = {"sasrec_epochs": 1, "multvae_epochs": 1, "two_stage_tower_epochs": 1}
    # two_stage: fewer candidates than the 40-item catalogue, so retrieval cuts over gRPC too.
    return train_config(
        model=name, epochs=1, embedding_dim=8, batch_size=256, **fast, two_stage_candidates=12
    )


def test_every_kind_serves_predict_through_the_local_server(tmp_path: Path) -> None:
    from recflow.serving.client import ServingClient
    from recflow.serving.model_config import ModelEntry, to_proto
    from recflow.serving.server import LocalModelServer

    ds = generate_synthetic(SyntheticConfig(n_users=60, n_items=40, seed=2))
    split = split_leave_last_out(ds.interactions)
    features = build_features(split.train, ds.items)
    users = [str(features.user_ids[0]), str(features.user_ids[7]), "unknown-user"]
    entries, expected = [], {}
    for name in kind_names():
        kind = get_kind(name)
        kind.fit(features, split, _fast_config(name), lambda _: None, tmp_path / name / "train")
        base = tmp_path / name / "base"
        kind.export(tmp_path / name / "train", features, base / "1", TOP_K, users[:2])
        expected[name] = load_recommender(base / "1")(np.array(users))
        entries.append(ModelEntry(name=name, base_path=str(base), versions=(1,)))

    port = _free_port()
    with LocalModelServer(to_proto(entries), port=port, file_system_poll_wait_seconds=0):
        client = ServingClient(f"127.0.0.1:{port}", timeout=30)
        for name in kind_names():
            client.wait_until_available(name, 1, timeout=120)
            out = client.predict(name, {contract.INPUT_USER_ID: np.array(users, dtype=object)})
            ids = np.array([[v.decode() for v in row] for row in out[contract.OUTPUT_ITEM_IDS]])
            assert ids.shape == (3, TOP_K), name
            np.testing.assert_array_equal(ids, expected[name][contract.OUTPUT_ITEM_IDS])
            scores = np.asarray(out[contract.OUTPUT_SCORES])
            assert np.all(scores[:, :-1] >= scores[:, 1:]), name  # padding is -inf
            seen = set(features.item_ids[features.train_item_idx[features.train_user_idx == 0]])
            assert not seen & set(ids[0]), f"{name} recommended a seen item"
            assert set(ids[2]) <= set(features.item_ids), name


@pytest.mark.parametrize("name", ["ease", "neumf", "multvae", "blend", "two_stage"])
def test_new_kinds_are_registered(name: str) -> None:
    assert name in kind_names()
