"""Threshold rules (np, ltt, crc, quantile): brute force, hand-worked cases, the config key and the CLI.

Expected values are worked out here independently of `hightpr.metrics.thresholds`: a brute force over
every candidate threshold with exact fractions and term-by-term binomial sums, or small cases by hand.
"""

from __future__ import annotations

import copy
import json
import math
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from hightpr.checks import check_keys
from hightpr.cli.threshold import main as threshold_main
from hightpr.errors import HightprError
from hightpr.identity import run_key
from hightpr.metrics import RULES, check_rule, np_threshold, rule_threshold
from hightpr.metrics.evaluators import BinaryEvaluator
from hightpr.metrics.operating_point import np_operating_point, operating_points, rule_operating_point
from hightpr.metrics.thresholds import crc_min_positives, describe
from hightpr.runs import save_logits

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "src" / "hightpr" / "conf"
COMMITTED = sorted((ROOT / "results" / "runs" / "cpu" / "ensembles").glob("*/metrics.json"))


def sample(seed: int, n_pos: int, n_neg: int, decimals: int | None = None):
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    scores = rng.normal(size=n_pos + n_neg) + 1.5 * labels
    return (np.round(scores, decimals) if decimals is not None else scores), labels


def misses(pos: list[float], t: float) -> int:
    return sum(s < t for s in pos)


def binom_cdf(m: int, n: int, p: Fraction) -> Fraction:
    """P(Binomial(n, p) <= m), exactly."""
    return sum(math.comb(n, j) * p ** j * (1 - p) ** (n - j) for j in range(m + 1))


def brute(rule: str, scores, labels, tpr: float, delta: float) -> float | None:
    """Scan every distinct score as a threshold (positive: score >= t), the rule's condition in exact
    arithmetic; ltt runs its fixed sequence from the lowest threshold up."""
    pos = [float(s) for s, y in zip(scores, labels, strict=True) if y == 1]
    n, beta, d = len(pos), Fraction(repr(tpr)), Fraction(repr(delta))
    candidates = sorted(set(float(s) for s in scores))
    if rule == "quantile":
        ok = [t for t in candidates if Fraction(n - misses(pos, t), n) >= beta]
    elif rule == "crc":
        ok = [t for t in candidates if Fraction(misses(pos, t) + 1, n + 1) <= 1 - beta]
    elif rule == "np":  # largest order statistic k whose violation probability is <= delta
        ks = [k for k in range(1, n + 1) if binom_cdf(k - 1, n, 1 - beta) <= d]
        ok = [sorted(pos)[max(ks) - 1]] if ks else []
    else:  # ltt
        ok = []
        for t in candidates:
            if binom_cdf(misses(pos, t), n, 1 - beta) > d:
                break
            ok.append(t)
    return max(ok) if ok else None


# -- each rule against the brute force ----------------------------------------------------------

@pytest.mark.parametrize("seed", range(10))
@pytest.mark.parametrize("rule", ["quantile", "crc", "ltt"])
def test_rule_matches_brute_force(rule, seed):
    rng = np.random.default_rng(300 + seed)
    n_pos = int(rng.integers(5, 90))
    tpr = float(rng.choice([0.8, 0.9, 0.95]))
    delta = float(rng.choice([0.05, 0.1, 0.3]))
    scores, labels = sample(seed, n_pos, 30, decimals=1 if seed % 2 else None)  # odd seeds: ties
    expected = brute(rule, scores, labels, tpr, delta)
    if expected is None:
        with pytest.raises(ValueError, match="needs at least"):
            rule_threshold(scores, labels, tpr, delta, rule)
    else:
        assert rule_threshold(scores, labels, tpr, delta, rule) == expected


@pytest.mark.parametrize("seed", range(6))
def test_ltt_with_binomial_tail_is_the_np_rule(seed):
    """Fixed-sequence testing with exact binomial p-values certifies exactly the NP order statistic,
    ties or not (a threshold above s_(k) misses >= k positives, whose p-value exceeds delta)."""
    scores, labels = sample(seed, 60 + 15 * seed, 20, decimals=1 if seed % 2 else None)
    for tpr, delta in ((0.9, 0.05), (0.95, 0.05), (0.95, 0.1)):
        assert rule_threshold(scores, labels, tpr, delta, "ltt") == np_threshold(scores, labels, tpr, delta) \
            == brute("np", scores, labels, tpr, delta)


def test_hand_worked_case():
    # positives 1..20, negatives 0.5 and 10.5; target 0.9, so alpha = 0.1.
    scores = [*range(1, 21), 0.5, 10.5]
    labels = [1] * 20 + [0, 0]
    # quantile: TPR >= 0.9 needs 18 of 20 at or above t: the 18th largest positive, 3.
    assert rule_threshold(scores, labels, 0.9, 0.2, "quantile") == 3
    # crc: (misses + 1) / 21 <= 0.1 allows 1 miss (2/21 = 0.095; 2 misses give 3/21 = 0.143): t = 2.
    assert rule_threshold(scores, labels, 0.9, 0.2, "crc") == 2
    # np / ltt: 0.9^20 = 0.1216 <= 0.2, but P(Bin(20, 0.1) <= 1) = 0.1216 + 0.2702 = 0.3917 > 0.2: t = 1;
    # at delta = 0.4 one miss is allowed (0.3917 <= 0.4; two give 0.6769): t = 2.
    for rule in ("np", "ltt"):
        assert rule_threshold(scores, labels, 0.9, 0.2, rule) == 1
        assert rule_threshold(scores, labels, 0.9, 0.4, rule) == 2
    # tied positives at the threshold count as detected: 1, 1, 1 then 4..20; the quantile's 18th
    # largest is a 1 (TPR 1.0), crc's second lowest is a 1 as well.
    tied = [1, 1, 1, *range(4, 21), 0.5, 10.5]
    assert rule_threshold(tied, labels, 0.9, 0.2, "quantile") == 1
    assert rule_threshold(tied, labels, 0.9, 0.2, "crc") == 1
    d = describe("crc", scores, labels, 0.9, 0.2)
    assert (d["k"], d["n"]) == (2, 20) and d["expected_fnr"] == pytest.approx(2 / 21)
    assert d["violation_probability"] == pytest.approx(0.9 ** 20 + 20 * 0.1 * 0.9 ** 19)


@pytest.mark.parametrize("tpr, need", [(0.90, 9), (0.95, 19), (0.98, 49), (0.99, 99)])
def test_crc_min_positives(tpr, need):
    """(n + 1)(1 - tpr) >= 1 first holds at n = 1 / (1 - tpr) - 1."""
    assert crc_min_positives(tpr) == need
    scores, labels = sample(0, need, 3)
    assert rule_threshold(scores, labels, tpr, 0.05, "crc") == min(scores[labels == 1])
    with pytest.raises(ValueError, match=f"needs at least {need} validation positives, got {need - 1}"):
        rule_threshold(scores[1:], labels[1:], tpr, 0.05, "crc")


def test_crc_expected_miss_rate_by_simulation():
    """Uniform positive scores: the population miss rate at t is t itself; its mean is k/(n+1) <= 1 - tpr."""
    rng = np.random.default_rng(11)
    n, tpr, draws = 50, 0.9, 3000
    labels = np.r_[np.ones(n, int), 0]
    fnr = [rule_threshold(np.r_[rng.random(n), -1.0], labels, tpr, 0.05, "crc") for _ in range(draws)]
    k = math.floor(0.1 * 51)  # 5
    assert np.mean(fnr) == pytest.approx(k / (n + 1), abs=4 * math.sqrt(0.0017 / draws)) and k / 51 <= 0.1


# -- interface, report keys ---------------------------------------------------------------------

def test_bad_rule_names_the_options():
    with pytest.raises(ValueError, match="one of np, ltt, crc, quantile; got 'fixed'"):
        check_rule("fixed")
    with pytest.raises(ValueError, match="one of np, ltt, crc, quantile"):
        BinaryEvaluator(threshold_rule="bad")
    assert set(RULES) == {"np", "ltt", "crc", "quantile"}


@pytest.mark.parametrize("metrics_file", COMMITTED, ids=lambda p: p.parent.name)
def test_committed_operating_points_are_reproduced(metrics_file):
    """The default rule writes exactly the committed `operating_point` (keys and values)."""
    from hightpr.runs import load_logits
    d = metrics_file.parent
    val, test = load_logits(d / "logits_val.npz"), load_logits(d / "logits_test.npz")
    committed = json.loads(metrics_file.read_text())["operating_point"]
    ev = BinaryEvaluator(operating_tprs=(0.9, 0.95, 0.98), delta=0.05)
    assert json.dumps(ev.operating_points(val, test), sort_keys=True) == json.dumps(committed, sort_keys=True)


def test_rule_keys():
    val_s, val_y = sample(3, 100, 100)
    test_s, test_y = sample(4, 300, 300)
    ops = operating_points(val_s, val_y, test_s, test_y, tprs=(0.95, 0.98), rule="crc")
    op = ops["95tpr"]
    t = brute("crc", val_s, val_y, 0.95, 0.05)
    assert op["crc_threshold"] == t and "crc_delta" not in op and not any(k.startswith("np_") for k in op)
    assert op["crc_test_tpr"] == pytest.approx(((test_s >= t) & (test_y == 1)).sum() / 300)
    assert op["crc_held"] == (op["crc_test_tpr"] >= 0.95)
    assert ops["98tpr"]["crc_threshold"] is not None  # crc exists from 49 positives at 0.98
    ltt = rule_operating_point(val_s, val_y, test_s, test_y, 0.98, 0.05, "ltt")
    assert ltt == {"ltt_threshold": None, "ltt_delta": 0.05,
                   "ltt_note": "needs >= 149 validation positives, has 100"}
    assert np_operating_point(val_s, val_y, test_s, test_y, 0.95) == \
        rule_operating_point(val_s, val_y, test_s, test_y, 0.95, 0.05, "np")


# -- the config key ----------------------------------------------------------------------------

def composed(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_config_key_default_and_refusal():
    assert composed().evaluation.threshold_rule == "np"
    check_keys(composed("evaluation.threshold_rule=ltt"))
    with pytest.raises(HightprError, match="threshold rule must be one of np, ltt, crc, quantile") as err:
        check_keys(composed("evaluation.threshold_rule=oracle"))
    assert "\n" not in str(err.value)


@pytest.mark.skipif(not COMMITTED, reason="no committed ensembles under results/runs/cpu/ensembles")
def test_default_rule_keeps_run_keys():
    """A committed member's config (written before the key existed) keys the same with `np` added."""
    cfg = OmegaConf.load(next(COMMITTED[0].parent.glob("member_*/config_resolved.yaml")))
    assert "threshold_rule" not in cfg.evaluation
    choices = {"dataset": "cifar10_binary", "loss": "bce", "reg": "none"}
    with_default, with_crc = copy.deepcopy(cfg), copy.deepcopy(cfg)
    with_default.evaluation.threshold_rule = "np"
    with_crc.evaluation.threshold_rule = "crc"
    assert run_key(with_default, choices) == run_key(cfg, choices) != run_key(with_crc, choices)


# -- the CLI -----------------------------------------------------------------------------------

def write_run(run_dir: Path) -> Path:
    run_dir.mkdir(parents=True)
    for stage, seed, n in (("val", 14, 120), ("test", 15, 400)):
        scores, labels = sample(seed, n, n)
        save_logits(run_dir, stage, {"scores": scores, "labels": labels, "ids": np.arange(scores.size),
                                     "logits": scores[:, None]})
    return run_dir


@pytest.mark.parametrize("rule", ["crc", "quantile", "ltt"])
def test_cli_rule(tmp_path, capsys, rule):
    run = write_run(tmp_path / "run")
    assert threshold_main([str(run), "--tpr", "0.9", "--delta", "0.1", "--rule", rule, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    val_s, val_y = sample(14, 120, 120)
    assert res["rule"] == rule and res["guaranteed"]["threshold"] == brute(rule, val_s, val_y, 0.9, 0.1)
    assert threshold_main([str(run), "--rule", rule]) == 0
    assert RULES[rule].title in capsys.readouterr().out


def test_cli_bad_rule_and_help(tmp_path, capsys):
    run = write_run(tmp_path / "run")
    assert threshold_main([str(run), "--rule", "oracle"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "np, ltt, crc, quantile" in err[0]
    with pytest.raises(SystemExit):
        threshold_main(["--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "(default: np)" in out and "(default: 0.95)" in out and "(default: 0.05)" in out


# -- the study's vectorised re-splits --------------------------------------------------------------

def study_module():
    import importlib.util
    path = ROOT / "scripts" / "study_thresholds.py"
    spec = importlib.util.spec_from_file_location("study_thresholds", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # its dataclass looks its module up
    spec.loader.exec_module(sys.modules[spec.name])
    return sys.modules[spec.name]


def test_study_violation_rates_match_the_exact_level():
    """At n = 100, target 0.95: np (k = 2) misses with P(Bin(100, .05) <= 1) = 0.037, the plain
    quantile (k = 6) with P(Bin(100, .05) <= 5) = 0.616; both on binormal and on a re-split pool."""
    study = study_module()
    rng = np.random.default_rng(5)
    exact = {2: float(binom_cdf(1, 100, Fraction(1, 20))), 6: float(binom_cdf(5, 100, Fraction(1, 20)))}
    pool_pos, pool_neg = rng.normal(2.0, 1.0, 3000), rng.normal(0.0, 1.0, 3000)
    runs = (study.synthetic(2.0, 100, 3000, rng), study.real(pool_pos, pool_neg, 100, 1500, rng))
    for ks, tallies, oracle in runs:
        assert ks["np", 0.95, 0.05] == 2 and ks["quantile", 0.95, 0.05] == 6 and ks["crc", 0.95, 0.05] == 5
        for k, p in exact.items():
            t = tallies[k]
            assert abs(t.violations[0.95] / t.draws - p) <= 4 * math.sqrt(p * (1 - p) / t.draws) + 0.01
        assert 0.3 < oracle[0.95] < 0.4  # binormal mu = 2: 1 - Phi(2 - 1.645) = 0.361
    low, high = study.wilson(5, 100)
    assert low == pytest.approx(0.02154, abs=1e-4) and high == pytest.approx(0.11175, abs=1e-4)
