"""The Open Bandit Dataset sample: loader conventions and the published IPW figure.

Skipped when the shared dataset folder is absent (set RECFLOW_OBD_DIR to point elsewhere).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from recflow.bandits.bts import bts_action_dist, load_prior
from recflow.bandits.estimators import estimate_policy_value
from recflow.bandits.obd import load_obd
from recflow.bandits.validate import validate_feedback
from recflow.errors import DataSourceError

ROOT = Path(os.environ.get("RECFLOW_OBD_DIR", "/work/shared/datasets/open-bandit-small"))
pytestmark = pytest.mark.skipif(
    not (ROOT / "random" / "all" / "all.csv").is_file(), reason=f"no Open Bandit sample at {ROOT}"
)


def test_loader_matches_obp_conventions() -> None:
    fb = load_obd(ROOT, "random", "all")
    assert fb.n_rounds == 10_000 and fb.n_actions == 80 and fb.len_list == 3
    assert fb.context.shape == (10_000, 20)  # one-hot user features, first level dropped
    assert set(np.unique(fb.position)) == {0, 1, 2}
    np.testing.assert_allclose(fb.pscore, 1 / 80)  # uniform logging policy, per position
    assert fb.action_context is not None and fb.action_context.shape == (80, 4)
    assert load_obd(ROOT, "random", "all", include_affinity=True).context.shape == (10_000, 100)
    assert validate_feedback(fb)["success"]
    with pytest.raises(DataSourceError):
        load_obd(ROOT, "random", "kids")


def test_bts_distribution_and_ipw_reproduce_the_published_quickstart() -> None:
    alpha, beta = load_prior(ROOT / "prior_bts.yaml", "all")
    dist = bts_action_dist(alpha, beta, len_list=3, n_sim=100_000, seed=12345)
    # First and last rows as printed by OBP's quickstart notebook.
    np.testing.assert_allclose(dist[0], [0.01078, 0.00931, 0.00917])
    np.testing.assert_allclose(dist[-1], [0.0582, 0.07603, 0.07998])
    fb = load_obd(ROOT, "random", "all")
    pi = np.broadcast_to(dist[None], (fb.n_rounds, *dist.shape))
    est = estimate_policy_value(fb, pi, n_boot=1000, seed=12345)
    assert est["ips"].value == pytest.approx(0.004553, rel=0.02)
    assert est["dm"].value == pytest.approx(0.003545, rel=0.02)
    assert est["dr"].value == pytest.approx(0.004727, rel=0.02)
    on_policy = load_obd(ROOT, "bts", "all").on_policy_value()
    for name in ("ips", "snips", "dr"):
        assert est[name].covers(on_policy), name
