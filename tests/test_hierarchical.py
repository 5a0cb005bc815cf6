"""The two-level bootstrap (members x test samples): exact batched metrics, Holm, and its error
rates on simulated arms whose truth is known."""

from __future__ import annotations

import numpy as np
import pytest

from hightpr.metrics import fpr_at_tpr, roc_auc
from hightpr.metrics.hierarchical import (
    auc_rows,
    compare,
    ensemble_replicates,
    fpr_at_tpr_rows,
    holm,
    member_draws,
    p_two_sided,
)


def test_batched_metrics_equal_the_scalar_definitions_with_ties():
    rng = np.random.default_rng(0)
    pos = np.round(rng.normal(1, 1, size=(20, 37)), 1)   # rounded: many ties, within and across classes
    neg = np.round(rng.normal(0, 1, size=(20, 53)), 1)
    y = np.r_[np.ones(37, bool), np.zeros(53, bool)]
    for r in range(20):
        s = np.r_[pos[r], neg[r]]
        assert auc_rows(pos, neg)[r] == pytest.approx(roc_auc(s, y), abs=1e-12)
        for t in (0.01, 0.5, 0.9, 0.95, 0.98, 1.0):
            assert fpr_at_tpr_rows(pos, neg, t)[r] == pytest.approx(fpr_at_tpr(s, y, t), abs=1e-12)


def test_holm_matches_a_hand_worked_family():
    # sorted 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> monotone 0.06)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])          # capped at 1
    out = holm([0.01, float("nan"), 0.02])                       # NaN left out of the family
    assert out[0] == pytest.approx(0.02) and np.isnan(out[1]) and out[2] == pytest.approx(0.02)


def test_p_two_sided_counts_both_tails():
    assert p_two_sided(np.array([1.0, 2.0, 3.0, -1.0])) == pytest.approx(0.5)
    assert p_two_sided(np.array([1.0, 2.0, 3.0])) == 0.0
    assert p_two_sided(np.array([0.0, 0.0])) == 1.0


def test_member_draws_undo_the_small_sample_shrinkage():
    """Var of the resampled ensemble mean = s^2 (ddof 1) / M, as the mean of M fresh members has."""
    rng = np.random.default_rng(1)
    members = rng.normal(size=(3, 1))
    w = member_draws(rng, 3, 200_000)
    reps = ensemble_replicates(members, w)[:, 0]
    assert reps.mean() == pytest.approx(members.mean(), abs=0.01)
    assert reps.var() == pytest.approx(members[:, 0].var(ddof=1) / 3, rel=0.02)


def _arms(rng, shift_a: float, members: int = 3, n_pos: int = 100, n_neg: int = 200):
    """A test set and two arms of members from populations of models whose positive-class skill
    is N(1 + shift, 0.3^2) (the member noise) with per-sample member noise; same test samples."""
    y = np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)]
    x = rng.normal(size=y.size) + y                                # the test samples' own difficulty

    def arm(shift):
        skill = rng.normal(1 + shift, 0.3, size=(members, 1))
        return x + skill * y * 0.5 + 0.7 * rng.normal(size=(members, y.size))

    return arm(shift_a), arm(0.0), y


def _rejection_rate(shift_a: float, metric: str, sims: int, alpha: float = 0.05) -> float:
    rng = np.random.default_rng(7)
    rejected = 0
    for s in range(sims):
        a, b, y = _arms(rng, shift_a)
        rejected += compare(a, b, y, metric, n=100, seed=s)["p"] <= alpha
    return rejected / sims


@pytest.mark.parametrize("metric", ["auc", "fpr@90tpr"])
def test_two_level_bootstrap_keeps_its_false_positive_rate_on_arms_from_one_population(metric):
    sims, alpha = 200, 0.05
    rate = _rejection_rate(0.0, metric, sims, alpha)
    mc = 2.5 * np.sqrt(alpha * (1 - alpha) / sims)                  # Monte-Carlo error allowance
    assert rate <= alpha + mc, rate


def test_two_level_bootstrap_detects_arms_that_differ():
    # members' positive-class skill 1.5 standard deviations of the member noise apart
    assert _rejection_rate(1.5, "auc", 60) >= 0.8


def test_test_samples_only_is_blind_to_member_noise():
    """The one-level bootstrap (the old claims' evidence) over-rejects when members vary: the
    reason claims now use two levels."""
    rng = np.random.default_rng(3)
    rejected = 0
    for s in range(60):
        a, b, y = _arms(rng, 0.0)
        rejected += compare(a, b, y, "auc", n=100, seed=s, members=False)["p"] <= 0.05
    assert rejected / 60 > 0.15
