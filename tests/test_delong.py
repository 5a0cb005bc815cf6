"""DeLong test against an O(m n) reference built from the pairwise structural components."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from hightpr.metrics import delong_test
from hightpr.metrics.delong import delong_covariance


def reference_delong(a, b, labels):
    """DeLong et al. (1988) written out pairwise: psi(x, y) = 1 if x > y, 1/2 if tied, else 0."""
    labels = np.asarray(labels, bool)
    comps = []
    for s in (np.asarray(a, float), np.asarray(b, float)):
        x, y = s[labels], s[~labels]
        psi = (x[:, None] > y[None, :]) + 0.5 * (x[:, None] == y[None, :])
        comps.append((psi.mean(), psi.mean(axis=1), psi.mean(axis=0)))  # AUC, V10 (pos), V01 (neg)
    (auc_a, v10a, v01a), (auc_b, v10b, v01b) = comps
    m, n = len(v10a), len(v01a)

    def s(u, v, mean_u, mean_v):
        return ((u - mean_u) * (v - mean_v)).sum() / (len(u) - 1)

    var_a = s(v10a, v10a, auc_a, auc_a) / m + s(v01a, v01a, auc_a, auc_a) / n
    var_b = s(v10b, v10b, auc_b, auc_b) / m + s(v01b, v01b, auc_b, auc_b) / n
    cov_ab = s(v10a, v10b, auc_a, auc_b) / m + s(v01a, v01b, auc_a, auc_b) / n
    var_diff = var_a + var_b - 2 * cov_ab
    z = (auc_a - auc_b) / math.sqrt(var_diff)
    p = math.erfc(abs(z) / math.sqrt(2))
    return auc_a, auc_b, np.array([[var_a, cov_ab], [cov_ab, var_b]]), z, p


def correlated_case(seed, n=400, pos_rate=0.15):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < pos_rate).astype(int)
    labels[:2] = [0, 1]
    shared = rng.normal(size=n)
    a = np.round(shared + 1.2 * labels + 0.5 * rng.normal(size=n), 1)  # rounded: many ties
    b = np.round(shared + 0.8 * labels + 0.5 * rng.normal(size=n), 1)
    return a, b, labels


@pytest.mark.parametrize("seed", range(6))
def test_matches_pairwise_reference_with_ties(seed):
    a, b, labels = correlated_case(seed)
    auc_a, auc_b, cov, z, p = reference_delong(a, b, labels)
    assert len(np.unique(a)) < len(a) / 4  # the case really has ties
    res = delong_test(a, b, labels)
    assert res.auc_a == pytest.approx(auc_a, abs=1e-12) and res.auc_b == pytest.approx(auc_b, abs=1e-12)
    assert res.auc_a == pytest.approx(roc_auc_score(labels, a), abs=1e-12)
    assert res.z == pytest.approx(z, rel=1e-9) and res.p == pytest.approx(p, rel=1e-9)
    _, fast_cov = delong_covariance([a, b], labels)
    np.testing.assert_allclose(fast_cov, cov, rtol=1e-9, atol=1e-15)


def test_hand_example():
    # positives 0.9, 0.5, 0.4; negatives 0.5, 0.1 (model a) vs a constant-rank-shuffled model b.
    labels = [1, 1, 1, 0, 0]
    a = [0.9, 0.5, 0.4, 0.5, 0.1]
    b = [0.1, 0.9, 0.4, 0.5, 0.3]
    auc_a, auc_b, _, z, p = reference_delong(a, b, labels)
    # pairs for a: 0.9 beats both (2), 0.5 ties 0.5 and beats 0.1 (1.5), 0.4 beats 0.1 (1): 4.5/6
    assert auc_a == pytest.approx(4.5 / 6)
    res = delong_test(a, b, labels)
    assert (res.auc_a, res.auc_b) == pytest.approx((auc_a, auc_b))
    assert (res.z, res.p) == pytest.approx((z, p))


def test_identical_scores_give_p_one():
    a, _, labels = correlated_case(0)
    res = delong_test(a, a.copy(), labels)
    assert res.z == 0.0 and res.p == 1.0 and res.auc_a == res.auc_b
    # a strictly increasing transform keeps every rank: still p = 1
    assert delong_test(a, np.exp(a), labels).p == 1.0


def test_zero_variance_difference():
    labels = np.array([1, 1, 0, 0, 0])
    perfect, constant = np.array([5.0, 4, 1, 2, 3]), np.zeros(5)
    res = delong_test(perfect, constant, labels)
    assert (res.auc_a, res.auc_b) == (1.0, 0.5) and res.z == math.inf and res.p == 0.0


def test_bad_input():
    with pytest.raises(ValueError, match="same test set"):
        delong_test([0.1, 0.2, 0.3, 0.4], [0.1, 0.2, 0.3], [0, 0, 1, 1])
    with pytest.raises(ValueError, match="at least 2 positives"):
        delong_test([0.1, 0.2, 0.3], [0.3, 0.2, 0.1], [0, 0, 1])
