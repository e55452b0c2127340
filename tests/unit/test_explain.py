"""Reasons come from the user's own history; cold start and padding get their fixed texts."""

from __future__ import annotations

import numpy as np
import pytest

from recflow.config import SyntheticConfig
from recflow.data import generate_synthetic
from recflow.features import build_features, split_leave_last_out
from recflow.models import explain

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def features():
    ds = generate_synthetic(SyntheticConfig(n_users=50, n_items=40, mean_events_per_user=8))
    return build_features(split_leave_last_out(ds.interactions).train, ds.items)


def test_cooccurrence_vectors_are_unit_and_similar_for_shared_users(features) -> None:
    v = explain.cooccurrence_vectors(features, dim=16)
    assert v.shape[0] == features.n_items
    norms = np.linalg.norm(v, axis=1)
    assert np.allclose(norms[norms > 0], 1.0, atol=1e-5)


def test_tf_explainer_matches_reference_and_points_into_history(features) -> None:
    import tensorflow as tf

    ex = explain.build_explainer(features)
    vectors = ex.item_vectors.numpy()
    splits, seen = explain.seen_csr(features)
    users = np.array([0, 3, 7, -1], np.int64)
    rng = np.random.default_rng(0)
    items = rng.integers(0, features.n_items, size=(4, 5))
    valid = np.ones((4, 5), bool)
    valid[1, 4] = False
    got = ex.because_items(tf.constant(users), tf.constant(items)).numpy()
    want = explain.because_items_numpy(vectors, splits, seen, users, items)
    # Ties in similarity may break differently; the chosen items must be equally similar.
    for b in range(3):
        for k in range(5):
            sim = vectors @ vectors[items[b, k]]
            assert sim[got[b, k]] == pytest.approx(sim[want[b, k]], abs=1e-5)
            assert got[b, k] in set(seen[splits[users[b]] : splits[users[b] + 1]].tolist())
    assert (got[3] == -1).all()

    reasons = ex.reasons(tf.constant(users), tf.constant(items), tf.constant(valid)).numpy()
    text = [[r.decode() for r in row] for row in reasons]
    for b in range(3):
        history_titles = {
            str(features.item_titles[i]) for i in seen[splits[users[b]] : splits[users[b] + 1]]
        }
        for k in range(5):
            if b == 1 and k == 4:
                assert text[b][k] == ""
                continue
            assert text[b][k].startswith(explain.BECAUSE)
            assert text[b][k][len(explain.BECAUSE) :] in history_titles
    assert text[3] == [explain.POPULAR] * 5
