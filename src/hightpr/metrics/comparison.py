"""Comparing ensembles of trained models: a test whose noise is members (seeds) and test samples.

An ensemble's number carries two kinds of noise: which test samples were drawn, and which
members training happened to produce (seeds). The statistic (one arm's metric, a difference of
two, or any function of several arms' metrics, such as Avg.Δ's D1) is always computed on the
ensembles of all members (mean logits, as `hightpr.ensemble.average_logits` forms them) over
all test samples, and its variance is the sum of two components, each estimated where it lives:

- **test samples**: a stratified bootstrap over test samples with every member fixed (the
  arms paired on the same draws), the variance of the statistic over the replicates;
- **members**: the statistic on disjoint groups of members (every split of the members in halves,
  and thirds), Var(h) = E[(group 1 - group 2)^2] / 2 for groups of h, carried to all M members on
  Var(h) = a / h + b / h^2 (`extrapolate`). Arms whose members were trained with the same seeds
  (same data draw, initialisation and augmentation stream) are paired by seed: the groups take
  the same seeds in every arm, which keeps the covariance that shared seeds give. Otherwise each
  arm's groups are drawn alone and the arms' member variances add (independent arms). The
  test-sample bootstrap also sees the member-by-sample interaction, which the member component
  already counts; it is measured on half-vs-half differences and subtracted (`_interaction`).

The statistic over its standard error is referred to a t distribution with Welch-Satterthwaite
degrees of freedom (the bootstrap component counts as known, the member component's df is that of
its extrapolation, `extrapolate`: a median 5.5 for an AUC of 10 members in the study): with 3
members that is 2 degrees of freedom, and intervals widen as they should. The reference is
conservative: on the study's 10-member nulls it rejects about 3% at α = 0.05, as the difference
and its standard error rise together, which no t reference models (docs/evaluation.md). Intervals are
value ± t · se, so they are centred on the point estimate by construction, and a p-value is not
limited by the number of replicates. Why not the two-level bootstrap this replaced: resampling
members and test samples together counts their interaction twice, its member draws with
replacement from 3 members are not centred on the ensemble of those 3, and its small-M stretch
overshoots; on the committed CPU members it rejected 0-1.5% of true nulls at α = 0.05
(`make study-verdicts` measures size and power of this procedure; docs/evaluation.md).

`equivalent` (two one-sided tests, TOST) says whether the difference is within a stated margin;
`holm` adjusts a family of p-values for multiplicity.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

from hightpr.metrics.bootstrap import resample_indices

# (ensemble scores [R, N] (or [R, N, C]), labels [R, N]) -> [R] metric values
ArmMetric = Callable[[np.ndarray, np.ndarray], np.ndarray]
# arms' metric values [K, R] -> the statistic [R]
Statistic = Callable[[np.ndarray], np.ndarray]


def auc_rows(pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """AUC of every row: `pos` [R, P] and `neg` [R, N] scores (Mann-Whitney, ties 1/2; a row with a
    NaN is NaN). Each row's sorted positives are placed among its sorted negatives, which counts
    the pairs exactly (the same float as the rank-sum form) in a quarter of a rank sort's time."""
    pos, neg = np.asarray(pos, dtype=np.float64), np.asarray(neg, dtype=np.float64)
    p, n = pos.shape[1], neg.shape[1]
    ps, ns = np.sort(pos, axis=1), np.sort(neg, axis=1)
    pairs = np.empty(pos.shape[0])
    for r in range(pos.shape[0]):
        below = np.searchsorted(ns[r], ps[r], side="left")
        tied = np.searchsorted(ns[r], ps[r], side="right") - below
        pairs[r] = below.sum() + 0.5 * tied.sum()
    pairs[np.isnan(pos).any(axis=1) | np.isnan(neg).any(axis=1)] = np.nan
    return pairs / (p * n)


def fpr_at_tpr_rows(pos: np.ndarray, neg: np.ndarray, tpr: float) -> np.ndarray:
    """Smallest FPR with TPR >= `tpr` in every row (`roc.fpr_at_tpr`'s rule: the threshold is the
    ceil(tpr * P)-th highest positive score, and every score >= it is called positive)."""
    k = math.ceil(round(tpr * pos.shape[1], 9))
    if k == 0:
        return np.zeros(pos.shape[0])
    tau = -np.partition(-pos, k - 1, axis=1)[:, k - 1]
    return (neg >= tau[:, None]).mean(axis=1)


def batch_metric(name: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """`auc` or `fpr@95tpr` as a function of (pos [R, P], neg [R, N]) -> [R]."""
    if name == "auc":
        return auc_rows
    if name.startswith("fpr@") and name.endswith("tpr"):
        tpr = int(name[4:-3]) / 100
        return lambda pos, neg: fpr_at_tpr_rows(pos, neg, tpr)
    raise ValueError(f"no batched form of the metric {name!r} (auc, fpr@NNtpr)")


def binary_metric(name: str) -> ArmMetric:
    """A binary metric (`auc`, `fpr@95tpr`) as an `ArmMetric`. Every row must share its label
    pattern, as the stratified draws (positives first) and the full test set do."""
    fn = batch_metric(name)

    def metric(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
        y = np.asarray(labels[0]).astype(bool)
        return fn(scores[:, y], scores[:, ~y])
    return metric


def point(arm: np.ndarray, labels: np.ndarray, metric: str) -> float:
    """The metric of the arm's ensemble (all members) on all test samples."""
    s = np.asarray(arm, dtype=np.float64).mean(axis=0)
    return float(binary_metric(metric)(s[None], np.asarray(labels)[None])[0])


@dataclass(frozen=True)
class Arm:
    """One ensemble: its members' test outputs [M, N] (binary scores) or [M, N, C] (logits), the
    samples in the same order for every arm, and each member's training seed (None: unknown)."""

    scores: np.ndarray
    seeds: tuple[int, ...] | None = None

    @property
    def members(self) -> int:
        return int(np.shape(self.scores)[0])


def like_with_like(arms: Sequence[Arm]) -> tuple[list[Arm], bool]:
    """The arms cut to the smallest ensemble size k: each arm's first k members (members are numbered
    by seed, so arms stay paired seed by seed), since more members make a better ensemble whatever
    the method. Returns (arms, whether any was cut)."""
    k = min(a.members for a in arms)
    cut = [Arm(np.asarray(a.scores)[:k], tuple(a.seeds[:k]) if a.seeds else None) for a in arms]
    return cut, any(a.members > k for a in arms)


def _difference(values: np.ndarray) -> np.ndarray:
    return values[0] if len(values) == 1 else values[0] - values[1]


def _in_seed_order(arms: Sequence[Arm]) -> list[np.ndarray]:
    """Each paired arm's member outputs, reordered to the first arm's seeds (member i of every arm
    has the same seed)."""
    return [np.asarray(a.scores)[[list(a.seeds).index(s) for s in arms[0].seeds]] for a in arms]


def _paired_by_seed(arms: Sequence[Arm]) -> bool:
    seeds = [a.seeds for a in arms]
    return (len(arms) > 1 and all(s is not None and len(set(s)) == len(s) for s in seeds)
            and all(set(s) == set(seeds[0]) for s in seeds))


MAX_PAIRS = 126   # group pairs per size: C(10, 5) / 2, every split of 10 members in halves


def _group_pairs(m: int, h: int, rng: np.random.Generator, limit: int = MAX_PAIRS) -> np.ndarray:
    """[S, m] in {0, 1, 2}: member i in the first group of h (1), the second (2) or neither (0).
    Every unordered pair of disjoint groups where there are at most `limit` (every split of 10
    members in halves; all 3 pairs of single members of 3), else `limit` random pairs."""
    if math.comb(m, h) * math.comb(m - h, h) // 2 <= limit:
        rows = []
        for first in itertools.combinations(range(m), h):
            rest = [i for i in range(m) if i not in first]
            for second in itertools.combinations(rest, h):
                if first < second:       # each unordered pair once
                    row = np.zeros(m, int)
                    row[list(first)], row[list(second)] = 1, 2
                    rows.append(row)
        return np.array(rows)
    out = np.zeros((limit, m), int)
    for r in range(limit):
        perm = rng.permutation(m)
        out[r, perm[:h]], out[r, perm[h:2 * h]] = 1, 2
    return out


def _group_ensembles(scores: np.ndarray, groups: np.ndarray, which: int) -> np.ndarray:
    """[S, N, ...] the ensemble (mean output) of group `which` of every row of `groups`."""
    w = (groups == which).astype(np.float64)
    return np.tensordot(w / w.sum(1, keepdims=True), np.asarray(scores, dtype=np.float64), axes=1)


def group_sizes(m: int) -> tuple[int, ...]:
    """The ensemble sizes whose variance is measured: half the members, and a third where that is
    a smaller size (M = 10: 5 and 3; M = 5: 2 and 1; M = 3: 1)."""
    return tuple(dict.fromkeys(h for h in (m // 2, m // 3) if h >= 1))


SIZE_CORRELATION = 0.85  # of the two sizes' variance estimates (same members; measured 0.87 AUC, 0.81 FPR)


def extrapolate(sizes: Sequence[int], variances: Sequence[float], m: int) -> tuple[float, float]:
    """(variance, degrees of freedom) of the M-member ensemble's statistic from those measured on
    smaller ensembles of the same M members, on the model Var(h) = a / h + b / h^2, a, b >= 0: a is
    what members add independently (each one's own skill), b what averaging removes faster than
    1/h (the ensemble's noise level, which an AUC pays for squared).

    Two sizes fix a and b, and Var(M) = c1 v1 + c2 v2 with c2 < 0: the difference of two noisy
    estimates, which has fewer degrees of freedom than either. Its df is Welch-Satterthwaite's
    for that combination, each size's estimate taken at M - 1 df and the two correlated
    `SIZE_CORRELATION` (they come from the same members; the study measures the result). With
    one size, or a fit with a or b below 0, the 1/h law of the larger size is used (it over-states
    the variance where b > 0: conservative), at M - 1 df."""
    dof = float(max(m - 1, 1))
    if len(sizes) >= 2:
        (h1, v1), (h2, v2) = (sizes[0], variances[0]), (sizes[1], variances[1])
        b = (v2 * h2 - v1 * h1) / (1 / h2 - 1 / h1)
        a = v1 * h1 - b / h1
        if a >= 0 and b >= 0:
            k = (1 / (m * m) - 1 / (h1 * m)) / (1 / h2 - 1 / h1)
            c1, c2 = h1 * (1 / m - k), h2 * k          # Var(M) = c1 v1 + c2 v2
            var = c1 * v1 + c2 * v2
            spread = (c1 * v1) ** 2 + (c2 * v2) ** 2 + 2 * SIZE_CORRELATION * c1 * c2 * v1 * v2
            df = min(dof, dof * var * var / spread) if spread > 0 else dof
            return var, df
    return variances[0] * sizes[0] / m, dof


def _member_variance(arms: Sequence[Arm], ensembles: list[np.ndarray], labels: np.ndarray,
                     metric: ArmMetric, statistic: Statistic, values: np.ndarray, rng: np.random.Generator,
                     splits: int = MAX_PAIRS) -> tuple[float, float, bool]:
    """(variance, degrees of freedom, paired) of the statistic over members.

    The statistic is computed on disjoint groups of the members (halves, thirds), paired groups
    giving Var(h) = E[(first - second)^2] / 2 for groups of h; `extrapolate` carries it to all M.
    Unlike a leave-one-out jackknife, this stays consistent for metrics that move in steps with
    the scores (AUC and FPR@TPR count pairs or negatives that cross a threshold), and it does not
    assume the variance falls as 1/M where an ensemble's AUC gains faster than that."""
    y = np.asarray(labels)

    def measure(ens: np.ndarray) -> np.ndarray:
        return metric(ens, np.broadcast_to(y, (ens.shape[0], *y.shape)))

    def var_of(scored: list[np.ndarray], k: int | None, m: int) -> tuple[float, float]:
        sizes = group_sizes(m)
        variances = []
        for h in sizes:
            groups = _group_pairs(m, h, rng, splits)
            halves = []
            for which in (1, 2):
                if k is None:      # paired: the same seeds' groups in every arm
                    halves.append(statistic(np.stack([measure(_group_ensembles(s, groups, which))
                                                      for s in scored])))
                else:
                    v = np.repeat(values[:, None], len(groups), axis=1)
                    v[k] = measure(_group_ensembles(scored[0], groups, which))
                    halves.append(statistic(v))
            d = halves[0] - halves[1]
            variances.append(float(np.mean(d * d) / 2))
        return extrapolate(sizes, variances, m)

    if _paired_by_seed(arms) and arms[0].members >= 2:
        return (*var_of(_in_seed_order(arms), None, arms[0].members), True)
    parts = [var_of([np.asarray(a.scores)], k, a.members) for k, a in enumerate(arms) if a.members >= 2]
    var = sum(v for v, _ in parts)
    denom = sum(v * v / d for v, d in parts)
    return var, (var * var / denom if denom > 0 else math.inf), False


INTERACTION_SPLITS = 2   # splits of the members in halves that measure the interaction


def _interaction(arms: Sequence[Arm], idx: np.ndarray, yy: np.ndarray, metric: ArmMetric,
                 statistic: Statistic, per_arm: np.ndarray, paired: bool, rng: np.random.Generator
                 ) -> float:
    """The member-by-test-sample interaction inside the test-sample bootstrap's variance, which the
    member component already counts: the bootstrap variance of the statistic on one half of the
    members minus the other half (the test samples' own effect cancels in it), halved and scaled
    from halves of h members to all M (1/M, as an interaction averages over members)."""
    def halves(k: int | None) -> float:
        m = arms[0].members if k is None else arms[k].members
        h = m // 2
        scored = _in_seed_order(arms) if k is None else [np.asarray(a.scores) for a in arms]
        got = []
        for groups in _group_pairs(m, h, rng)[:INTERACTION_SPLITS]:
            sides = []
            for which in (1, 2):
                values = per_arm.copy()
                for j, scores in enumerate(scored):
                    if k is None or j == k:
                        ens = _group_ensembles(scores, groups[None], which)[0]
                        values[j] = metric(ens[idx], yy)
                sides.append(statistic(values))
            d = sides[0] - sides[1]
            d = d[np.isfinite(d)]
            got.append(float(np.var(d, ddof=1)) / 2 if d.size > 1 else 0.0)
        return float(np.mean(got)) * h / m

    if paired:
        return halves(None)
    return sum(halves(k) for k, a in enumerate(arms) if a.members >= 2)


def noise_of(arms: Sequence[Arm]) -> str:
    """Which noise a comparison of these arms covers."""
    if all(a.members >= 2 for a in arms):
        return "members (training seeds) and test samples"
    if any(a.members >= 2 for a in arms):
        return "test samples, and members of the ensembles among them"
    return "test samples only (single models)"


def compare(arms: Sequence[Arm], labels: np.ndarray, metric: ArmMetric | str,
            statistic: Statistic | None = None, n: int = 1000, seed: int = 0, level: float = 0.95,
            margin: float | None = None, stratified: bool = True, scale: float = 1.0,
            splits: int = MAX_PAIRS) -> dict:
    """The statistic of the arms' ensembles (default: the metric of one arm, or arm 0 − arm 1),
    with its standard error over members and test samples, interval, two-sided p of 0 and, with a
    `margin`, the TOST p of |statistic| < margin. Metric values are multiplied by `scale`
    (100: percent) before the statistic sees them. `n` test-sample replicates and `splits` pairs
    of member groups per size set how precisely the two components are estimated.

    Returns {diff, values, lo, hi, p, se, se_test, se_members, df, df_members, n, members, paired,
    noise, level}
    (+ margin, p_equiv). `diff` is the statistic's value whatever it is, `values` each arm's metric.
    """
    if isinstance(metric, str):
        metric = binary_metric(metric)
    statistic = statistic or _difference
    y = np.asarray(labels)
    arms = [a if isinstance(a, Arm) else Arm(np.asarray(a)) for a in arms]
    for a in arms:
        if np.shape(a.scores)[1] != y.size:
            raise ValueError(f"an arm must be [members, {y.size}, ...] outputs, got {np.shape(a.scores)}")
    ensembles = [np.asarray(a.scores, dtype=np.float64).mean(axis=0) for a in arms]

    def measured(e: np.ndarray, yy: np.ndarray) -> np.ndarray:
        return metric(e, yy) * scale

    values = np.array([measured(e[None], y[None])[0] for e in ensembles])
    value = float(statistic(values[:, None])[0])

    rng = np.random.default_rng(seed)
    idx = resample_indices(y, n, rng, stratified=stratified)
    yy = y[idx]
    per_arm = np.stack([measured(e[idx], yy) for e in ensembles])
    reps = statistic(per_arm)
    reps = reps[np.isfinite(reps)]
    var_t = float(np.var(reps, ddof=1)) if reps.size > 1 else 0.0
    var_m, df_m, paired = _member_variance(arms, ensembles, y, measured, statistic, values, rng, splits)
    var_t = max(0.0, var_t - _interaction(arms, idx, yy, measured, statistic, per_arm, paired, rng))

    var = var_t + var_m
    se = math.sqrt(var)
    df = var * var / (var_m * var_m / df_m) if var_m > 0 and math.isfinite(df_m) else math.inf
    half = (1 + level) / 2
    q = float(stats.t.ppf(half, df) if math.isfinite(df) else stats.norm.ppf(half))
    out = {"diff": value, "values": [float(v) for v in values], "lo": value - q * se, "hi": value + q * se,
           "p": _p_zero(value, se, df),
           "se": se, "se_test": math.sqrt(var_t), "se_members": math.sqrt(var_m), "df": df,
           "df_members": df_m,
           "n": int(reps.size),
           "members": tuple(a.members for a in arms), "paired": paired, "noise": noise_of(arms),
           "level": level}
    if margin is not None:
        out.update(margin=float(margin), p_equiv=equivalence_p(value, se, df, margin))
    return out


def _sf(x: float, df: float) -> float:
    return float(stats.t.sf(x, df) if math.isfinite(df) else stats.norm.sf(x))


def _p_zero(value: float, se: float, df: float) -> float:
    """Two-sided p of 'the statistic is 0' on the t reference."""
    if se == 0:
        return 1.0 if value == 0 else 0.0
    return min(1.0, 2 * _sf(abs(value) / se, df))


def equivalence_p(value: float, se: float, df: float, margin: float) -> float:
    """TOST: the larger of the one-sided p of 'statistic <= -margin' and of '>= margin'. At most
    α exactly when the (1 - 2α) interval lies inside (-margin, margin)."""
    if se == 0:
        return 0.0 if abs(value) < margin else 1.0
    return max(_sf((value + margin) / se, df), _sf((margin - value) / se, df))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error <= alpha when adjusted p <= alpha).

    NaN p-values are left out of the family and stay NaN.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    ok = np.flatnonzero(np.isfinite(p))
    out = np.full(p.shape, np.nan)
    order = ok[np.argsort(p[ok], kind="stable")]
    m = order.size
    running = 0.0
    for i, idx in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[idx]))
        out[idx] = running
    return out.tolist()
