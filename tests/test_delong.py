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


# -- bootstrap intervals -------------------------------------------------------------------------
def test_bootstrap_auc_spread_matches_delong_standard_error():
    """Both estimate the AUC's sampling variability: the bootstrap SE is close to DeLong's."""
    from hightpr.metrics.bootstrap import bootstrap_ci

    a, _, labels = correlated_case(1, n=600)
    _, cov = delong_covariance([a], labels)
    ci = bootstrap_ci(a, labels, n=2000, seed=3, level=0.6827)  # +-1 SE for a normal statistic
    half_width = (ci["auc"]["hi"] - ci["auc"]["lo"]) / 2
    assert half_width == pytest.approx(math.sqrt(cov[0, 0]), rel=0.15)
    assert ci["auc"]["value"] == pytest.approx(roc_auc_score(labels, a))
    assert ci["auc"]["lo"] < ci["auc"]["value"] < ci["auc"]["hi"]
    assert ci["fpr@95tpr"]["lo"] <= ci["fpr@95tpr"]["value"] <= ci["fpr@95tpr"]["hi"]


def test_paired_bootstrap_of_identical_models_is_zero_and_separable_is_exact():
    from hightpr.metrics.bootstrap import bootstrap_ci, paired_bootstrap

    a, _, labels = correlated_case(2)
    res = paired_bootstrap(a, a.copy(), labels, n=50)
    assert all(r["diff"] == r["diff_lo"] == r["diff_hi"] == 0.0 for r in res.values())
    perfect = labels + 0.1 * np.arange(len(labels)) / len(labels)  # positives always above
    ci = bootstrap_ci(perfect, labels, n=50)
    assert ci["auc"] == {"value": 1.0, "lo": 1.0, "hi": 1.0} and ci["fpr@98tpr"]["hi"] == 0.0
    with pytest.raises(ValueError, match=">= 1"):
        bootstrap_ci(a, labels, n=0)


def test_resample_indices_is_the_one_draw_of_test_samples():
    from hightpr.metrics.bootstrap import resample_indices

    labels = np.array([0, 1, 0, 0, 1, 0, 1, 0, 0, 0], dtype=bool)
    draws = resample_indices(labels, 200, seed=4)
    assert draws.shape == (200, 10)
    assert labels[draws[:, :3]].all() and not labels[draws[:, 3:]].any()  # positives first, counts kept
    assert np.array_equal(draws, resample_indices(labels.astype(int), 200, seed=4))
    flat = resample_indices(np.arange(10) % 3, 200, seed=4, stratified=False)
    assert flat.shape == (200, 10) and flat.min() >= 0 and flat.max() <= 9
    rng = np.random.default_rng(4)  # a generator in use continues its own stream
    first = resample_indices(labels, 5, rng)
    assert np.array_equal(first, resample_indices(labels, 5, seed=4))
    assert not np.array_equal(resample_indices(labels, 5, rng), first)


# -- hightpr-compare --------------------------------------------------------------------------------
def _save_run(run_dir, scores, labels, ids):
    from hightpr.runs import save_logits

    run_dir.mkdir(parents=True)
    save_logits(run_dir, "test", {"scores": np.asarray(scores), "labels": np.asarray(labels),
                                  "ids": np.asarray(ids), "logits": np.asarray(scores)[:, None]})
    return run_dir


def test_compare_cli_aligns_by_id_and_prints_delong(tmp_path, capsys):
    import json

    from hightpr.cli.compare import main as compare_main

    a, b, labels = correlated_case(4)
    ids = np.arange(len(labels)) + 50
    order = np.random.default_rng(0).permutation(len(labels))  # run B saved in another row order
    run_a = _save_run(tmp_path / "a", a, labels, ids)
    run_b = _save_run(tmp_path / "b", b[order], labels[order], ids[order])
    assert compare_main([str(run_a), str(run_b), "--json", "--bootstrap", "20"]) == 0
    res = json.loads(capsys.readouterr().out)
    auc_a, auc_b, cov, z, p = reference_delong(a, b, labels)
    assert (res["auc_a"], res["auc_b"], res["z"], res["p"]) == pytest.approx((auc_a, auc_b, z, p))
    assert res["se_diff"] == pytest.approx(math.sqrt(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]))
    assert set(res["bootstrap"]["metrics"]) == {"auc", "fpr@90tpr", "fpr@95tpr", "fpr@98tpr"}
    assert compare_main([str(run_a), str(run_b / "logits_test.npz")]) == 0
    assert "DeLong, two-sided" in capsys.readouterr().out


def test_compare_cli_needs_the_same_test_set(tmp_path, capsys):
    from hightpr.cli.compare import main as compare_main

    a, b, labels = correlated_case(5)
    ids = np.arange(len(labels))
    run_a = _save_run(tmp_path / "a", a, labels, ids)
    run_b = _save_run(tmp_path / "b", b, labels, ids + 1)
    assert compare_main([str(run_a), str(run_b)]) == 2
    err = capsys.readouterr().err
    assert "different samples" in err and "Traceback" not in err
    assert compare_main([str(run_a), str(tmp_path / "nothing")]) == 2
    assert "not found" in capsys.readouterr().err
