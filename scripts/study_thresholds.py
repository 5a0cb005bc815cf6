"""Which validation threshold keeps its TPR promise: np, ltt, crc and the plain quantile, re-split many times.

    python scripts/study_thresholds.py [--quick] [--results results] [--out results/studies]

For synthetic binormal scores (negatives N(0, 1), positives N(mu, 1): the population TPR and FPR of
any threshold are exact) and for every committed run or ensemble with saved validation and test
logits under `<results>/runs/<scale>/` (validation and test pooled, then re-split at random,
stratified, many times), each rule picks its threshold on the validation positives and is judged
on what it promised: the violation rate P(test TPR < target) with its Wilson 95% interval, the mean
FPR paid, and the oracle FPR (synthetic: exact; real: the held-out part's own FPR at the target).

Every rule picks an order statistic s_(k) of the n validation positives, k = `rule.order(n, tpr,
delta)`, so thousands of draws are numpy arrays; a few draws per setting are checked against
`rule_threshold` itself. On real scores the held-out negatives are a uniform random subset,
independent of the positives' split, so the held-out FPR at t has mean (pool negatives >= t) / N:
the mean FPR is computed exactly given each draw's threshold. The held-out positives are simulated.

Writes `thresholds.csv` (tidy: one row per source x rule x target x delta x n_pos), `thresholds.md`
and `thresholds.png` / `thresholds.svg` under `--out` (default `<results>/studies`; `--quick` writes
to `<results>/studies/quick`, so it never replaces the full study's files).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import norm

from hightpr.metrics.thresholds import RULES, rule_level, rule_threshold
from hightpr.runs import load_logits

TARGETS = (0.90, 0.95, 0.98)
DELTAS = (0.05, 0.10)
FULL = {"n_pos": (59, 100, 149, 200, 300, 500, 1000), "synthetic_draws": 50000, "real_draws": 10000}
QUICK = {"n_pos": (59, 100, 300), "synthetic_draws": 10000, "real_draws": 2000}
MUS = (2.0,)          # binormal separations (AUC = Phi(mu / sqrt 2): 0.921 at mu = 2)
CHUNK = 2000          # draws per numpy block (memory)
CHECKED_DRAWS = 2     # draws per setting recomputed by `rule_threshold` itself


def wilson(k: np.ndarray | int, n: np.ndarray | int, z: float = 1.959964) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a binomial proportion k / n (95% by default)."""
    k, n = np.asarray(k, float), np.asarray(n, float)
    with np.errstate(divide="ignore", invalid="ignore"):  # n = 0: no draws, NaN interval
        p = k / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def orders(n: int) -> dict[tuple[str, float, float], int | None]:
    """k of every rule x target x delta at n validation positives (None: the rule has no threshold)."""
    out = {}
    for name, rule in RULES.items():
        for tpr in TARGETS:
            for delta in DELTAS:
                try:
                    out[name, tpr, delta] = rule.order(n, tpr, delta)
                except ValueError:
                    out[name, tpr, delta] = None
    return out


def count_target(tpr: float, m: int) -> int:
    """Fewest true positives out of m with TPR >= tpr (the project's integer target)."""
    return math.ceil(round(tpr * m, 9))


@dataclass
class Tally:
    """Sums over draws for one (source, n, k): violations per target, FPR and TPR sums."""

    draws: int = 0
    fpr: float = 0.0
    tpr: float = 0.0
    violations: dict | None = None

    def add(self, tpr: np.ndarray, fpr: np.ndarray, violated: dict[float, np.ndarray]) -> None:
        self.draws += tpr.size
        self.tpr += float(tpr.sum())
        self.fpr += float(fpr.sum())
        self.violations = self.violations or dict.fromkeys(TARGETS, 0)
        for t, v in violated.items():
            self.violations[t] += int(v.sum())


def check_rules(val_pos: np.ndarray, ks: dict, scores_of) -> None:
    """The vectorised threshold s_(k) equals `rule_threshold` on the same validation positives."""
    for (name, tpr, delta), k in ks.items():
        if k is None:
            continue
        for d in range(min(CHECKED_DRAWS, val_pos.shape[0])):
            s, y = scores_of(val_pos[d])
            expected = rule_threshold(s, y, tpr, delta, name)
            if val_pos[d, k - 1] != expected:
                raise AssertionError(f"{name} at n={val_pos.shape[1]}: s_(k) {val_pos[d, k - 1]} "
                                     f"!= rule_threshold {expected}")


def synthetic(mu: float, n: int, draws: int, rng: np.random.Generator) -> tuple[dict, dict]:
    """Tallies per k and the exact oracle FPR per target, for binormal scores at separation mu."""
    ks = orders(n)
    tallies = {k: Tally() for k in set(ks.values()) if k is not None}
    for start in range(0, draws, CHUNK):
        val = np.sort(rng.normal(mu, 1.0, size=(min(CHUNK, draws - start), n)), axis=1)
        if start == 0:
            check_rules(val, ks, lambda p: (np.r_[p, -50.0], np.r_[np.ones(p.size, int), 0]))
        for k, tally in tallies.items():
            t = val[:, k - 1]
            true_tpr, true_fpr = norm.sf(t - mu), norm.sf(t)
            tally.add(true_tpr, true_fpr, {b: true_tpr < b for b in TARGETS})
    oracle = {b: float(norm.sf(mu - norm.ppf(b))) for b in TARGETS}
    return ks, tallies, oracle


def real(pos: np.ndarray, neg: np.ndarray, n: int, draws: int, rng: np.random.Generator):
    """Tallies per k and the mean oracle FPR per target for `draws` stratified re-splits of a pool."""
    pos, neg = np.sort(pos), np.sort(neg)
    big_p, big_n, m = pos.size, neg.size, pos.size - n
    ks = orders(n)
    tallies = {k: Tally() for k in set(ks.values()) if k is not None}
    oracle_sum = dict.fromkeys(TARGETS, 0.0)
    need = {b: count_target(b, m) for b in TARGETS}
    for start in range(0, draws, CHUNK):
        d = min(CHUNK, draws - start)
        ranks = np.sort(np.argpartition(rng.random((d, big_p)), n - 1, axis=1)[:, :n], axis=1)
        val = pos[ranks]
        if start == 0:
            check_rules(val, ks, lambda p: (np.r_[p, neg[:1]], np.r_[np.ones(p.size, int), 0]))
        for k, tally in tallies.items():
            t = val[:, k - 1]
            pool_ge = big_p - np.searchsorted(pos, t, side="left")
            val_ge = n - (val < t[:, None]).sum(axis=1)
            held_tp = pool_ge - val_ge
            fpr = (big_n - np.searchsorted(neg, t, side="left")) / big_n
            tally.add(held_tp / m, fpr, {b: held_tp < need[b] for b in TARGETS})
        # oracle: the held-out positives' own threshold, the need[b]-th largest of them
        held = np.ones((d, big_p), bool)
        np.put_along_axis(held, ranks, False, axis=1)
        from_top = np.cumsum(held[:, ::-1], axis=1)
        for b in TARGETS:
            idx = big_p - 1 - np.argmax(from_top >= need[b], axis=1)
            t = pos[idx]
            oracle_sum[b] += float(((big_n - np.searchsorted(neg, t, side="left")) / big_n).sum())
    return ks, tallies, {b: oracle_sum[b] / draws for b in TARGETS}


def rows_of(source: dict, n: int, ks: dict, tallies: dict, oracle: dict) -> list[dict]:
    """Tidy rows of one source at one n: rule x target x delta."""
    rows = []
    for (name, tpr, delta), k in ks.items():
        row = {**source, "rule": name, "target": tpr, "delta": delta, "n_pos": n, "k": k}
        if k is None:
            rows.append({**row, "exists": False, "draws": 0})
            continue
        tally = tallies[k]
        level = rule_level(n, k, tpr)
        rows.append({**row, "exists": True, "draws": tally.draws, "violations": tally.violations[tpr],
                     "violation_rate": tally.violations[tpr] / tally.draws,
                     "mean_fpr": tally.fpr / tally.draws, "oracle_fpr": oracle[tpr],
                     "mean_tpr": tally.tpr / tally.draws, "exact_violation": level["violation_probability"],
                     "expected_fnr": level["expected_fnr"]})
    return rows


def real_sources(results: Path) -> list[tuple[str, str, np.ndarray, np.ndarray]]:
    """(name, scale, positive scores, negative scores) of every binary run with val and test logits."""
    out = []
    for val_file in sorted((results / "runs").glob("*/**/logits_val.npz")):
        test_file = val_file.with_name("logits_test.npz")
        if not test_file.is_file():
            continue
        val, test = load_logits(val_file), load_logits(test_file)
        logits = val.get("logits")
        if logits is not None and logits.ndim == 2 and logits.shape[1] > 2:
            continue  # multi-class: no binary threshold
        s = np.r_[val["scores"], test["scores"]].astype(np.float64)
        y = np.r_[val["labels"], test["labels"]]
        if not np.isin(y, (0, 1)).all():
            continue
        rel = val_file.parent.relative_to(results / "runs")
        out.append((str(rel), rel.parts[0], s[y == 1], s[y == 0]))
    return out


def pooled(df: pd.DataFrame) -> pd.DataFrame:
    """The real sources together: violations and draws summed, FPRs averaged (one row per setting)."""
    real_rows = df[(df.kind == "real") & df.exists]
    if real_rows.empty:
        return real_rows
    keys = ["rule", "target", "delta", "n_pos", "k"]
    g = real_rows.groupby(keys, as_index=False).agg(
        draws=("draws", "sum"), violations=("violations", "sum"), mean_fpr=("mean_fpr", "mean"),
        oracle_fpr=("oracle_fpr", "mean"), mean_tpr=("mean_tpr", "mean"),
        exact_violation=("exact_violation", "first"), expected_fnr=("expected_fnr", "first"),
        sources=("source", "nunique"))
    g["violation_rate"] = g.violations / g.draws
    g["source"] = f"real (pooled, {g.sources.max()} runs)"
    g["kind"], g["exists"] = "real-pooled", True
    return g.drop(columns="sources")


def fmt_rate(row) -> str:
    return f"{row.violation_rate:.3f} [{row.ci_low:.3f}, {row.ci_high:.3f}]"


def markdown(df: pd.DataFrame, args, seconds: float, sources: list) -> str:
    """The study's tables: the headline, then every target and delta for synthetic and pooled real."""
    rules = list(RULES)
    lines = ["# Which threshold keeps its TPR promise", "",
             f"`scripts/study_thresholds.py{' --quick' if args.quick else ''}` "
             f"({seconds / 60:.1f} min on {os.cpu_count()} CPU cores). Violation rate: P(test TPR < target) "
             "over re-splits, with its Wilson 95% interval; FPR: mean FPR paid at the rule's threshold; "
             "oracle: the FPR at the target picked on the test part itself. `exact`: P(Binomial(n, 1 - "
             "target) <= k - 1), the violation probability of the k-th lowest of n positives for continuous "
             "scores.", ""]
    syn = sorted(df[df.kind == "synthetic"].source.unique())
    pool = df[df.kind == "real-pooled"]
    held = sorted({int(p) for p in df[df.kind == "real"].pool_pos.unique()})
    lines += [f"Synthetic: {', '.join(syn)}; {int(df[df.kind == 'synthetic'].draws.max())} draws per "
              "setting, population TPR and FPR exact.",
              f"Real: {len(sources)} committed runs and ensembles (validation + test pooled: "
              f"{', '.join(map(str, held))} positives); {int(df[df.kind == 'real'].draws.max())} stratified "
              "re-splits per run and setting; the test TPR is measured on the held-out positives, so "
              "validation sizes stop at half the pool (the held-out part must stay large for its TPR to "
              "mean something): " + ", ".join(str(n) for n in sorted(df[df.kind == 'real'].n_pos.unique()))
              + " positives.", ""]

    def table(sub: pd.DataFrame, tpr: float, delta: float) -> list[str]:
        sizes = sorted(sub.n_pos.unique())
        out = ["| rule | " + " | ".join(f"n = {n}" for n in sizes) + " |",
               "|---|" + "---|" * len(sizes)]
        for what in ("violation", "FPR"):
            for r in rules:
                cells = []
                for n in sizes:
                    row = sub[(sub.rule == r) & (sub.target == tpr) & (sub.delta == delta) & (sub.n_pos == n)]
                    if row.empty or not bool(row.iloc[0].exists):
                        cells.append("—")
                        continue
                    row = row.iloc[0]
                    cells.append(fmt_rate(row) if what == "violation" else f"{row.mean_fpr:.3f}")
                out.append(f"| {r} {what} | " + " | ".join(cells) + " |")
        orc = []
        for n in sizes:
            row = sub[(sub.target == tpr) & (sub.n_pos == n) & sub.exists]
            orc.append(f"{row.oracle_fpr.iloc[0]:.3f}" if not row.empty else "—")
        out.append("| oracle FPR | " + " | ".join(orc) + " |")
        return out

    head = df[(df.target == 0.95) & (df.delta == 0.05) & (df.n_pos == 100) & df.exists
              & df.kind.isin(["synthetic", "real-pooled"])]
    lines += ["## Headline: target 0.95, δ = 0.05, 100 validation positives", "",
              "| scores | rule | k | violation rate [95% CI] | exact | mean test TPR | mean FPR "
              "| oracle FPR |",
              "|---|---|---|---|---|---|---|---|"]
    head = head.assign(order=head.rule.map(rules.index))
    for _, row in head.sort_values(["kind", "source", "order"], ascending=[False, True, True]).iterrows():
        lines.append(f"| {row.source} | {row.rule} | {int(row.k)} | {fmt_rate(row)} | "
                     f"{row.exact_violation:.3f} | {row.mean_tpr:.4f} | {row.mean_fpr:.3f} | "
                     f"{row.oracle_fpr:.3f} |")
    lines.append("")
    for kind, title in (("synthetic", "Synthetic"), ("real-pooled", "Real scores, pooled over runs")):
        for source in sorted(df[df.kind == kind].source.unique()):
            sub = df[(df.kind == kind) & (df.source == source)]
            for tpr in TARGETS:
                for delta in DELTAS:
                    lines += [f"## {title}: {source}, target {tpr:g}, δ = {delta:g}", "",
                              *table(sub, tpr, delta), ""]
    if pool.empty:
        lines += ["(No committed runs with validation and test logits were found.)", ""]
    lines += ["crc and quantile ignore δ (their rows repeat across δ). Per-run rows: `thresholds.csv`.", ""]
    return "\n".join(lines)


def figure(df: pd.DataFrame, out: Path) -> list[Path]:
    """Violation rate and FPR paid against n_pos, per target (δ = 0.05): synthetic solid, real dashed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullLocator

    colours = {"np": "tab:blue", "ltt": "tab:cyan", "crc": "tab:orange", "quantile": "tab:red"}
    fig = Figure(figsize=(13, 7.5))
    FigureCanvasAgg(fig)
    axes = fig.subplots(2, len(TARGETS), sharex=True)
    delta = 0.05
    for j, tpr in enumerate(TARGETS):
        top, bottom = axes[0, j], axes[1, j]
        for kind, style in (("synthetic", "-"), ("real-pooled", "--")):
            sub = df[(df.kind == kind) & (df.target == tpr) & (df.delta == delta) & df.exists]
            if sub.empty:
                continue
            first = sorted(sub.source.unique())[0]
            sub = sub[sub.source == first]
            for rule, colour in colours.items():
                r = sub[sub.rule == rule].sort_values("n_pos")
                if r.empty:
                    continue
                # ltt picks the same threshold as np: crosses only, so the np line stays visible
                line = ({"ls": "none", "marker": "x", "ms": 6} if rule == "ltt"
                        else {"ls": style, "marker": "o", "ms": 3})
                lab = f"{rule} ({'synthetic' if kind == 'synthetic' else 'real'})"
                err = [r.violation_rate - r.ci_low, r.ci_high - r.violation_rate]
                top.errorbar(r.n_pos, r.violation_rate, yerr=err, color=colour, label=lab, capsize=2, **line)
                bottom.plot(r.n_pos, r.mean_fpr, color=colour, label=lab, **line)
            o = sub.groupby("n_pos").oracle_fpr.first()
            bottom.plot(o.index, o.values, ls=style, color="black", lw=1,
                        label=f"oracle ({'synthetic' if kind == 'synthetic' else 'real'})")
        top.axhline(delta, color="grey", lw=0.8, ls=":")
        top.set_title(f"target TPR {tpr:g}, δ = {delta:g}")
        top.set_yscale("symlog", linthresh=0.01)
        top.set_ylim(0, 1)
        top.set_ylabel("P(test TPR < target)")
        bottom.set_ylabel("mean FPR paid")
        bottom.set_xlabel("validation positives n")
        sizes = sorted(df[df.exists].n_pos.unique())
        for ax in (top, bottom):
            ax.set_xscale("log")
            ax.set_xticks(sizes, [str(n) for n in sizes])
            ax.xaxis.set_minor_locator(NullLocator())
            ax.grid(alpha=0.3, which="both")
    axes[0, 0].legend(fontsize=7, ncol=2)
    axes[1, 0].legend(fontsize=7, ncol=2)
    fig.suptitle("Threshold rules on re-split validation sets: synthetic binormal (solid), "
                 "committed runs pooled (dashed)")
    fig.tight_layout()
    paths = [out / "thresholds.png", out / "thresholds.svg"]
    fig.savefig(paths[0], dpi=110)
    fig.savefig(paths[1], metadata={"Date": None})
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer sizes and draws (a few minutes)")
    parser.add_argument("--results", type=Path, default=Path("results"), help="results root holding runs/")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: <results>/studies, --quick: <results>/studies/quick)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    out = args.out or args.results / "studies" / ("quick" if args.quick else "")  # quick never overwrites
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    began = time.perf_counter()
    rows = []
    for mu in MUS:
        source = {"source": f"binormal mu={mu:g} (AUC {norm.cdf(mu / math.sqrt(2)):.3f})",
                  "kind": "synthetic", "scale": "", "pool_pos": None, "pool_neg": None}
        for n in plan["n_pos"]:
            rows += rows_of(source, n, *synthetic(mu, n, plan["synthetic_draws"], rng))
        print(f"synthetic mu={mu:g}: done ({time.perf_counter() - began:.0f} s)", flush=True)
    sources = real_sources(args.results)
    for name, scale, pos, neg in sources:
        source = {"source": name, "kind": "real", "scale": scale, "pool_pos": pos.size, "pool_neg": neg.size}
        for n in plan["n_pos"]:
            if n > pos.size // 2:
                continue  # the held-out half must stay large enough for its test TPR to mean something
            rows += rows_of(source, n, *real(pos, neg, n, plan["real_draws"], rng))
        print(f"{name}: done ({time.perf_counter() - began:.0f} s)", flush=True)
    df = pd.DataFrame(rows)
    df = pd.concat([df, pooled(df)], ignore_index=True)
    df["ci_low"], df["ci_high"] = wilson(df.violations.fillna(0), df.draws)
    cols = ["source", "kind", "scale", "pool_pos", "pool_neg", "rule", "target", "delta", "n_pos", "k",
            "exists", "draws", "violations", "violation_rate", "ci_low", "ci_high", "exact_violation",
            "expected_fnr", "mean_tpr", "mean_fpr", "oracle_fpr"]
    df = df[cols]
    df.to_csv(out / "thresholds.csv", index=False, float_format="%.6g")
    seconds = time.perf_counter() - began
    (out / "thresholds.md").write_text(markdown(df, args, seconds, sources))
    paths = figure(df, out)
    print(f"wrote {out / 'thresholds.csv'}, {out / 'thresholds.md'}, {', '.join(map(str, paths))} "
          f"in {seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
