"""two_stage: towers retrieve N candidates, the ranking MLP orders them; N = catalogue ranks like
ranking_mlp; the towers' step touches only the batch's rows and its loss over distinct items equals
the masked in-batch softmax; the gate's retrieval floor."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest

from recflow.config import GateConfig, SyntheticConfig, train_config
from recflow.data import generate_synthetic
from recflow.features import build_features, split_leave_last_out
from recflow.gate import GateDecision, retrieval_check, with_check
from recflow.models import check_contract
from recflow.models.zoo import get_kind
from recflow.types import Features, Split

CFG = train_config(
    model="two_stage",
    epochs=2,
    two_stage_tower_epochs=30,
    two_stage_tower_batch_size=128,
    two_stage_candidates=30,
    seed=3,
)


@pytest.fixture(scope="module")
def data() -> tuple[Split, Features]:
    ds = generate_synthetic(SyntheticConfig(n_users=150, n_items=120, seed=5))
    split = split_leave_last_out(ds.interactions)
    return split, build_features(split.train, ds.items)


@pytest.fixture(scope="module")
def fitted(data, tmp_path_factory) -> tuple[Path, dict]:
    split, f = data
    train_dir = tmp_path_factory.mktemp("two_stage") / "train"
    summary = get_kind("two_stage").fit(f, split, CFG, lambda _: None, train_dir)
    return train_dir, summary


def _serve(path: Path, users: list[str]) -> dict[str, np.ndarray]:
    import tensorflow as tf

    serve = tf.saved_model.load(str(path)).signatures["serving_default"]
    return {k: v.numpy() for k, v in serve(user_id=tf.constant(users)).items()}


def test_full_candidate_set_serves_what_the_ranking_mlp_serves(data, fitted, tmp_path) -> None:
    import keras

    from recflow.models.ranking_mlp.export import export_model
    from recflow.models.ranking_mlp.training import TrainedModel
    from recflow.models.two_stage.kind import KERAS_FILE, TOWERS_FILE

    split, f = data
    train_dir = tmp_path / "train"
    shutil.copytree(fitted[0], train_dir)
    # Same trained weights; only the candidate count changes (N = the whole catalogue).
    with np.load(train_dir / TOWERS_FILE) as arrays:
        np.savez(
            train_dir / TOWERS_FILE,
            users=arrays["users"],
            items=arrays["items"],
            candidates=np.int64(f.n_items),
        )
    two = get_kind("two_stage").export(train_dir, f, tmp_path / "two", 10, [])
    model = keras.models.load_model(train_dir / KERAS_FILE)
    full = export_model(
        TrainedModel(model=model), f, tmp_path / "full", top_k=10, warmup_user_ids=[]
    )
    check_contract(two)
    users = [str(u) for u in f.user_ids] + ["never-seen-user"]
    a, b = _serve(two, users), _serve(full, users)
    np.testing.assert_allclose(a["scores"], b["scores"], rtol=1e-5, atol=1e-6)
    assert (a["item_ids"] == b["item_ids"]).mean() > 0.99  # ties in float32 may swap
    np.testing.assert_array_equal(a["reasons"][-1], b["reasons"][-1])


def test_export_loads_the_ranking_network_in_a_fresh_process(data, fitted, tmp_path) -> None:
    """The export task is a process of its own: the saved network (LazyAdam, RowEmbedding)
    must load there without anything registered by training."""
    import subprocess
    import sys

    from recflow.features import save_features

    _, f = data
    save_features(f, tmp_path / "features")
    code = (
        "import sys; from pathlib import Path; from recflow.features import load_features; "
        "from recflow.models.zoo import get_kind; "
        "f = load_features(Path(sys.argv[1])); "
        "get_kind('two_stage').export(Path(sys.argv[2]), f, Path(sys.argv[3]), 10, [])"
    )
    out = tmp_path / "m"
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "features"), str(fitted[0]), str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    check_contract(out)


def test_served_items_come_from_the_retrieval_candidates(data, fitted, tmp_path) -> None:
    from recflow.models.two_stage.towers import Towers, retrieve

    split, f = data
    train_dir, summary = fitted
    with np.load(train_dir / "towers.npz") as arrays:
        towers = Towers(arrays["users"], arrays["items"], {})
    out = get_kind("two_stage").export(train_dir, f, tmp_path / "m", 10, [])
    users = np.arange(f.n_users)
    served = _serve(out, [str(u) for u in f.user_ids])
    candidates = retrieve(towers, f, users, CFG.two_stage.candidates)
    index = {str(i): j for j, i in enumerate(f.item_ids)}
    for u in users:
        picked = {index[i.decode()] for i in served["item_ids"][u] if i}
        assert picked <= set(candidates[u].tolist())
    # N < catalogue here, so retrieval matters; recall beats popularity on planted tastes.
    metrics = summary["metrics"]
    assert metrics["retrieval_candidates"] == CFG.two_stage.candidates
    recall = metrics[f"retrieval_recall_at_{CFG.two_stage.candidates}"]
    assert recall > metrics[f"popularity_recall_at_{CFG.two_stage.candidates}"]


def test_tower_step_changes_only_the_rows_of_the_batch() -> None:
    """The towers' step (LazyAdam over RowEmbedding tables) moves only the looked-up rows."""
    import tensorflow as tf

    from recflow.models.sparse_adam import lazy_adam
    from recflow.models.two_stage.towers import TowerTables, tower_step

    tables = TowerTables.create(6, 5, 3, np.random.default_rng(0))
    step = tower_step(tables, lazy_adam(0.1, epsilon=1e-8), np.zeros(5, np.float32), 0.5)
    before = [v.numpy().copy() for v in tables.variables]
    step(tf.constant([[4, 1, 4]], tf.int32), tf.constant([[0, 2, 3]], tf.int32))
    changed = [
        np.flatnonzero((v.numpy() != old).any(axis=1)).tolist()
        for v, old in zip(tables.variables, before, strict=True)
    ]
    assert changed == [[1, 4], [0, 2, 3], [0, 2, 3]]  # users, items, item bias


def test_epoch_batches_cover_every_pair_once_in_order() -> None:
    from recflow.models.two_stage.towers import epoch_batches

    pairs = np.arange(23)
    blocks = list(epoch_batches(pairs, pairs + 100, 4, 2))
    assert [b[0].shape for b in blocks] == [(2, 4), (2, 4), (1, 4), (1, 3)]
    assert np.concatenate([b[0].ravel() for b in blocks]).tolist() == pairs.tolist()
    assert all((i == u + 100).all() for u, i in blocks)
    # a last batch of one pair has no in-batch negative: dropped
    assert [b[0].shape for b in epoch_batches(np.arange(9), np.arange(9), 4, 8)] == [(2, 4)]


def test_several_batches_per_call_train_the_towers_as_one_batch_per_call(data) -> None:
    """``steps_per_execution`` changes how batches reach the compiled step, not the updates:
    the same batches in the same order, the same tables and losses (to float rounding)."""
    from recflow.models.two_stage.towers import train_towers

    _, f = data
    runs = [
        train_towers(
            f,
            dim=8,
            epochs=3,
            batch_size=48,
            learning_rate=0.05,
            temperature=0.2,
            seed=4,
            steps_per_execution=per_call,
            progress_seconds=0,
            progress=lambda _: None,
        )
        for per_call in (1, 4)
    ]
    assert np.unique(f.train_user_idx.astype(np.int64) * f.n_items + f.train_item_idx).size % 48
    one, several = runs
    np.testing.assert_allclose(several.users, one.users, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(several.items, one.items, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(several.history["tower_loss"], one.history["tower_loss"], rtol=1e-5)
    assert one.history["tower_loss"][-1] < one.history["tower_loss"][0]


def test_in_batch_loss_over_distinct_items_equals_the_masked_batch_softmax() -> None:
    """The loss over the batch's distinct items, and its gradients, equal the B x B in-batch
    softmax with each positive's other copies masked out (the formulation it replaced)."""
    import tensorflow as tf

    from recflow.models.two_stage.towers import TowerTables, in_batch_softmax_loss

    tables = TowerTables.create(7, 6, 4, np.random.default_rng(1))
    tables.item_bias.embeddings.assign(np.linspace(-1.0, 1.0, 6, dtype=np.float32)[:, None])
    log_q = tf.constant(np.log(np.array([0.4, 0.2, 0.1, 0.1, 0.1, 0.1], np.float32)))
    # Item 2 three times, item 0 twice (one of them with the same user), the rest once.
    users = tf.constant([0, 1, 2, 3, 4, 5, 6, 0], tf.int32)
    items = tf.constant([2, 0, 2, 5, 2, 0, 3, 1], tf.int32)
    temperature = 0.3

    def masked() -> tf.Tensor:
        u = tf.math.l2_normalize(tables.users(users), axis=1)
        v = tf.math.l2_normalize(tables.items(items), axis=1)
        logits = tf.matmul(u, v, transpose_b=True) / temperature
        logits += tf.transpose(tables.item_bias(items)) - tf.gather(log_q, items)[None, :]
        copy = tf.equal(items[:, None], items[None, :]) & ~tf.eye(8, dtype=tf.bool)
        logits = tf.where(copy, -1e9, logits)
        return tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.range(8), logits=logits)
        )

    results = []
    for loss_fn in (
        masked,
        lambda: in_batch_softmax_loss(users, items, tables, log_q, temperature),
    ):
        with tf.GradientTape() as tape:
            loss = loss_fn()
        grads = [tf.convert_to_tensor(g) for g in tape.gradient(loss, tables.variables)]
        results.append((float(loss), [g.numpy() for g in grads]))
    (expected, expected_grads), (found, found_grads) = results
    assert found == pytest.approx(expected, rel=1e-5)
    for want, got in zip(expected_grads, found_grads, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert np.abs(expected_grads[1]).sum() > 0  # the item table does get a gradient


def test_retrieval_check_needs_the_floor_and_popularity() -> None:
    cfg = GateConfig(min_retrieval_recall=0.5)
    ok = retrieval_check({"retrieval_recall_at_200": 0.7, "popularity_recall_at_200": 0.6}, cfg)
    assert ok is not None and ok.passed and ok.threshold == 0.6
    below_pop = retrieval_check(
        {"retrieval_recall_at_200": 0.55, "popularity_recall_at_200": 0.6}, cfg
    )
    assert below_pop is not None and not below_pop.passed
    below_floor = retrieval_check(
        {"retrieval_recall_at_200": 0.4, "popularity_recall_at_200": 0.1}, cfg
    )
    assert below_floor is not None and not below_floor.passed
    assert "recall@200 0.4000 is below" in below_floor.message
    assert retrieval_check({"loss": 1.0}, cfg) is None
    nan = retrieval_check({"retrieval_recall_at_5": float("nan")}, cfg)
    assert nan is not None and not nan.passed


def test_with_check_declines_a_passing_decision() -> None:
    passing = GateDecision(passed=True, reasons=["fine"], checks=[])
    cfg = dataclasses.replace(GateConfig(), min_retrieval_recall=0.9)
    declined = with_check(passing, {"retrieval_recall_at_10": 0.5}, cfg)
    assert not declined.passed and len(declined.checks) == 1
    assert with_check(passing, {}, cfg) is passing


def test_blocked_top_k_picks_exactly_what_top_k_picks() -> None:
    import tensorflow as tf

    from recflow.models.two_stage.export import top_k_blocked

    rng = np.random.default_rng(0)
    scores = rng.normal(size=(5, 20_011)).astype(np.float32)
    scores[1, :19_000] = -np.inf  # a user who has seen most of the catalogue
    scores[2, 100:300] = 9.0 + np.arange(200)  # the top 200 crowded into few blocks
    got = np.sort(top_k_blocked(tf.constant(scores), 200, block=16).numpy(), axis=1)
    want = np.sort(tf.math.top_k(tf.constant(scores), 200).indices.numpy(), axis=1)
    np.testing.assert_array_equal(got, want)
    small = rng.normal(size=(2, 300)).astype(np.float32)  # falls back to plain top_k
    np.testing.assert_array_equal(
        np.sort(top_k_blocked(tf.constant(small), 20).numpy(), axis=1),
        np.sort(tf.math.top_k(tf.constant(small), 20).indices.numpy(), axis=1),
    )


def test_offline_scores_rank_as_served(data, fitted, tmp_path) -> None:
    import tensorflow as tf

    split, f = data
    train_dir, _ = fitted
    out = get_kind("two_stage").export(train_dir, f, tmp_path / "m", 10, [])
    loaded = tf.saved_model.load(str(out))
    users = [str(u) for u in f.user_ids[:40]]
    scores = loaded.score_all(tf.constant(users)).numpy()
    served = _serve(out, users)
    for b in range(len(users)):
        seen = f.train_item_idx[f.train_user_idx == b]
        scores[b, seen] = -np.inf
        top = f.item_ids[np.argsort(-scores[b], kind="stable")[:10]]
        assert [i.decode() for i in served["item_ids"][b]] == [str(i) for i in top]


def test_train_stage_logs_recall_and_the_gate_stage_applies_its_floor(data, tmp_path) -> None:
    from recflow.config import PipelineConfig
    from recflow.features import save_features, save_split
    from recflow.pipeline import gate as gate_stage
    from recflow.pipeline import train as train_stage
    from recflow.pipeline.context import RunContext, tracking_run
    from recflow.registry import InMemoryRegistry

    split, f = data
    train = train_config(CFG, epochs=1, two_stage_tower_epochs=2)
    cfg = PipelineConfig(work_dir=tmp_path, train=train, gate=GateConfig(min_retrieval_recall=1.0))
    ctx = RunContext.create(cfg, "recsys_training", "r1")
    save_features(f, ctx.features_dir)
    save_split(split, ctx.split_dir)
    registry = InMemoryRegistry(tmp_path / "artifacts")
    train_stage.run(cfg, ctx, registry)
    name = f"retrieval_recall_at_{CFG.two_stage.candidates}"
    logged = registry._run(tracking_run(cfg, ctx, registry)).metrics
    assert 0.0 < logged[f"train.{name}"][2] < 1.0
    assert ctx.read_json("train.json")["metrics"][name] == logged[f"train.{name}"][2]
    good = {"ndcg@10": 0.5, "hr@10": 0.9, "mrr@10": 0.4}
    ctx.write_json(
        "evaluation.json",
        {"candidate": {"validation": good}, "popularity": {"validation": {
            "ndcg@10": 0.1, "hr@10": 0.2, "mrr@10": 0.1}}, "champion": None},
    )  # fmt: skip
    record = gate_stage.run(cfg, ctx, registry)
    assert not record["passed"]  # only the retrieval floor (1.0) fails
    failed = [c["name"] for c in record["checks"] if not c["passed"]]
    assert failed == ["retrieval_recall"]
