"""The ranking network learns planted genre tastes; negative sampling and training behave."""

from __future__ import annotations

import numpy as np
import pytest

from recflow.config import TrainConfig, train_config
from recflow.errors import ConfigError
from recflow.models.pointwise import (
    epochs_of_rows,
    row_batches,
    sample_negatives,
    seen_pairs,
    training_batches,
    unique_positives,
)
from recflow.models.ranking_mlp.training import score_users, train_ranking_mlp
from recflow.types import Features

N_USERS, N_ITEMS, N_GENRES = 50, 40, 4
CFG = TrainConfig(epochs=6, batch_size=64, embedding_dim=8, learning_rate=0.01, seed=5)


def planted_features(seed: int = 0) -> tuple[Features, np.ndarray, np.ndarray]:
    """Users pick 6 items of their favourite genre and 1 other item; genre 0 is the biggest
    audience, so raw popularity favours genre 0 for everybody."""
    rng = np.random.default_rng(seed)
    item_genre = np.arange(N_ITEMS) % N_GENRES
    fav = rng.choice(N_GENRES, size=N_USERS, p=[0.4, 0.2, 0.2, 0.2])
    users: list[int] = []
    items: list[int] = []
    for u in range(N_USERS):
        own = np.flatnonzero(item_genre == fav[u])
        other = np.flatnonzero(item_genre != fav[u])
        picks = np.concatenate([rng.choice(own, 6, replace=False), rng.choice(other, 1)])
        users += [u] * picks.size
        items += picks.tolist()
    tu, ti = np.array(users, np.int32), np.array(items, np.int32)
    genres = np.eye(N_GENRES, dtype=np.float32)[item_genre]
    pref = np.zeros((N_USERS, N_GENRES), np.float32)
    np.add.at(pref, tu, genres[ti])
    pref /= pref.sum(axis=1, keepdims=True)
    activity = np.log1p(np.bincount(tu, minlength=N_USERS)).astype(np.float32)
    popularity = np.log1p(np.bincount(ti, minlength=N_ITEMS)).astype(np.float32)
    features = Features(
        user_ids=np.array([f"u{i}" for i in range(N_USERS)]),
        item_ids=np.array([f"m{i}" for i in range(N_ITEMS)]),
        item_titles=np.array([f"Movie {i}" for i in range(N_ITEMS)]),
        genres=tuple(f"g{g}" for g in range(N_GENRES)),
        train_user_idx=tu,
        train_item_idx=ti,
        user_genre_pref=pref,
        user_activity=activity / activity.max(),
        item_popularity=popularity / popularity.max(),
        item_genres=genres,
    )
    return features, fav, item_genre


def seen_mask(f: Features) -> np.ndarray:
    mask = np.zeros((f.n_users, f.n_items), bool)
    mask[f.train_user_idx, f.train_item_idx] = True
    return mask


def favourite_hits(scores: np.ndarray, f: Features, fav: np.ndarray, genre: np.ndarray) -> float:
    """Mean number of unseen favourite-genre items in each user's top 5."""
    masked = np.where(seen_mask(f), -np.inf, scores)
    top = np.argsort(-masked, axis=1, kind="stable")[:, :5]
    return float((genre[top] == fav[:, None]).sum(axis=1).mean())


@pytest.fixture(scope="module")
def planted() -> tuple[Features, np.ndarray, np.ndarray]:
    return planted_features()


@pytest.fixture(scope="module")
def trained(planted):
    lines: list[str] = []
    model = train_ranking_mlp(planted[0], CFG, progress=lines.append)
    return model, lines


def test_mlp_learns_planted_tastes_better_than_popularity(planted, trained):
    f, fav, genre = planted
    mlp = favourite_hits(score_users(trained[0], f, np.arange(f.n_users)), f, fav, genre)
    pop = favourite_hits(np.tile(f.item_popularity, (f.n_users, 1)), f, fav, genre)
    # Each user has 4 unseen favourite-genre items: a perfect model scores 4 of 5.
    assert mlp >= 3.0, mlp
    assert mlp >= pop + 1.5, (mlp, pop)


def test_progress_and_history(trained):
    model, lines = trained
    assert len(lines) == CFG.epochs
    assert lines[0].startswith(f"epoch 1/{CFG.epochs} loss=")
    assert len(model.history["loss"]) == CFG.epochs
    assert model.history["loss"][-1] < model.history["loss"][0]
    assert model.seconds > 0


def test_score_users_matches_pairwise_predictions(planted, trained):
    f = planted[0]
    users = np.array([0, 7, 49], np.int32)
    matrix = score_users(trained[0], f, users)
    u = np.repeat(users, f.n_items)
    i = np.tile(np.arange(f.n_items, dtype=np.int32), users.size)
    pairs = trained[0].model.predict([u, i], verbose=0).reshape(users.size, f.n_items)
    assert matrix.shape == (3, f.n_items) and matrix.dtype == np.float32
    np.testing.assert_allclose(matrix, pairs, rtol=1e-5, atol=1e-6)


def test_training_is_deterministic_given_seed(planted):
    f = planted[0]
    cfg = TrainConfig(epochs=2, batch_size=64, embedding_dim=4, learning_rate=0.01, seed=11)
    a = train_ranking_mlp(f, cfg, progress=lambda _: None)
    b = train_ranking_mlp(f, cfg, progress=lambda _: None)
    np.testing.assert_allclose(a.history["loss"], b.history["loss"], rtol=1e-5)
    users = np.arange(5)
    np.testing.assert_allclose(score_users(a, f, users), score_users(b, f, users), rtol=1e-4)


def test_negatives_are_unseen_and_seeded(planted):
    f = planted[0]
    users = np.repeat(np.arange(f.n_users, dtype=np.int32), 3)
    nu, ni = sample_negatives(f, users, 4, np.random.default_rng(1))
    assert nu.size == users.size * 4
    assert not seen_mask(f)[nu, ni].any()
    again = sample_negatives(f, users, 4, np.random.default_rng(1))
    np.testing.assert_array_equal(ni, again[1])
    # Roughly uniform over unseen items: each user has 33 unseen items, 12 draws each.
    assert np.unique(ni).size > f.n_items * 0.8


def test_seen_pairs_built_once_give_the_same_draws_and_positives(planted):
    f = planted[0]
    seen = seen_pairs(f)
    keys = f.train_user_idx.astype(np.int64) * f.n_items + f.train_item_idx
    assert seen.keys.size == np.unique(keys).size
    np.testing.assert_array_equal(seen.per_user, seen_mask(f).sum(axis=1))
    pu, pi = unique_positives(f, seen)
    np.testing.assert_array_equal(np.stack([pu, pi]), np.stack(unique_positives(f)))
    inline = sample_negatives(f, pu, 4, np.random.default_rng(5))
    reused = sample_negatives(f, pu, 4, np.random.default_rng(5), seen)
    np.testing.assert_array_equal(inline[1], reused[1])


def test_prefetched_epochs_draw_the_same_rows_as_one_after_another(planted):
    """The background draw of the next epoch keeps the seeded sequence of draws."""
    f = planted[0]
    seen = seen_pairs(f)
    ahead = list(epochs_of_rows(f, seen, 4, 3, np.random.default_rng(9)))
    in_turn = list(epochs_of_rows(f, seen, 4, 3, np.random.default_rng(9), prefetch=False))
    assert len(ahead) == 3
    for (u, i, y), (u2, i2, y2) in zip(ahead, in_turn, strict=True):
        np.testing.assert_array_equal(u, u2)
        np.testing.assert_array_equal(i, i2)
        np.testing.assert_array_equal(y, y2)
        # a label is 1 exactly for the seen pairs, and the order is shuffled
        np.testing.assert_array_equal(y == 1, seen_mask(f)[u, i])
        assert y.sum() == seen.keys.size and not (y[: seen.keys.size] == 1).all()
    assert not np.array_equal(ahead[0][0], ahead[1][0])  # fresh negatives and order each epoch


def test_users_with_nothing_unseen_get_no_negatives():
    f, _, _ = planted_features()
    full = Features(
        **{
            **f.__dict__,
            "train_user_idx": np.concatenate([f.train_user_idx, np.zeros(N_ITEMS, np.int32)]),
            "train_item_idx": np.concatenate(
                [f.train_item_idx, np.arange(N_ITEMS, dtype=np.int32)]
            ),
        }
    )
    nu, _ = sample_negatives(full, np.array([0, 1], np.int32), 2, np.random.default_rng(0))
    np.testing.assert_array_equal(nu, [1, 1])


def test_nearly_complete_user_draws_from_the_few_unseen_items():
    f, _, _ = planted_features()
    # User 0 has seen every item but 3 and 17: rejection alone would almost never finish.
    rest = np.setdiff1d(np.arange(N_ITEMS), [3, 17]).astype(np.int32)
    dense = Features(
        **{
            **f.__dict__,
            "train_user_idx": np.concatenate([f.train_user_idx, np.zeros(rest.size, np.int32)]),
            "train_item_idx": np.concatenate([f.train_item_idx, rest]),
        }
    )
    users = np.zeros(200, np.int32)
    nu, ni = sample_negatives(dense, users, 4, np.random.default_rng(2))
    assert nu.size == 800
    counts = np.bincount(ni, minlength=N_ITEMS)
    assert set(np.flatnonzero(counts)) == {3, 17}
    assert 300 < counts[3] < 500  # uniform over the two


def test_bad_config_is_refused_where_it_is_built():
    with pytest.raises(ConfigError, match="negatives: expected >= 1, found 0"):
        train_config(negatives=0)


def test_keras_file_round_trip_keeps_scores_and_frozen_profiles(planted, trained, tmp_path):
    import keras

    from recflow.models.ranking_mlp.training import TrainedModel

    f = planted[0]
    path = tmp_path / "model.keras"
    trained[0].model.save(path)
    loaded = TrainedModel(model=keras.models.load_model(path))
    users = np.arange(4)
    np.testing.assert_allclose(
        score_users(loaded, f, users), score_users(trained[0], f, users), rtol=1e-6
    )
    # Profile tables are inputs, not parameters: training must leave them as built.
    table = loaded.model.get_layer("user_tower").get_layer("user_genre_pref")
    np.testing.assert_array_equal(table.get_weights()[0], f.user_genre_pref)
    assert path.stat().st_size < 200_000


def test_head_dropout_regularises_training_only(planted):
    from recflow.models.ranking_mlp.network import HEAD, build_ranking_mlp

    f = planted[0]
    head = build_ranking_mlp(f, train_config(head_dropout=0.3, embedding_dim=4)).get_layer(HEAD)
    rates = [layer.rate for layer in head.layers if layer.name.startswith("dropout_")]
    assert rates == [0.3, 0.3]
    pairs = np.ones((2, head.input_shape[-1]), np.float32)
    np.testing.assert_allclose(head(pairs), head(pairs))  # inference mode: deterministic
    plain = build_ranking_mlp(f, train_config(embedding_dim=4)).get_layer(HEAD)
    assert not [layer for layer in plain.layers if layer.name.startswith("dropout_")]


def assert_same_batches(ours, expected):
    for ((u, i), y), ((eu, ei), ey) in zip(ours, expected, strict=True):
        np.testing.assert_array_equal(u, eu)
        np.testing.assert_array_equal(i, ei)
        np.testing.assert_array_equal(y, ey)


@pytest.mark.parametrize("rows", [0, 5, 512, 1024, 1300])
def test_row_batches_are_the_batches_of_tf_data_batch(rows):
    import tensorflow as tf

    rng = np.random.default_rng(rows)
    users = rng.integers(0, 100, rows).astype(np.int32)
    items = rng.integers(0, 50, rows).astype(np.int32)
    labels = rng.random(rows).astype(np.float32)
    ours = list(row_batches(users, items, labels, 512).as_numpy_iterator())
    reference = tf.data.Dataset.from_tensor_slices(((users, items), labels)).batch(512)
    expected = list(reference.as_numpy_iterator())
    assert len(ours) == len(expected) == -(-rows // 512)
    assert_same_batches(ours, expected)


def test_training_batches_are_row_batches_with_the_autotuner_off():
    rng = np.random.default_rng(0)
    users = rng.integers(0, 100, 1300).astype(np.int32)
    items = rng.integers(0, 50, 1300).astype(np.int32)
    labels = rng.random(1300).astype(np.float32)
    data = training_batches(users, items, labels, 512)
    assert data.options().autotune.enabled is False
    ours = list(data.as_numpy_iterator())
    expected = list(row_batches(users, items, labels, 512).as_numpy_iterator())
    assert len(ours) == len(expected) == 3
    assert_same_batches(ours, expected)
