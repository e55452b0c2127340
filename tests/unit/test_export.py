"""Exported SavedModels meet the serving contract and answer like the in-process model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from recflow import contract
from recflow.config import TrainConfig
from recflow.errors import ContractError
from recflow.models import (
    TrainedModel,
    check_contract,
    export_model,
    load_recommender,
    load_scorer,
    score_users,
    train_ranking_mlp,
)
from recflow.types import Features

K = 5
N_USERS, N_ITEMS, N_GENRES = 30, 24, 3


def small_features(seed: int = 0) -> Features:
    """Users mostly pick items of one genre; user 0 has seen all but 2 items."""
    rng = np.random.default_rng(seed)
    item_genre = np.arange(N_ITEMS) % N_GENRES
    users: list[int] = []
    items: list[int] = []
    for u in range(N_USERS):
        own = np.flatnonzero(item_genre == u % N_GENRES)
        picks = rng.choice(own, 5, replace=False) if u else np.arange(2, N_ITEMS)
        users += [u] * picks.size
        items += picks.tolist()
    tu, ti = np.array(users, np.int32), np.array(items, np.int32)
    genres = np.eye(N_GENRES, dtype=np.float32)[item_genre]
    pref = np.zeros((N_USERS, N_GENRES), np.float32)
    np.add.at(pref, tu, genres[ti])
    pref /= pref.sum(axis=1, keepdims=True)
    activity = np.log1p(np.bincount(tu, minlength=N_USERS)).astype(np.float32)
    popularity = np.log1p(np.bincount(ti, minlength=N_ITEMS)).astype(np.float32)
    return Features(
        user_ids=np.array([f"user-{i}" for i in range(N_USERS)]),
        item_ids=np.array([f"item-{i}" for i in range(N_ITEMS)]),
        item_titles=np.array([f"Title {i}" for i in range(N_ITEMS)]),
        genres=tuple(f"g{g}" for g in range(N_GENRES)),
        train_user_idx=tu,
        train_item_idx=ti,
        user_genre_pref=pref,
        user_activity=activity / activity.max(),
        item_popularity=popularity / popularity.max(),
        item_genres=genres,
    )


def seen_sets(f: Features) -> list[set[str]]:
    out: list[set[str]] = [set() for _ in range(f.n_users)]
    for u, i in zip(f.train_user_idx, f.train_item_idx, strict=True):
        out[u].add(str(f.item_ids[i]))
    return out


@pytest.fixture(scope="module")
def features() -> Features:
    return small_features()


@pytest.fixture(scope="module")
def trained(features):
    cfg = TrainConfig(epochs=2, batch_size=64, embedding_dim=8, learning_rate=0.01, seed=3)
    return train_ranking_mlp(features, cfg, progress=lambda _: None)


@pytest.fixture(scope="module")
def mlp_dir(tmp_path_factory, trained, features) -> Path:
    import keras

    # Like the pipeline: train stage saves a .keras file, export stage reloads it.
    folder = tmp_path_factory.mktemp("export")
    trained.model.save(folder / "model.keras")
    reloaded = TrainedModel(model=keras.models.load_model(folder / "model.keras"))
    return export_model(
        reloaded, features, folder / "1", top_k=K, warmup_user_ids=["user-1", "user-2", "nobody"]
    )


@pytest.fixture(scope="module")
def pop_dir(tmp_path_factory, features) -> Path:
    out = tmp_path_factory.mktemp("export") / "pop"
    return export_model(None, features, out, top_k=K, warmup_user_ids=[], model_kind="popularity")


def test_mlp_export_meets_contract(mlp_dir, features):
    summary = check_contract(mlp_dir, top_k=K, sample_user_ids=["user-1", "user-5"])
    assert summary["k"] == K
    assert summary["n_items"] == N_ITEMS
    assert summary["contract_version"] == contract.CONTRACT_VERSION
    assert summary["warmup_records"] == 1
    assert set(summary["outputs"]) == set(contract.required_outputs(contract.CONTRACT_VERSION))
    assert not list(mlp_dir.parent.glob(".1.tmp-*")), "scratch folder left behind"


def test_served_top_k_equals_in_process_scores(mlp_dir, trained, features):
    users = np.arange(1, N_USERS)
    expected = score_users(trained, features, users)
    for row, u in enumerate(users):
        expected[row, features.train_item_idx[features.train_user_idx == u]] = -np.inf
    top = np.argsort(-expected, axis=1, kind="stable")[:, :K]
    served = load_recommender(mlp_dir)(features.user_ids[users])
    assert served["item_ids"].shape == (users.size, K)
    for row in range(users.size):
        assert set(served["item_ids"][row]) == set(features.item_ids[top[row]])
    np.testing.assert_allclose(
        served["scores"], np.take_along_axis(expected, top, axis=1), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_array_equal(
        served["titles"][0], [t.replace("item-", "Title ") for t in served["item_ids"][0]]
    )


@pytest.mark.parametrize("which", ["mlp", "pop"])
def test_training_items_never_recommended(which, mlp_dir, pop_dir, features):
    served = load_recommender(mlp_dir if which == "mlp" else pop_dir)(features.user_ids)
    seen = seen_sets(features)
    for u in range(N_USERS):
        assert not seen[u] & set(served["item_ids"][u]), u
    # user-0 has only 2 unseen items: the rest of the K slots are padding, not seen items.
    assert sorted(served["item_ids"][0][:2]) == ["item-0", "item-1"]
    assert list(served["item_ids"][0][2:]) == [""] * (K - 2)
    assert np.isneginf(served["scores"][0][2:]).all()


@pytest.mark.parametrize("which", ["mlp", "pop"])
def test_unknown_user_gets_popularity(which, mlp_dir, pop_dir, features):
    served = load_recommender(mlp_dir if which == "mlp" else pop_dir)(np.array(["stranger"]))
    expected = features.item_ids[np.argsort(-features.item_popularity, kind="stable")[:K]]
    np.testing.assert_array_equal(served["item_ids"][0], expected)


def test_scorer_gives_raw_scores_over_catalogue(mlp_dir, trained, features):
    scores, catalogue = load_scorer(mlp_dir)(np.array(["user-3", "user-0", "stranger"]))
    np.testing.assert_array_equal(catalogue, features.item_ids)
    assert scores.shape == (3, N_ITEMS) and scores.dtype == np.float32
    np.testing.assert_allclose(
        scores[:2], score_users(trained, features, np.array([3, 0])), rtol=1e-5
    )
    np.testing.assert_allclose(scores[2], features.item_popularity)


def test_popularity_export_meets_contract(pop_dir, features):
    summary = check_contract(pop_dir, sample_user_ids=["user-4"])
    assert summary["k"] == K
    scores, _ = load_scorer(pop_dir)(np.array(["user-4", "stranger"]))
    np.testing.assert_allclose(scores, np.tile(features.item_popularity, (2, 1)))


def test_warmup_requests_are_predict_logs(mlp_dir):
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    records = list(tf.data.TFRecordDataset(str(mlp_dir / contract.WARMUP_RELATIVE_PATH)))
    assert len(records) == 1
    log = prediction_log_pb2.PredictionLog.FromString(records[0].numpy())
    request = log.predict_log.request
    assert request.model_spec.signature_name == contract.SIGNATURE_NAME
    ids = tf.make_ndarray(request.inputs[contract.INPUT_USER_ID]).tolist()
    assert ids == [b"user-1", b"user-2", b"nobody"]


def test_broken_savedmodel_is_rejected(tmp_path):
    import tensorflow as tf

    class Broken(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="user_id")])
        def serve(self, user_id):
            n = tf.shape(user_id)[0]
            return {
                "items": tf.fill([n, 3], "x"),  # wrong name: contract says item_ids
                "scores": tf.zeros([n, 3], tf.int32),  # wrong dtype
                "titles": tf.fill([n, 3], "t"),
            }

    module = Broken()
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.serve})
    with pytest.raises(ContractError) as err:
        check_contract(tmp_path, top_k=3)
    text = str(err.value)
    assert "output 'item_ids': expected it" in text
    assert "output 'scores': expected dtype float32, found int32" in text
    assert "attribute 'score_all'" in text
    assert "warmup: expected assets.extra/tf_serving_warmup_requests" in text


def test_export_tf_serving_cannot_load_is_rejected(trained, features, tmp_path, monkeypatch):
    """Tracking the Keras variables themselves (not their tf.Variables) gives a SavedModel that
    tf.saved_model.load answers but TF Serving's loader cannot run: the contract refuses it."""
    import recflow.models.score_module as score_module

    monkeypatch.setattr(score_module, "graph_variables", list)
    out = export_model(trained, features, tmp_path / "1", top_k=K, warmup_user_ids=["user-1"])
    with pytest.raises(
        ContractError, match="TF Serving's loader.*(Could not find variable|does not exist)"
    ):
        check_contract(out, top_k=K, sample_user_ids=["user-1"])


def test_wrong_k_and_missing_model_are_rejected(mlp_dir, tmp_path):
    with pytest.raises(ContractError, match=r"expected shape \[-1, 7\], found \[-1, 5\]"):
        check_contract(mlp_dir, top_k=7)
    with pytest.raises(ContractError, match="saved_model.pb"):
        check_contract(tmp_path)


def test_the_contract_probe_runs_without_recflow(mlp_dir):
    """The probe check_contract starts imports no recflow module (TF Serving has none): run it
    as check_contract does, then list what the process had loaded."""
    import json
    import subprocess
    import sys

    from recflow.models.contract_check import _RESULT_PREFIX, probe_args, probe_command

    command = probe_command(probe_args(mlp_dir, top_k=K))
    assert command[:2] == [sys.executable, "-P"]
    wrapper = (
        "import runpy, sys\n"
        "sys.argv = sys.argv[1:]\n"
        "try:\n"
        "    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('LOADED', sorted(m for m in sys.modules if m.split('.')[0] == 'recflow'))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-P", "-c", wrapper, *command[2:]],
        capture_output=True,
        text=True,
        check=False,
    )
    lines = proc.stdout.splitlines()
    result = json.loads(
        next(ln for ln in lines if ln.startswith(_RESULT_PREFIX))[len(_RESULT_PREFIX) :]
    )
    assert result["problems"] == [] and result["summary"]["k"] == K
    assert "LOADED []" in lines
