"""The comparison test of every table and claim (members x test samples): exact batched metrics, the
variance components against values worked out by hand, TOST, Holm, and (slow) its size and power
on arms simulated from the committed members."""

from __future__ import annotations

import importlib.util
import itertools
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from hightpr.metrics import fpr_at_tpr, roc_auc
from hightpr.metrics.comparison import (
    MAX_PAIRS,
    SIZE_CORRELATION,
    Arm,
    auc_rows,
    binary_metric,
    compare,
    equivalence_p,
    extrapolate,
    fpr_at_tpr_rows,
    group_sizes,
    holm,
    like_with_like,
)

ROOT = Path(__file__).resolve().parents[1]


def _study():
    spec = importlib.util.spec_from_file_location("study_verdicts", ROOT / "scripts" / "study_verdicts.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["study_verdicts"] = module   # its processes find their function by this name
    spec.loader.exec_module(module)
    return module


def mean_score(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """A metric linear in the members: the mean score of every row."""
    return scores.mean(axis=1)


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


def test_batched_auc_is_the_rank_sum_forms_float_and_nan_where_a_row_has_one():
    from scipy.stats import rankdata

    rng = np.random.default_rng(1)
    pos = np.round(rng.normal(1, 1, size=(50, 300)), 2)
    neg = np.round(rng.normal(0, 1, size=(50, 700)), 2)
    ranks = rankdata(np.concatenate([pos, neg], axis=1), axis=1)   # Mann-Whitney by mid-ranks
    want = (ranks[:, :300].sum(axis=1) - 300 * 301 / 2) / (300 * 700)
    assert np.array_equal(auc_rows(pos, neg), want)
    pos[3, 7], neg[5, 0] = np.nan, np.nan
    got = auc_rows(pos, neg)
    assert np.isnan(got[[3, 5]]).all() and np.isfinite(np.delete(got, [3, 5])).all()
    # by hand: positive 2 is above negatives 1 and 0 (2 pairs), positive 1 ties 1 and is above 0 (1.5)
    assert auc_rows(np.array([[2.0, 1.0]]), np.array([[1.0, 0.0, 3.0]]))[0] == (2 + 1.5) / 6


def test_holm_matches_a_hand_worked_family():
    # sorted 0.005 (x4 = 0.02), 0.01 (x3 = 0.03), 0.03 (x2 = 0.06), 0.04 (x1 = 0.04 -> monotone 0.06)
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])          # capped at 1
    out = holm([0.01, float("nan"), 0.02])                       # NaN left out of the family
    assert out[0] == pytest.approx(0.02) and np.isnan(out[1]) and out[2] == pytest.approx(0.02)


def test_extrapolation_recovers_a_and_b_and_falls_back_to_one_over_h():
    a, b = 0.3, 2.0
    var = [a / h + b / h ** 2 for h in (5, 3)]
    assert extrapolate((5, 3), var, 10)[0] == pytest.approx(a / 10 + b / 100)
    assert extrapolate((1,), [0.9], 3) == pytest.approx((0.3, 2.0))           # one size: 1/h, M - 1 df
    assert extrapolate((5, 3), [0.5, 0.5], 10) == pytest.approx((0.25, 9.0))  # flat: b below 0 -> 1/h
    assert extrapolate((5, 3), [0.04, 0.2], 10) == pytest.approx((0.02, 9.0))  # steeper than 1/h^2: a < 0
    assert group_sizes(10) == (5, 3) and group_sizes(5) == (2, 1) and group_sizes(3) == (1,)


def test_the_extrapolations_df_is_satterthwaites_for_its_two_sizes():
    """Var(10) from sizes 5 and 3 is 0.875 v5 - 0.225 v3 (worked by hand from a/h + b/h^2); its df
    is Satterthwaite's with 9 df per size and correlation SIZE_CORRELATION between them."""
    v5, v3 = 1.0, 2.5
    var, df = extrapolate((5, 3), [v5, v3], 10)
    assert var == pytest.approx(0.875 * v5 - 0.225 * v3)
    c1, c2, r = 0.875 * v5, -0.225 * v3, SIZE_CORRELATION
    assert df == pytest.approx(9 * var ** 2 / (c1 ** 2 + c2 ** 2 + 2 * r * c1 * c2))
    assert 1 < df < 9
    # the 1/h law exactly (v3 = 5/3 v5) is a fit with b = 0: the variance halves, df still below 9
    var, df = extrapolate((5, 3), [1.0, 5 / 3], 10)
    assert var == pytest.approx(0.5) and df < 9


def test_tost_p_is_the_larger_one_sided_p():
    assert equivalence_p(0.0, 1.0, math.inf, 1.959964) == pytest.approx(0.025, abs=1e-6)
    assert equivalence_p(0.5, 1.0, 4.0, 2.0) == pytest.approx(stats.t.sf(1.5, 4.0))
    assert equivalence_p(0.0, 0.0, math.inf, 1.0) == 0.0 and equivalence_p(2.0, 0.0, math.inf, 1.0) == 1.0


def test_two_members_give_the_variance_of_their_mean_by_hand():
    """M = 2, a metric linear in the members: the member variance is s^2 / 2 with s^2 = (c0 - c1)^2 / 2,
    and with identical test samples in every replicate nothing else adds to it."""
    y = np.r_[np.ones(5, bool), np.zeros(5, bool)]
    base = np.zeros((2, 10))
    arm = base + np.array([[1.0], [4.0]])                      # member offsets 1 and 4
    ev = compare([Arm(arm)], y, mean_score, n=50, seed=0)
    assert ev["se_members"] ** 2 == pytest.approx((1.0 - 4.0) ** 2 / 4)
    assert ev["se_test"] == pytest.approx(0.0, abs=1e-12)      # every sample has the same score
    assert ev["df"] == pytest.approx(1.0)                       # all of it from 2 members
    q = stats.t.ppf(0.975, 1.0)
    assert (ev["lo"], ev["hi"]) == pytest.approx((2.5 - q * 1.5, 2.5 + q * 1.5))


def test_members_paired_by_seed_cancel_what_the_seed_shares():
    """Arm b = arm a + 1 member by member: paired by seed the difference has no member noise; with
    the seeds unknown the arms' member variances add (independent arms)."""
    rng = np.random.default_rng(3)
    y = np.r_[np.ones(50, bool), np.zeros(50, bool)]
    a = rng.normal(size=(4, 100)) + rng.normal(0, 3, size=(4, 1))
    b = a + 1.0
    paired = compare([Arm(a, (1, 2, 3, 4)), Arm(b, (1, 2, 3, 4))], y, mean_score, n=50)
    apart = compare([Arm(a), Arm(b)], y, mean_score, n=50)
    assert paired["paired"] and paired["diff"] == pytest.approx(-1.0)
    assert paired["se_members"] == pytest.approx(0.0, abs=1e-9)
    assert not apart["paired"] and apart["se_members"] > 1.0


def test_intervals_are_centred_and_the_p_is_the_t_references():
    rng = np.random.default_rng(5)
    y = np.r_[np.ones(100, bool), np.zeros(300, bool)]
    a = rng.normal(size=(5, 400)) + 1.2 * y
    b = rng.normal(size=(5, 400)) + 1.0 * y
    ev = compare([Arm(a, tuple(range(5))), Arm(b, tuple(range(5)))], y, "auc", n=200, scale=100, margin=5)
    assert (ev["lo"] + ev["hi"]) / 2 == pytest.approx(ev["diff"])
    assert ev["diff"] == pytest.approx(100 * (roc_auc(a.mean(0), y) - roc_auc(b.mean(0), y)))
    assert ev["se"] ** 2 == pytest.approx(ev["se_test"] ** 2 + ev["se_members"] ** 2)
    assert ev["p"] == pytest.approx(2 * stats.t.sf(abs(ev["diff"]) / ev["se"], ev["df"]))
    assert ev["p_equiv"] == pytest.approx(equivalence_p(ev["diff"], ev["se"], ev["df"], 5))
    again = compare([Arm(a, tuple(range(5))), Arm(b, tuple(range(5)))], y, "auc", n=200, scale=100, margin=5)
    assert again == ev                                          # seeded: the same numbers every time


def test_a_single_model_covers_test_samples_only():
    rng = np.random.default_rng(2)
    y = np.r_[np.ones(60, bool), np.zeros(60, bool)]
    ev = compare([Arm(rng.normal(size=(1, 120)) + y)], y, "auc", n=300)
    assert ev["se_members"] == 0.0 and ev["se_test"] > 0
    assert ev["noise"] == "test samples only (single models)"
    assert math.isinf(ev["df"])


def test_the_group_pairs_of_ten_members_are_every_split_in_halves():
    from hightpr.metrics.comparison import _group_pairs

    pairs = _group_pairs(10, 5, np.random.default_rng(0))
    splits = {frozenset(np.flatnonzero(r == 1)) for r in pairs}
    every = {frozenset(c) for c in itertools.combinations(range(10), 5) if 0 in c}
    assert len(pairs) == 126 and splits == every and ((pairs == 1).sum(1) == 5).all()
    # few members: every unordered pair of disjoint groups, once (3 of single members; 15 of pairs of 5)
    def groups(r: np.ndarray) -> frozenset:
        return frozenset([frozenset(np.flatnonzero(r == 1)), frozenset(np.flatnonzero(r == 2))])

    singles = _group_pairs(3, 1, None)
    assert {groups(r) for r in singles} == {groups(np.array(r)) for r in ([1, 2, 0], [1, 0, 2], [0, 1, 2])}
    twos = _group_pairs(5, 2, None)
    assert len(singles) == 3 and len(twos) == 15 == len({groups(r) for r in twos})


def test_the_study_runs_on_the_committed_members():
    study = _study()
    gen = study.Generator(ROOT / "results" / "runs" / "cpu")
    plan = {"members": (3,), "null_sims": {3: {0.0: 4}}, "alt_sims": 3, "shifts": (2.0,), "boot": 10,
            "splits": 4}
    df = study.study(gen, plan, progress=False)
    assert set(df.metric) == {"auc", "fpr@95tpr"} and len(df) == 4
    assert (df[df["shift"] > 0].effect.abs() > 0).all() and (df[df["shift"] == 0].effect == 0).all()
    assert (df.rms_se > 0).all() and (df.sd_stat > 0).all() and (df.df_median >= 1).all()


def test_the_studys_arms_share_each_seeds_part_as_the_pools_same_seed_members_do():
    """Members i of the two simulated arms correlate across test samples as the committed rows'
    same-seed members do on average (0.12-0.43 by pair of rows), and members of different seeds do not."""
    study = _study()
    gen = study.Generator(ROOT / "results" / "runs" / "cpu")
    assert 0.1 < gen.seed_correlation < 0.45
    a, b = gen.pair(np.random.default_rng(0), 300)
    da, db = a - gen.mean, b - gen.mean
    same = np.mean([np.corrcoef(da[i], db[i])[0, 1] for i in range(300)])
    other = np.mean([np.corrcoef(da[i], db[i - 1])[0, 1] for i in range(300)])
    assert same == pytest.approx(gen.seed_correlation, abs=0.03) and abs(other) < 0.03


def test_arms_that_differ_sample_by_sample_keep_the_null_exact():
    """`differ`: arm B's members are the ones drawn alike, relabelled within each class on that
    fraction of the samples, so each member's positives and negatives (and every AUC and FPR@TPR on
    the full test set) are unchanged, arm A is untouched, and the two ensembles are less alike."""
    study = _study()
    gen = study.Generator(ROOT / "results" / "runs" / "cpu")
    a0, b0 = gen.pair(np.random.default_rng(4), 5)
    a1, b1 = gen.pair(np.random.default_rng(4), 5, differ=0.3)
    assert np.array_equal(a0, a1)
    for k in (gen.y, ~gen.y):
        assert np.array_equal(np.sort(b0[:, k], axis=1), np.sort(b1[:, k], axis=1))
    moved = (b0 != b1).any(axis=0).mean()
    assert 0.25 < moved < 0.35        # about 30% drawn, a few relabelled onto themselves
    for metric in ("auc", "fpr@95tpr"):
        fn = binary_metric(metric)
        y = np.broadcast_to(gen.y, b0.shape)
        assert np.array_equal(fn(b0, y), fn(b1, y))
    assert gen.correlation(a1, b1) < gen.correlation(a0, b0) - 0.1


def test_the_study_gives_the_same_numbers_on_two_processes_and_resumes_from_its_chunks(tmp_path, monkeypatch):
    study = _study()
    monkeypatch.setattr(study, "CHUNK", 2)
    gen = study.Generator(ROOT / "results" / "runs" / "cpu")
    plan = {"members": (3,), "null_sims": {3: {0.0: 2, 0.2: 1}}, "alt_sims": 2, "shifts": (2.0,), "boot": 10,
            "splits": 4}
    cols = ["metric", "members", "shift", "differ", "corr", "sims", "rejections", "sd_stat", "rms_se",
            "df_median"]
    one = study.study(gen, plan, progress=False)
    two = study.study(gen, plan, progress=False, jobs=2, cache=tmp_path)
    pd.testing.assert_frame_equal(one[cols], two[cols])
    assert len(list(tmp_path.glob("*.npz"))) == 3   # chunks of 2: nulls alike 0-1, differing 0, shifted 0-1

    def refuse(*args, **kwargs):
        raise AssertionError("a kept chunk was simulated again")
    monkeypatch.setattr(study, "_chunk", refuse)
    again = study.study(gen, plan, progress=False, cache=tmp_path)
    pd.testing.assert_frame_equal(one[cols], again[cols])
    gen.seed_correlation = 0.0      # members drawn another way: the kept chunks are not reused
    with pytest.raises(AssertionError, match="simulated again"):
        study.study(gen, plan, progress=False, cache=tmp_path)
    # the command keeps its chunks by default, beside its output; 'none' keeps nothing
    assert study.cache_folder(None, tmp_path) == tmp_path / ".chunks"
    assert study.cache_folder("none", tmp_path) is None and study.cache_folder("NONE", tmp_path) is None
    assert study.cache_folder("elsewhere", tmp_path) == Path("elsewhere")


@pytest.mark.slow
def test_size_is_nominal_and_power_real_on_arms_from_the_committed_members():
    """1000 simulated nulls at 10 members: the rejection rate lies in [0.03, 0.07] for AUC and
    FPR@95%TPR, and 100 alternatives at 2.3 AUC / 10.2 FPR@95 points are rejected 80% of the time."""
    study = _study()
    gen = study.Generator(ROOT / "results" / "runs" / "cpu")
    got = study.rejections(gen, 10, 0.0, 1000, boot=100, seed=11, splits=MAX_PAIRS)
    for metric, seen in got.items():
        assert 0.03 <= seen["rejections"] / 1000 <= 0.07, (metric, seen)
    power = study.rejections(gen, 10, 1.0, 100, boot=100, seed=12, splits=MAX_PAIRS)
    assert all(seen["rejections"] / 100 >= 0.8 for seen in power.values()), power


def test_the_size_band_fails_a_procedure_that_never_rejects_or_ignores_the_members():
    """The band the slow size test holds the tables' test to is not one any procedure passes: one
    that never rejects, and one that sees test samples only (each arm's ensemble as one model, so
    the members' noise is left out), fall outside it on the same simulated nulls."""
    study = _study()
    gen = study.Generator(ROOT / "results" / "runs" / "cpu")

    def never(arms, labels, metric, **kw):
        return {"p": 1.0, "diff": 0.0, "se": 1.0, "df": 1.0}

    def test_samples_only(arms, labels, metric, **kw):
        return compare([Arm(np.asarray(a.scores).mean(0, keepdims=True)) for a in arms], labels, metric, **kw)

    for procedure in (never, test_samples_only):
        got = study.rejections(gen, 10, 0.0, 100, boot=100, seed=13, procedure=procedure, splits=MAX_PAIRS)
        assert any(not 0.03 <= seen["rejections"] / 100 <= 0.07 for seen in got.values()), \
            (procedure.__name__, got)
    assert got["auc"]["rejections"] / 100 > 0.07          # members' noise left out: far too many


def test_hightpr_compare_runs_the_tables_test_on_two_ensembles():
    from hightpr.cli.compare import compare as compare_runs

    pool = ROOT / "results" / "runs" / "cpu" / "ensembles"
    a, b = pool / "cifar10_binary-bce-none-897e9b79a5", pool / "cifar10_binary-bce-none-717c22c663"  # 3, 3
    res = compare_runs(a, b, tprs=(0.95,))
    got = res["members_test"]
    assert set(got) == {"auc", "fpr@95tpr"} and got["auc"]["paired"]
    assert got["auc"]["diff"] == pytest.approx(100 * res["auc_diff"], abs=1e-9)   # the same ensembles
    assert compare_runs(a / "member_01", b / "member_01").get("members_test") is None   # single runs


def test_ensembles_of_different_sizes_are_compared_at_the_smaller_as_the_tables_do():
    from hightpr.cli.compare import compare as compare_runs
    from hightpr.cli.compare import report_text

    arms, cut = like_with_like([Arm(np.zeros((5, 4)), (1, 2, 3, 4, 5)), Arm(np.ones((3, 4)), (1, 2, 3))])
    assert cut and [a.members for a in arms] == [3, 3] and arms[0].seeds == (1, 2, 3)
    assert not like_with_like([Arm(np.zeros((2, 4))), Arm(np.ones((2, 4)))])[1]
    pool = ROOT / "results" / "runs" / "cpu" / "ensembles"
    big = pool / "cifar10_binary-bce-none-252993f6a7"     # BCE, 10 members
    small = pool / "cifar10_binary-bce-none-897e9b79a5"   # BCE at batch 32, 3
    res = compare_runs(big, small, tprs=(0.95,))
    ev = res["members_test"]["auc"]
    assert ev["members"] == [3, 3] and ev["truncated"] and ev["paired"]
    scores = [np.stack([np.load(d / f"member_0{i}" / "logits_test.npz")["scores"] for i in (1, 2, 3)]).mean(0)
              for d in (big, small)]
    y = np.load(small / "member_01" / "logits_test.npz")["labels"]
    assert ev["diff"] == pytest.approx(100 * (roc_auc(scores[0], y) - roc_auc(scores[1], y)), abs=1e-9)
    assert "the larger cut to its first 3, like with like" in report_text(res)
