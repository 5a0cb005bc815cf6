"""How often the tables' comparison test rejects a true null, and how often it finds a real difference.

    python scripts/study_verdicts.py [--quick] [--results results] [--out results/studies]

The test is `hightpr.metrics.comparison.compare` (members x test samples), the one every table,
claim and interval uses. Its truth is simulated from the committed members of the CPU block of
RankReg Table 1 (binary CIFAR-10 0 vs 1 at 1:100, test 1000 + 1000):

- the *population* is one row's ensemble scores s (the mean over its members, per test sample);
- a *member* is s + e, e a Gaussian combination of the real members' deviations from their
  rows' ensembles (every row of the block pooled, each rescaled to the population row's score
  spread): it has the real members' covariance across test samples, so members differ in skill
  and in which samples they get wrong as the trained ones do;
- *seeds*: member i of the two arms shares the seed's part of its deviation, as members of two
  rows trained with the same seed do (same data draw, initialisation, augmentation): their
  deviations correlate as the pool's same-seed members do on average (`seed_correlation`), and the
  test pairs them by seed, as the tables do;
- a *test set* is a stratified draw with replacement of the 1000 + 1000 test samples, the same
  for both arms (paired, as the tables' rows are);
- a *null*: two arms of M such members each, alike, or *differing* on a fraction of the samples:
  arm B's members (population and deviations) are relabelled among the samples of each class on a
  random fraction `differ` of them, which leaves every metric of arm B's ensembles on the full test
  set exactly as arm A's (AUC and FPR@TPR see only each class's scores) while the two rows now
  disagree sample by sample, as two methods do (the committed rows' ensembles correlate 0.74-0.96
  within a class; `Generator.pair_correlations`); an *alternative*: arm A's members score positives `shift`
  logits higher. The effect is the population difference of the metric, in points.

Each cell reports the rejection rate at α = 0.05 (two-sided) with its Wilson 95% interval; the
test's own test-sample bootstrap uses `--boot` replicates (the tables use 1000; the component it
estimates is unbiased at either, only noisier). Writes `verdicts.csv`, `verdicts.md` and
`verdicts.png` under `--out` (`--quick` writes to `<results>/studies/quick`).

Simulations run in chunks of CHUNK, each its own random stream, on `--jobs` processes: the numbers
are the same for any number of processes. Finished chunks are kept under `<out>/.chunks`, so a
stopped study, run again with the same pool and plan, simulates only what is missing.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np
import pandas as pd

from hightpr.metrics import comparison
from hightpr.tables.results import Outcome, _member_test

ALPHA = 0.05
METRICS = ("auc", "fpr@95tpr")
POPULATION = "cifar10_binary-bce-none-252993f6a7"   # RankReg Table 1's BCE row (cpu scale)
BLOCK = ("cifar10_binary-bce-none-252993f6a7", "cifar10_binary-bce-rankreg-31e9542fde",
         "cifar10_binary-bce-none-c79e21bf80", "cifar10_binary-bce-alm-33f5966971",
         "cifar10_binary-bce-rankreg-291d64d7fc")   # BCE, +RankReg, dual sampler, ALM μ0 1e-3, control
# 10 members, the size the tables decide at: 2000 nulls put a size near 0.04 within about ±0.009
# nulls: {members: {differ: simulations}}; alternatives are drawn alike (differ 0)
FULL = {"members": (3, 5, 10), "null_sims": {3: {0.0: 300, 0.1: 300}, 5: {0.0: 300, 0.1: 300},
                                             10: {0.0: 2000, 0.05: 600, 0.1: 1000, 0.25: 600}},
        "alt_sims": 60, "shifts": (0.5, 1.0, 1.5), "boot": 100, "splits": comparison.MAX_PAIRS}
QUICK = {"members": (10,), "null_sims": {10: {0.0: 200, 0.1: 200}}, "alt_sims": 40, "shifts": (0.5, 1.0),
         "boot": 30, "splits": comparison.MAX_PAIRS}
# Member splits as the tables use them (MAX_PAIRS): with fewer, the a/h + b/h² fit fails more often
# and its fallback changes the test's size, so a study on fewer would not measure the tables' test.


class Generator:
    """Members and test sets drawn around the committed members (see the module docstring)."""

    def __init__(self, pool: Path, population: str = POPULATION, block: tuple[str, ...] = BLOCK) -> None:
        rows = {}
        for key in block:
            path = Path(pool) / "ensembles" / key
            if path.is_dir():
                _, y, scores = _member_test(path, True)
                if scores.shape[0] >= 2:
                    rows[key] = scores
        if population not in rows:
            raise SystemExit(f"error: no committed members of {population} under {pool}/ensembles: "
                             "the study simulates from them (make table-rankreg-t1 SCALE=cpu)")
        self.y = y.astype(bool)
        self.mean = rows[population].mean(axis=0)
        spread = self.mean.std()
        deviations = [(s - s.mean(axis=0)) / s.mean(axis=0).std() * spread for s in rows.values()]
        self.deviations = np.concatenate(deviations)
        self.dof = sum(s.shape[0] - 1 for s in rows.values())
        self.rows = {k: s.shape[0] for k, s in rows.items()}
        self.ensembles = {k: s.mean(axis=0) for k, s in rows.items()}
        self.seed_correlation = seed_correlation(Path(pool) / "ensembles", rows)

    def pair(self, rng: np.random.Generator, m: int, shift: float = 0.0,
             differ: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Two arms of m members, member i of each sharing seed i's part of the deviation (its
        correlation `seed_correlation`); arm A's members score positives `shift` logits higher, and
        arm B's samples are relabelled within their class on a random fraction `differ` of them."""
        r = self.seed_correlation
        seeds = rng.normal(size=(m, self.deviations.shape[0]))
        arms = []
        for lift in (shift, 0.0):
            z = math.sqrt(r) * seeds + math.sqrt(1 - r) * rng.normal(size=seeds.shape)
            arms.append(self.mean + lift * self.y + z @ self.deviations / math.sqrt(self.dof))
        if differ > 0:
            order = np.arange(self.y.size)
            for cls in (True, False):
                chosen = np.flatnonzero(self.y == cls)
                chosen = chosen[rng.random(chosen.size) < differ]
                order[chosen] = rng.permutation(chosen)
            arms[1] = arms[1][:, order]
        return arms[0], arms[1]

    def correlation(self, a: np.ndarray, b: np.ndarray) -> float:
        """`alike` of two arms' ensembles."""
        return alike(a.mean(axis=0), b.mean(axis=0), self.y)

    def pair_correlations(self) -> list[float]:
        """`alike` of every pair of the committed rows the members are drawn from."""
        rows = list(self.ensembles.values())
        return [alike(a, b, self.y) for i, a in enumerate(rows) for b in rows[i + 1:]]

    def test_draw(self, rng: np.random.Generator) -> np.ndarray:
        pos, neg = np.flatnonzero(self.y), np.flatnonzero(~self.y)
        return np.r_[rng.choice(pos, pos.size), rng.choice(neg, neg.size)]

    def effect(self, metric: str, shift: float) -> float:
        """The population difference (points) of arm A's shift: the metric of s + shift on positives
        against s's, on the full test set."""
        fn = comparison.binary_metric(metric)
        y = self.y[None]
        return 100 * float(fn((self.mean + shift * self.y)[None], y)[0] - fn(self.mean[None], y)[0])


def row_seeds(ensembles: Path, key: str, members: int) -> tuple[int, ...] | None:
    """Each member's training seed, in `_member_test`'s order (None where one is unknown)."""
    return Outcome(key, {}, {}, members, ensembles / key).seeds


def alike(a: np.ndarray, b: np.ndarray, y: np.ndarray) -> float:
    """How alike two ensembles' scores are sample by sample: their correlation within each class,
    averaged over the two classes."""
    return float(np.mean([np.corrcoef(a[k], b[k])[0, 1] for k in (y, ~y)]))


def seed_correlation(ensembles: Path, rows: dict[str, np.ndarray]) -> float:
    """The mean correlation, over test samples, of two members' deviations from their rows'
    ensembles when the members share a training seed: over every pair of rows and every seed the
    two trained (0 where no two rows share a seed; never below 0)."""
    by_seed = {}
    for key, scores in rows.items():
        seeds = row_seeds(ensembles, key, scores.shape[0])
        if seeds is not None:
            dev = scores - scores.mean(axis=0)
            by_seed[key] = dict(zip(seeds, dev, strict=True))
    got = [np.corrcoef(a[s], b[s])[0, 1] for i, a in enumerate(by_seed.values())
           for b in list(by_seed.values())[i + 1:] for s in a.keys() & b.keys()]
    return max(0.0, float(np.mean(got))) if got else 0.0


Procedure = Callable[..., dict]
# How members and tests are drawn: a change to the drawing bumps it, so old chunks are not reused.
SIMULATION = 3
CHUNK = 100   # simulations per independent random stream: a cell's numbers do not depend on --jobs


def _chunk(gen: Generator, m: int, shift: float, first: int, count: int, boot: int, seed: int,
           procedure: Procedure, splits: int, stream: int, differ: float = 0.0) -> dict[str, np.ndarray]:
    """Simulations first..first+count-1 of one cell: per metric, rows of (p, diff, se, df), and each
    simulation's `Generator.correlation`. Their members and test sets come from the random stream
    (seed, stream); simulation s seeds its test."""
    began = time.perf_counter()
    rng = np.random.default_rng([seed, stream])
    seen: dict[str, list[tuple[float, float, float, float]]] = {metric: [] for metric in METRICS}
    seeds = tuple(range(1, m + 1))
    likeness = []
    for s in range(first, first + count):
        a, b = gen.pair(rng, m, shift, differ)
        likeness.append(gen.correlation(a, b))
        idx = gen.test_draw(rng)
        arms = [comparison.Arm(a[:, idx], seeds), comparison.Arm(b[:, idx], seeds)]
        for metric in METRICS:
            ev = procedure(arms, gen.y[idx], metric, n=boot, seed=s, splits=splits, scale=100)
            seen[metric].append((ev["p"], ev["diff"], ev.get("se", math.nan), ev.get("df", math.nan)))
    out = {metric: np.array(got, dtype=float).reshape(-1, 4) for metric, got in seen.items()}
    return {**out, "corr": np.array(likeness), "seconds": np.array(time.perf_counter() - began)}


def _summary(got: dict[str, np.ndarray]) -> dict[str, dict]:
    out = {}
    for metric, rows in got.items():
        p, diff, se, df = rows.T
        ratio = diff / se
        ok = np.isfinite(ratio)
        spread = float(np.var(ratio[ok], ddof=1)) if ok.sum() > 2 else math.nan
        out[metric] = {"rejections": int((p <= ALPHA).sum()), "sd_stat": float(np.std(diff, ddof=1)),
                       "rms_se": float(np.sqrt(np.nanmean(se * se))), "df_median": float(np.nanmedian(df)),
                       "sd_ratio": math.nan if math.isnan(spread) else math.sqrt(spread),
                       "df_matching": 2 * spread / (spread - 1) if spread > 1 else math.inf,
                       "corr_diff_se": (float(np.corrcoef(np.abs(diff[ok]), se[ok])[0, 1])
                                        if ok.sum() > 2 and np.std(se[ok]) > 0 else math.nan)}
    return out


def _pieces(sims: int) -> list[tuple[int, int]]:
    return [(first, min(CHUNK, sims - first)) for first in range(0, sims, CHUNK)]


def rejections(gen: Generator, m: int, shift: float, sims: int, boot: int, seed: int,
               procedure: Procedure = comparison.compare, splits: int = 126,
               differ: float = 0.0) -> dict[str, dict]:
    """Per metric: how many of `sims` simulated comparisons `procedure` rejects at ALPHA, and how
    its standard error and degrees of freedom compare with the statistic's spread over the sims."""
    parts = [_chunk(gen, m, shift, first, count, boot, seed, procedure, splits, first // CHUNK, differ)
             for first, count in _pieces(sims)]
    return _summary({metric: np.concatenate([p[metric] for p in parts]) for metric in METRICS})


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def _cell_seed(seed: int, m: int, shift: float, differ: float = 0.0) -> int:
    return seed + 1000 * m + int(100 * shift) + 100_000 * round(100 * differ)


class ChunkCache:
    """Finished chunks on disk (`<folder>/<key>.npz`), so an interrupted study resumes where it
    stopped. The key names everything a chunk's numbers depend on, the pool's members included."""

    def __init__(self, folder: Path | None, gen: Generator, plan: dict, procedure: Procedure) -> None:
        self.folder = folder
        pool = ",".join(f"{k}:{n}" for k, n in sorted(gen.rows.items()))
        self.base = (f"{SIMULATION}|{pool}|seeds {gen.seed_correlation:.9f}|{plan['boot']}|{plan['splits']}|"
                     f"{procedure.__module__}.{procedure.__name__}")

    def _path(self, *part: object) -> Path | None:
        if self.folder is None:
            return None
        digest = hashlib.sha256("|".join(map(str, (self.base, *part))).encode()).hexdigest()[:16]
        return self.folder / f"{digest}.npz"

    def get(self, *part: object) -> dict[str, np.ndarray] | None:
        path = self._path(*part)
        if path is None or not path.is_file():
            return None
        try:
            with np.load(path) as f:
                return {key: f[key] for key in (*METRICS, "corr", "seconds")}
        except (OSError, KeyError, ValueError):
            return None   # a damaged chunk is simulated again

    def put(self, got: dict[str, np.ndarray], *part: object) -> None:
        path = self._path(*part)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, **got)
            tmp.replace(path)


def cache_folder(given: str | None, out: Path) -> Path | None:
    """Where finished chunks are kept: `<out>/.chunks` unless a folder is given; 'none': nowhere."""
    if given is None:
        return out / ".chunks"
    return None if given.lower() == "none" else Path(given)


def study(gen: Generator, plan: dict, seed: int = 0, procedure: Procedure = comparison.compare,
          progress: bool = True, jobs: int = 1, cache: Path | None = None) -> pd.DataFrame:
    """Every cell of `plan` (members x shift, and the nulls' `differ`), its simulations run in chunks
    of CHUNK on `jobs` processes (the same numbers for any `jobs`); with `cache`, finished chunks are
    kept and reused."""
    store = ChunkCache(cache, gen, plan, procedure)
    cells = [(m, 0.0, differ, sims) for m in plan["members"] for differ, sims in plan["null_sims"][m].items()]
    cells += [(m, shift, 0.0, plan["alt_sims"]) for m in plan["members"] for shift in plan["shifts"]]
    tasks = [(m, shift, differ, first, count) for m, shift, differ, sims in cells
             for first, count in _pieces(sims)]

    def part(task: tuple) -> tuple:   # the chunk's name in the cache
        m, shift, differ, first, count = task
        return (m, shift, differ, first, count, _cell_seed(seed, m, shift, differ))

    done: dict[tuple, dict[str, np.ndarray]] = {}
    for task in tasks:
        got = store.get(*part(task))
        if got is not None:
            done[task[:4]] = got
    todo = [t for t in tasks if t[:4] not in done]
    began = time.perf_counter()
    if progress and done:
        print(f"{len(done)} of {len(tasks)} chunks already simulated ({cache})", flush=True)

    def finished(task: tuple, got: dict[str, np.ndarray]) -> None:
        m, shift, differ, first, count = task
        store.put(got, *part(task))
        done[task[:4]] = got
        if progress:
            print(f"M={m} shift={shift:g} differ={differ:g} sims {first}-{first + count - 1}: "
                  + ", ".join(f"{k} {int((got[k][:, 0] <= ALPHA).sum())}/{count}" for k in METRICS)
                  + f" ({len(done)}/{len(tasks)}, {time.perf_counter() - began:.0f} s)", flush=True)

    def args(task: tuple) -> tuple:
        m, shift, differ, first, count = task
        return (gen, m, shift, first, count, plan["boot"], _cell_seed(seed, m, shift, differ), procedure,
                plan["splits"], first // CHUNK, differ)

    if jobs > 1 and len(todo) > 1:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = {pool.submit(_chunk, *args(t)): t for t in todo}
            for future in as_completed(futures):
                finished(futures[future], future.result())
    else:
        for task in todo:
            finished(task, _chunk(*args(task)))
    rows = []
    for m, shift, differ, sims in cells:
        chunks = [done[(m, shift, differ, first)] for first, _ in _pieces(sims)]
        got = _summary({metric: np.concatenate([c[metric] for c in chunks]) for metric in METRICS})
        likeness = float(np.mean(np.concatenate([c["corr"] for c in chunks])))
        for metric, seen in got.items():
            k = seen["rejections"]
            lo, hi = wilson(k, sims)
            rows.append({"metric": metric, "members": m, "shift": shift, "differ": differ, "corr": likeness,
                         "effect": gen.effect(metric, shift), "sims": sims, "rejections": k,
                         "rate": k / sims, "ci_low": lo, "ci_high": hi,
                         "sd_stat": seen["sd_stat"], "rms_se": seen["rms_se"],
                         "df_median": seen["df_median"], "sd_ratio": seen["sd_ratio"],
                         "df_matching": seen["df_matching"], "corr_diff_se": seen["corr_diff_se"],
                         "boot": plan["boot"], "splits": plan["splits"]})
    df = pd.DataFrame(rows)
    df.attrs["seconds"] = float(sum(float(got["seconds"]) for got in done.values()))
    return df


def power_at(df: pd.DataFrame, metric: str, members: int, power: float = 0.8) -> float | None:
    """The smallest simulated |effect| (points) at which the rejection rate reaches `power`."""
    d = df[(df.metric == metric) & (df.members == members) & (df["shift"] > 0)].sort_values("shift")
    hit = d[d.rate >= power]
    return float(abs(hit.effect.iloc[0])) if len(hit) else None


# The differences the paper claims in the BCE block (RankReg Table 1, points): RankReg against BCE
# and against +ALM as printed; the dual sampler and the control are not in the paper, so RankReg's
# claimed gain over BCE is what they would have to fall short of.
CLAIMED = {"BCE": {"auc": 94.3 - 91.2, "fpr@95tpr": 45.0 - 26.2},
           "BCE + ALM μ0 = 1e-3": {"auc": 94.3 - 93.1, "fpr@95tpr": 34.0 - 26.2},
           "BCE, dual sampler": {"auc": 94.3 - 91.2, "fpr@95tpr": 45.0 - 26.2},
           "RankReg's setup, ranking weight 0": {"auc": 94.3 - 91.2, "fpr@95tpr": 45.0 - 26.2}}
AGAINST = {"BCE": BLOCK[0], "BCE + ALM μ0 = 1e-3": BLOCK[3], "BCE, dual sampler": BLOCK[2],
           "RankReg's setup, ranking weight 0": BLOCK[4]}


def budget(pool: Path, boot: int = 200, most: int = 60) -> pd.DataFrame:
    """Members needed for 80% power (α = 0.05, two-sided, one test) to detect the paper's claimed
    difference between +RankReg and each row it is compared with, from the committed members: the
    test-sample variance as measured, the member variance carried from M to m members by 1/m (the
    a/h + b/h² fit's upper bound, conservative where an ensemble's AUC gains faster), its degrees of
    freedom the same share of m - 1 as the comparison's member component has of M - 1 now."""
    from scipy import stats

    def arm(key: str) -> tuple[np.ndarray, comparison.Arm] | None:
        path = Path(pool) / "ensembles" / key
        if not path.is_dir():
            return None
        _, y, scores = _member_test(path, True)
        seeds = row_seeds(Path(pool) / "ensembles", key, scores.shape[0])
        return y.astype(bool), comparison.Arm(scores, seeds)

    rankreg = arm(BLOCK[1])
    rows = []
    for name, key in AGAINST.items():
        other = arm(key)
        if rankreg is None or other is None or rankreg[1].members < 2 or other[1].members < 2:
            continue
        y = rankreg[0]
        m_now = min(rankreg[1].members, other[1].members)     # like with like, as the tables compare
        pair = [comparison.Arm(a.scores[:m_now], a.seeds[:m_now] if a.seeds else None)
                for a in (rankreg[1], other[1])]
        for metric, effect in CLAIMED[name].items():
            ev = comparison.compare(pair, y, metric, n=boot, scale=100)

            def needed(effect: float, ev=ev, m_now=m_now) -> int | None:
                for m in range(2, most + 1):
                    se = math.sqrt(ev["se_test"] ** 2 + ev["se_members"] ** 2 * m_now / m)
                    vm = ev["se_members"] ** 2 * m_now / m
                    dfm = ev["df_members"] * (m - 1) / max(m_now - 1, 1)   # the same share of m - 1
                    df = (se ** 4) / (vm * vm / dfm) if vm > 0 else math.inf
                    crit = stats.t.ppf(0.975, df) if math.isfinite(df) else stats.norm.ppf(0.975)
                    if stats.norm.sf(crit - abs(effect) / se) >= 0.8:
                        return m
                return None
            ours = -ev["diff"] if metric.startswith("fpr") else ev["diff"]
            rows.append({"against": name, "metric": metric, "claimed": effect, "ours": ours,
                         "members_now": m_now, "se_now": ev["se"], "se_test": ev["se_test"],
                         "se_members": ev["se_members"],
                         "members_needed": needed(effect), "members_needed_ours": needed(ours)})
    return pd.DataFrame(rows)


def markdown(df: pd.DataFrame, gen: Generator, plan: dict, seconds: float,
             budget_df: pd.DataFrame | None = None, pairs: list[float] | None = None) -> str:
    null = df[df["shift"] == 0]
    lines = ["# Size and power of the tables' comparison test", "",
             f"Simulated from the committed members of {len(gen.rows)} rows of RankReg Table 1's CPU "
             f"block ({sum(gen.rows.values())} members; population: the BCE row's ensemble), test 1000 + "
             f"1000 drawn with replacement; α = {ALPHA}, two-sided; {plan['boot']} test-sample replicates "
             f"and {plan['splits']} member splits per size inside each test (the tables: 1000 and 126); "
             f"{seconds:.0f} s of simulation (summed over its processes). "
             "`python scripts/study_verdicts.py` (make study-verdicts).", "",
             "## Size: rejection rate under the null", "",
             f"Member i of the two arms shares its seed's part of the deviation (correlation "
             f"{gen.seed_correlation:.2f}, the pool's same-seed members' mean), and the test pairs them by "
             "seed. *rows differ on*: the fraction of samples on which arm B's members are relabelled within "
             "their class (0: the two arms are drawn alike; any fraction leaves the null exact); *alike*: "
             "the two arms' ensembles' correlation within a class, mean over the nulls"
             + (f" (the committed rows of the block, pair by pair: {min(pairs):.2f}-{max(pairs):.2f}, "
                f"median {float(np.median(pairs)):.2f})" if pairs else "")
             + ". *spread*: the SD of the difference over the simulated nulls (points); *se*: the test's "
             "standard error, root mean square over them (their ratio near 1: the variance is right on "
             "average); *df*: the median degrees of freedom of its t reference; *SD of t*: the SD of "
             "difference / se over the nulls, and *df of that SD*: the degrees of freedom of the t "
             "distribution with that SD (∞: at most 1); *corr*: the correlation of |difference| with se.", "",
             "| metric | members | rows differ on | alike | simulations | rejected | 95% interval | spread "
             "| se | se / spread | df | SD of t | df of that SD | corr |",
             "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in null.sort_values(["metric", "members", "differ"], kind="stable").itertuples():
        lines.append(f"| {r.metric} | {r.members} | {r.differ:g} | {r.corr:.2f} | {r.sims} | {r.rate:.3f} "
                     f"| [{r.ci_low:.3f}, {r.ci_high:.3f}] | {r.sd_stat:.2f} | {r.rms_se:.2f} "
                     f"| {r.rms_se / r.sd_stat:.2f} | {r.df_median:.1f} | {r.sd_ratio:.2f} "
                     f"| {r.df_matching:.1f} | {r.corr_diff_se:+.2f} |")
    lines += ["", "## Power: rejection rate against the effect (points)", "",
              "| metric | members | shift (logits) | effect (points) | simulations | rejected |",
              "|---|---:|---:|---:|---:|---:|"]
    for r in df[df["shift"] > 0].itertuples():
        lines.append(f"| {r.metric} | {r.members} | {r.shift:g} | {r.effect:+.2f} | {r.sims} "
                     f"| {r.rate:.2f} |")
    lines += ["", "Smallest simulated effect with power >= 0.8:", ""]
    for metric in METRICS:
        for m in sorted(df.members.unique()):
            e = power_at(df, metric, m)
            found = f"{e:.2f} points" if e is not None else "not reached"
            lines.append(f"- {metric}, {m} members: {found}")
    if budget_df is not None and len(budget_df):
        lines += ["", "## The budget that decides: members for 80% power at the paper's claimed differences",
                  "",
                  "+RankReg against each row of the BCE block, from the committed members (α = 0.05, "
                  "two-sided, one test; Holm over a table's family asks for more). *claimed*: the paper's "
                  "difference in points (the dual sampler and the control are not in the paper: RankReg's "
                  "claimed gain over BCE); *ours*: our difference, RankReg better when positive.", "",
                  "| against | metric | claimed | ours | members now | se now "
                  "| members needed for the claimed | for ours |", "|---|---|---:|---:|---:|---:|---:|---:|"]

        def need(m: float, effect: float, se_test: float) -> str:
            if m == m and m is not None:
                return str(int(m))
            return "over 60" if abs(effect) / max(se_test, 1e-12) >= 2.8 else "never (the test set's noise)"
        for r in budget_df.itertuples():
            lines.append(f"| {r.against} | {r.metric} | {r.claimed:.1f} | {r.ours:+.1f} | {r.members_now} "
                         f"| {r.se_now:.2f} | {need(r.members_needed, r.claimed, r.se_test)} "
                         f"| {need(r.members_needed_ours, r.ours, r.se_test)} |")
    return "\n".join(lines) + "\n"


def figure(df: pd.DataFrame, out: Path, pairs: list[float] | None = None) -> Path:
    """Top: rejection rate against the effect (arms drawn alike). Bottom: the nulls' rejection rate
    against how alike the two arms' ensembles are, the committed rows' pairs shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, len(METRICS), figsize=(10, 7.5))
    for col, metric in enumerate(METRICS):
        ax, low = axes[0, col], axes[1, col]
        for m in sorted(df.members.unique()):
            d = df[(df.metric == metric) & (df.members == m) & (df.differ == 0)].sort_values("shift")
            ax.errorbar(d.effect.abs(), d.rate, yerr=[d.rate - d.ci_low, d.ci_high - d.rate], marker="o",
                        capsize=2, label=f"{m} members")
            n = df[(df.metric == metric) & (df.members == m) & (df["shift"] == 0)].sort_values("corr")
            low.errorbar(n["corr"], n.rate, yerr=[n.rate - n.ci_low, n.ci_high - n.rate], marker="o",
                         capsize=2, label=f"{m} members")
        ax.axhline(ALPHA, color="grey", lw=0.8, ls="--")
        ax.axhline(0.8, color="grey", lw=0.8, ls=":")
        ax.set_xlabel(f"|effect| on {metric} (points)")
        ax.set_ylabel("rejection rate (α = 0.05)")
        ax.set_ylim(0, 1)
        ax.legend()
        if pairs:
            low.axvspan(min(pairs), max(pairs), color="tab:green", alpha=0.12,
                        label="committed rows' pairs (10 members)")
        low.axhspan(0.03, 0.07, color="grey", alpha=0.12)
        low.axhline(ALPHA, color="grey", lw=0.8, ls="--")
        low.set_xlabel("how alike the arms are (ensembles' correlation within a class)")
        low.set_ylabel(f"nulls rejected, {metric}")
        low.set_ylim(0, 0.12)
        low.legend(fontsize=8)
    fig.suptitle("Comparison test: size and power, simulated from the CPU block's members")
    fig.tight_layout()
    path = out / "verdicts.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer members, simulations and replicates")
    parser.add_argument("--results", type=Path, default=Path("results"), help="results root holding runs/")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: <results>/studies, --quick: <results>/studies/quick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="processes simulating chunks at once (the numbers do not depend on it)")
    parser.add_argument("--cache", default=None,
                        help="where finished chunks are kept, so a stopped study resumes "
                             "(default: <out>/.chunks; 'none': keep nothing)")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs {args.jobs}: give 1 or more processes")
    plan = QUICK if args.quick else FULL
    out = args.out or args.results / "studies" / ("quick" if args.quick else "")
    out.mkdir(parents=True, exist_ok=True)
    gen = Generator(args.results / "runs" / "cpu")
    cache = cache_folder(args.cache, out)
    df = study(gen, plan, args.seed, jobs=args.jobs, cache=cache)
    seconds = df.attrs["seconds"]
    df.to_csv(out / "verdicts.csv", index=False, float_format="%.6g")
    needed = budget(args.results / "runs" / "cpu", boot=plan["boot"])
    needed.to_csv(out / "budget.csv", index=False, float_format="%.6g")
    pairs = gen.pair_correlations()
    (out / "verdicts.md").write_text(markdown(df, gen, plan, seconds, needed, pairs))
    for r in needed.itertuples():
        print(f"members for 80% power, RankReg vs {r.against}, {r.metric} (claimed {r.claimed:.1f}): "
              f"{r.members_needed}")
    png = figure(df, out, pairs)
    null = df[df["shift"] == 0]
    for r in null.itertuples():
        print(f"size {r.metric} {r.members} members, rows differ on {r.differ:g} (alike {r.corr:.2f}): "
              f"{r.rate:.3f} [{r.ci_low:.3f}, {r.ci_high:.3f}] "
              f"({r.sims} simulations)")
    for metric in METRICS:
        for m in sorted(df.members.unique()):
            e = power_at(df, metric, m)
            print(f"power >= 0.8 at {metric}, {m} members: " + (f"{e:.2f} points" if e is not None else
                                                                  "not reached"))
    print(f"wrote {out / 'verdicts.csv'}, {out / 'verdicts.md'}, {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
