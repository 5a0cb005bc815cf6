"""Guaranteed (Neyman-Pearson) thresholds: brute force, coverage by simulation, report keys, the CLI.

Every expected value is computed here from first principles (sums of math.comb terms, sorted
lists), never by the functions under test.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from hightpr.cli.threshold import main as threshold_main
from hightpr.metrics import np_min_positives, np_threshold, np_violation_probability
from hightpr.metrics.evaluators import BinaryEvaluator
from hightpr.metrics.operating_point import operating_points, threshold_at_tpr
from hightpr.runs import save_logits


def brute_violation(n: int, k: int, tpr: float) -> float:
    """P(Binomial(n, 1 - tpr) <= k - 1), summed term by term."""
    return sum(math.comb(n, j) * (1 - tpr) ** j * tpr ** (n - j) for j in range(k))


def brute_k(n: int, tpr: float, delta: float) -> int | None:
    """Largest k in 1..n whose violation probability is <= delta (None: no k qualifies)."""
    ok = [k for k in range(1, n + 1) if brute_violation(n, k, tpr) <= delta]
    return max(ok) if ok else None


def brute_threshold(scores, labels, tpr: float, delta: float) -> float | None:
    """The k-th lowest positive score for the brute-force k."""
    pos = sorted(float(s) for s, y in zip(scores, labels, strict=True) if y == 1)
    k = brute_k(len(pos), tpr, delta)
    return None if k is None else pos[k - 1]


def brute_min_positives(tpr: float, delta: float) -> int:
    n = 1
    while tpr ** n > delta:
        n += 1
    return n


def sample(seed: int, n_pos: int, n_neg: int, shift: float = 1.5, decimals: int | None = None):
    """Normal scores, positives shifted up; rounded to `decimals` for ties."""
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    scores = rng.normal(size=n_pos + n_neg) + shift * labels
    return (np.round(scores, decimals) if decimals is not None else scores), labels


# -- the rule ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(16))
def test_np_threshold_matches_brute_force(seed):
    rng = np.random.default_rng(100 + seed)
    n_pos = int(rng.integers(20, 320))
    tpr = float(rng.choice([0.8, 0.9, 0.95, 0.98]))
    delta = float(rng.choice([0.01, 0.05, 0.1, 0.2]))
    scores, labels = sample(seed, n_pos, 50, decimals=1 if seed % 2 else None)  # odd seeds: ties
    expected = brute_threshold(scores, labels, tpr, delta)
    if expected is None:
        with pytest.raises(ValueError, match=f"at least {brute_min_positives(tpr, delta)} "):
            np_threshold(scores, labels, tpr, delta)
    else:
        assert np_threshold(scores, labels, tpr, delta) == expected


@pytest.mark.parametrize("n, k, tpr", [(59, 1, 0.95), (100, 3, 0.95), (160, 9, 0.9), (300, 1, 0.99),
                                       (40, 40, 0.5)])
def test_violation_probability_is_the_binomial_sum(n, k, tpr):
    assert np_violation_probability(n, k, tpr) == pytest.approx(brute_violation(n, k, tpr), rel=1e-9)


@pytest.mark.parametrize("tpr, delta, need", [(0.95, 0.05, 59), (0.90, 0.05, 29), (0.98, 0.05, 149),
                                              (0.99, 0.05, 299), (0.90, 0.10, 22), (0.95, 0.10, 45),
                                              (0.98, 0.10, 114), (0.99, 0.10, 230)])
def test_min_positives(tpr, delta, need):
    assert np_min_positives(tpr, delta) == need == brute_min_positives(tpr, delta)
    scores, labels = sample(0, need, 5)
    assert np_threshold(scores, labels, tpr, delta) == min(scores[labels == 1])  # k = 1 just qualifies
    with pytest.raises(ValueError, match=f"needs at least {need} validation positives, got {need - 1}"):
        np_threshold(scores[1:], labels[1:], tpr, delta)


def test_forty_positives_are_refused_at_95():
    scores, labels = sample(1, 40, 40)
    with pytest.raises(ValueError, match="59 validation positives, got 40"):
        np_threshold(scores, labels, 0.95, 0.05)


def test_ties_only_raise_the_tpr():
    scores, labels = sample(2, 200, 10, decimals=0)  # heavy ties
    t = np_threshold(scores, labels, 0.9, 0.05)
    k = brute_k(200, 0.9, 0.05)
    pos = scores[labels == 1]
    assert t == sorted(pos)[k - 1]
    assert (pos >= t).sum() >= 200 - k + 1  # tied positives at t count as detected


def test_coverage_by_simulation():
    """Uniform(0, 1) positive scores: the population TPR at t is 1 - t exactly."""
    rng = np.random.default_rng(7)
    n, tpr, delta, draws = 100, 0.95, 0.05, 2000
    labels = np.r_[np.ones(n, int), 0]
    np_miss = plain_miss = 0
    for _ in range(draws):
        scores = np.r_[rng.random(n), -1.0]  # one negative: the plain quantile needs one
        np_miss += 1 - np_threshold(scores, labels, tpr, delta) < tpr
        plain_miss += 1 - threshold_at_tpr(scores, labels, tpr) < tpr
    tolerance = 3 * math.sqrt(delta * (1 - delta) / draws)
    exact = brute_violation(n, brute_k(n, tpr, delta), tpr)  # the rule's exact level, <= delta
    assert np_miss / draws <= delta + tolerance
    assert abs(np_miss / draws - exact) <= tolerance
    plain_exact = brute_violation(n, n - math.ceil(tpr * n) + 1, tpr)  # k-th largest = (n-k+1)-th lowest
    assert plain_exact > 0.5 and abs(plain_miss / draws - plain_exact) <= 0.04


@pytest.mark.parametrize("kwargs, match", [
    ({"tpr": 0.0}, "tpr must be in"), ({"tpr": 1.0}, "tpr must be in"), ({"tpr": 95}, "0.95, not 95"),
    ({"tpr": float("nan")}, "tpr must be in"), ({"delta": 0.0}, "delta must be in"),
    ({"delta": 1.0}, "delta must be in"), ({"delta": 5}, "0.05, not 5"),
])
def test_bad_rates(kwargs, match):
    scores, labels = sample(3, 100, 10)
    with pytest.raises(ValueError, match=match):
        np_threshold(scores, labels, **kwargs)


def test_bad_inputs():
    scores, labels = sample(4, 100, 10)
    with pytest.raises(ValueError, match="got 0"):
        np_threshold(scores[labels == 0], labels[labels == 0])
    with pytest.raises(ValueError, match="binary"):
        np_threshold(scores, labels * 2)
    with pytest.raises(ValueError, match="NaN or inf"):
        np_threshold(np.r_[scores[:-1], np.nan], labels)
    with pytest.raises(ValueError, match="same length"):
        np_threshold(scores[:-1], labels)
    with pytest.raises(ValueError, match="k must be in"):
        np_violation_probability(10, 11, 0.9)


# -- the operating-point report ---------------------------------------------------------------------

def rates(scores, labels, t: float) -> tuple[float, float]:
    pred = np.asarray(scores) >= t
    return float(pred[labels == 1].mean()), float(pred[labels == 0].mean())


def test_operating_points_add_the_guaranteed_point():
    val_s, val_y = sample(5, 100, 300)
    test_s, test_y = sample(6, 500, 500)
    ops = operating_points(val_s, val_y, test_s, test_y, tprs=(0.90, 0.95, 0.98), delta=0.05)
    for name, tpr in (("90tpr", 0.90), ("95tpr", 0.95)):
        op = ops[name]
        t = brute_threshold(val_s, val_y, tpr, 0.05)
        (vt, vf), (tt, tf) = rates(val_s, val_y, t), rates(test_s, test_y, t)
        assert op["np_threshold"] == t and op["np_delta"] == 0.05
        assert (op["np_val_tpr"], op["np_val_fpr"], op["np_test_tpr"], op["np_test_fpr"]) == \
            pytest.approx((vt, vf, tt, tf))
        assert op["np_held"] is (tt >= tpr)
        assert {"target_tpr", "threshold", "val_tpr", "val_fpr", "test_tpr", "test_fpr"} <= set(op)
        assert op["np_threshold"] <= op["threshold"]  # the guarantee costs a lower threshold
    assert ops["98tpr"]["np_threshold"] is None
    assert ops["98tpr"]["np_note"] == "needs >= 149 validation positives, has 100"
    assert ops["98tpr"]["test_fpr"] == pytest.approx(rates(test_s, test_y, ops["98tpr"]["threshold"])[1])


def test_too_few_positives_give_a_note_not_an_error():
    val_s, val_y = sample(8, 40, 100)
    ops = operating_points(val_s, val_y, val_s, val_y, tprs=(0.95,))
    assert ops["95tpr"]["np_threshold"] is None
    assert ops["95tpr"]["np_note"] == "needs >= 59 validation positives, has 40"
    assert "threshold" in ops["95tpr"] and "np_test_tpr" not in ops["95tpr"]


@pytest.mark.parametrize("delta, k", [
    # 60 validation positives, target TPR 0.9: k is the largest with P(Binomial(60, 0.1) <= k - 1) <= delta
    # P(<= 1) = 0.0138 <= 0.05 < P(<= 2) = 0.0530;  P(<= 3) = 0.1374 <= 0.2 < P(<= 4) = 0.2710
    (0.05, 2), (0.2, 4),
])
def test_evaluator_passes_its_delta(delta, k):
    val_s, val_y = sample(9, 60, 60)
    test_s, test_y = sample(10, 60, 60)
    assert brute_k(60, 0.9, delta) == k
    ev = BinaryEvaluator(operating_tprs=(0.9,), delta=delta)
    ops = ev.operating_points({"scores": val_s, "labels": val_y}, {"scores": test_s, "labels": test_y})
    op = ops["90tpr"]
    pos = np.sort(val_s[val_y == 1])  # no ties: normal scores
    # the k-th lowest validation positive: a larger delta allows more positives below the threshold
    assert op["np_delta"] == delta and op["np_threshold"] == pos[k - 1]
    assert op["np_val_tpr"] == pytest.approx((60 - k + 1) / 60)
    assert op["np_test_tpr"] == pytest.approx(np.mean(test_s[test_y == 1] >= pos[k - 1]))


# -- the command ------------------------------------------------------------------------------------

def write_run(run_dir, val_pos: int = 120, num_logits: int = 1):
    """A run dir with synthetic logits files: val = sample(14, val_pos, 150), test = sample(15, 400, 400)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    for stage, (seed, n_pos, n_neg) in {"val": (14, val_pos, 150), "test": (15, 400, 400)}.items():
        scores, labels = sample(seed, n_pos, n_neg)
        logits = scores[:, None]
        if num_logits > 2:  # a multi-class run: class labels, one logit per class
            logits = np.random.default_rng(seed).normal(size=(scores.size, num_logits))
            labels = np.arange(scores.size) % num_logits
        save_logits(run_dir, stage, {"scores": scores, "labels": labels, "ids": np.arange(scores.size),
                                     "logits": logits})
    return run_dir


def test_cli_json(tmp_path, capsys):
    run = write_run(tmp_path / "run")
    assert threshold_main([str(run), "--tpr", "0.9", "--delta", "0.1", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    val_s, val_y = sample(14, 120, 150)
    test_s, test_y = sample(15, 400, 400)
    t = brute_threshold(val_s, val_y, 0.9, 0.1)
    g = res["guaranteed"]
    assert g["threshold"] == t and g["n"] == 120 and g["k"] == brute_k(120, 0.9, 0.1)
    assert g["violation_probability"] == pytest.approx(brute_violation(120, g["k"], 0.9)) and \
        g["violation_probability"] <= 0.1
    assert (g["val_tpr"], g["val_fpr"], g["test_tpr"], g["test_fpr"]) == \
        pytest.approx((*rates(val_s, val_y, t), *rates(test_s, test_y, t)))
    quantile = sorted(val_s[val_y == 1], reverse=True)[math.ceil(0.9 * 120) - 1]
    assert res["validation_quantile"]["threshold"] == quantile
    assert res["validation_quantile"]["test_tpr"] == pytest.approx(rates(test_s, test_y, quantile)[0])
    assert (res["val_positives"], res["val_negatives"], res["test_positives"]) == (120, 150, 400)


def test_cli_text(tmp_path, capsys):
    run = write_run(tmp_path / "run")
    assert threshold_main([str(run)]) == 0
    out = capsys.readouterr().out
    val_s, val_y = sample(14, 120, 150)
    k = brute_k(120, 0.95, 0.05)
    assert f"guaranteed threshold (Neyman-Pearson): {brute_threshold(val_s, val_y, 0.95, 0.05):.6g}" in out
    assert "P(population TPR < 0.95) <= 0.05" in out and "exact for continuous scores" in out
    suffix = {1: "st", 2: "nd", 3: "rd"}.get(k, "th")  # k is small here (< 10)
    assert k < 10 and f"{k}{suffix} lowest of 120 validation positives" in out
    assert "validation-quantile threshold" in out and "oracle test FPR" in out


@pytest.mark.parametrize("case, match", [
    ("missing_dir", "no such directory"), ("no_test", "logits_test.npz: not found"),
    ("corrupt", "corrupt"), ("few_positives", "59 validation positives, got 40"),
    ("multiclass", "multi-class"), ("bad_tpr", "0.95, not 95"),
])
def test_cli_errors(tmp_path, capsys, case, match):
    run = tmp_path / "run"
    args = [str(run)]
    if case == "no_test":
        write_run(run)
        (run / "logits_test.npz").unlink()
    elif case == "corrupt":
        write_run(run)
        (run / "logits_val.npz").write_bytes(b"not a zip file")
    elif case == "few_positives":
        write_run(run, val_pos=40)
    elif case == "multiclass":
        write_run(run, num_logits=10)
    elif case == "bad_tpr":
        write_run(run)
        args += ["--tpr", "95"]
    assert threshold_main(args) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0]
    assert captured.out == ""
