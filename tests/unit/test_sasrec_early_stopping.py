"""SASRec's early stopping: when it stops, which weights it keeps, what it measures and logs."""

from __future__ import annotations

import numpy as np
import pytest

from recflow.config import SyntheticConfig, train_config
from recflow.evaluation.loo import table_scorer
from recflow.evaluation.ranking import rank_users
from recflow.features import build_features, split_leave_last_out
from recflow.models.sasrec import early_stopping
from recflow.models.sasrec.early_stopping import METRIC, BestEpoch, validation_ndcg
from recflow.models.sasrec.network import score_sequences
from recflow.models.sasrec.sequences import last_windows, user_sequences
from recflow.models.zoo import get_kind

SYNTH = SyntheticConfig(n_users=80, n_items=40, n_genres=4, mean_events_per_user=12, seed=5)
CFG = train_config(
    sasrec_epochs=6,
    sasrec_batch_size=32,
    sasrec_max_len=8,
    sasrec_dim=8,
    sasrec_blocks=1,
    sasrec_heads=1,
    seed=2,
)


def test_stops_once_patience_steps_passed_without_a_better_value_and_keeps_the_best():
    best = BestEpoch(patience_steps=20)
    copies: list[int] = []

    def weights_of(epoch: int):
        return lambda: copies.append(epoch) or [np.full(2, epoch)]

    values = [0.10, 0.20, 0.20, 0.15]  # a tie is not an improvement
    # 10 steps an epoch: epoch 4 ends 20 steps after the best (epoch 2)
    stops = [best.update(e, 10 * e, v, weights_of(e)) for e, v in enumerate(values, start=1)]
    assert stops == [False, False, False, True]
    assert (best.epoch, best.steps, best.value) == (2, 20, 0.20)
    assert copies == [1, 2]  # weights are copied only for a new best
    assert best.weights is not None and best.weights[0].tolist() == [2, 2]


def test_an_improvement_resets_the_wait_and_patience_counts_steps_not_epochs():
    best = BestEpoch(patience_steps=20)
    values = [0.3, 0.2, 0.4, 0.1, 0.1]
    stops = [best.update(e, 10 * e, v, list) for e, v in enumerate(values, start=1)]
    assert stops == [False, False, False, False, True]
    assert best.epoch == 3
    # with 1,000 steps an epoch the first epoch without improvement is already past the step
    # patience; the epoch patience then decides
    large = BestEpoch(patience_steps=20, patience_epochs=2)
    values = [0.3, 0.2, 0.25]
    stops = [large.update(e, 1000 * e, v, list) for e, v in enumerate(values, start=1)]
    assert stops == [False, False, True]


@pytest.fixture(scope="module")
def data():
    from recflow.data import generate_synthetic

    ds = generate_synthetic(SYNTH)
    split = split_leave_last_out(ds.interactions)
    return split, build_features(split.train, ds.items)


def test_validation_ndcg_is_the_evaluation_ranking_of_the_validation_events(data):
    """The metric equals the evaluation stage's NDCG@10 on the validation stage for the same
    network and users: training items excluded, full catalogue ranked."""
    from recflow.models.sasrec.network import SasrecParams, build_network

    split, f = data
    p = SasrecParams.from_config(CFG, f.n_items, q_head=False)
    model = build_network(p)
    seqs = user_sequences(f, split.train)
    table = score_sequences(model, last_windows(seqs, p.max_len))
    want = rank_users(table_scorer(f, table), split, f, k=10, stage="validation")
    measure = validation_ndcg(f, split, seqs, p.max_len, users=0, head="supervised")
    assert measure is not None
    assert measure(model) == pytest.approx(float(want.per_user_ndcg().mean()))
    sampled = validation_ndcg(f, split, seqs, p.max_len, users=30, head="supervised")
    assert sampled is not None and sampled(model) == sampled(model)  # the same users each time
    empty = split.__class__(split.train, split.validation.iloc[:0], split.test)
    assert validation_ndcg(f, empty, seqs, p.max_len, users=0, head="supervised") is None


def test_fit_stops_early_keeps_the_best_epochs_weights_and_says_so(data, monkeypatch, tmp_path):
    """Scripted validation values: the best is epoch 2; two steps later (epoch 4) training stops and the saved network is epoch 2's, which MLflow metrics and notes record."""
    split, f = data
    values = iter([0.1, 0.3, 0.2, 0.25])
    seen: dict[int, list[np.ndarray]] = {}

    def scripted(*args, **kwargs):
        def measure(model):
            seen[len(seen) + 1] = [w.copy() for w in model.get_weights()]
            return next(values)

        return measure

    monkeypatch.setattr(early_stopping, "validation_ndcg", scripted)
    # one batch holds every window: one step an epoch, so 2 steps of patience are 2 epochs
    cfg = train_config(
        CFG, sasrec_patience_steps=2, sasrec_patience_epochs=1, sasrec_batch_size=4096
    )
    lines: list[str] = []
    summary = get_kind("sasrec").fit(f, split, cfg, lines.append, tmp_path)
    assert summary["history"][METRIC] == [0.1, 0.3, 0.2, 0.25]
    assert len(summary["history"]["loss"]) == 4
    assert summary["metrics"] == {"epochs_trained": 4, "best_epoch": 2}
    assert summary["notes"] == [
        "sasrec: early stopping trained 4 of 6 epochs and kept epoch 2's weights "
        "(best validation NDCG@10)"
    ]
    assert (
        "sasrec: stopping after epoch 4: val_ndcg@10 has not improved in 2 epochs, 2 steps; "
        "keeping epoch 2's weights (0.3000)" in lines
    )

    from recflow.models.sasrec.kind import load_trained

    model, _, _ = load_trained(tmp_path, f)
    for kept, at_best in zip(model.get_weights(), seen[2], strict=True):
        np.testing.assert_array_equal(kept, at_best)
    assert any(not np.array_equal(a, b) for a, b in zip(seen[2], seen[4], strict=True))


def test_patience_zero_trains_every_epoch_without_validating(data, monkeypatch, tmp_path):
    split, f = data

    def never(*args, **kwargs):
        raise AssertionError("patience 0 must not measure validation")

    monkeypatch.setattr(early_stopping, "validation_ndcg", never)
    summary = get_kind("sasrec").fit(
        f,
        split,
        train_config(CFG, sasrec_patience_steps=0, sasrec_epochs=3),
        lambda _: None,
        tmp_path,
    )
    assert len(summary["history"]["loss"]) == 3 and METRIC not in summary["history"]
    assert summary["metrics"] == {"epochs_trained": 3, "best_epoch": 3}
    assert summary["notes"] == []
