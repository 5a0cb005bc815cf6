"""The claims a paper makes from a table, checked on our numbers.

Claims are declared per table in tables.yaml. Each comparison of two rows is one test
(`results.evidence`, i.e. `hightpr.metrics.comparison.compare`: members, i.e. training seeds,
and test samples; rows of single models cover test samples only), paired on the same test
samples. The tests of one table form one family: their p-values are Holm-adjusted together, and
a difference counts as significant when its adjusted p <= ALPHA. Two rows are called equivalent
only by two one-sided tests (TOST, Holm-adjusted over the table's equivalence tests) within
`MARGINS`, printed in the claims' header; anything else is "not distinguishable at this budget"
with its interval. A claim holds ("supported") where most of its pairs are significant in its
direction; a pair in which a row's regulariser never switched on (`results.Outcome.activity`)
is not informative and gets no verdict.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from hightpr.metrics.comparison import holm
from hightpr.tables.cells import Cell
from hightpr.tables.results import evidence

ALPHA = 0.05
INACTIVE = "◦"
# Equivalence margins, in points: differences smaller than these count as no difference. About half
# of the smallest gain the RankReg paper reports for +RankReg over BCE on binary CIFAR-10 (AUC 3.1
# points, FPR@95%TPR 18.8 points; a quarter of the latter, as FPR moves more between seeds).
MARGINS = {"auc": 1.5, "fpr": 5.0}
P_FLOOR = 0.001     # p-values below it are printed as "< 0.001"


def margin(metric: str) -> float | None:
    """The equivalence margin of a metric (points), None where none is stated."""
    if metric == "auc":
        return MARGINS["auc"]
    if metric.startswith("fpr@"):
        return MARGINS["fpr"]
    return None
Line = str | Callable[[], str]


def higher_is_better(metric: str) -> bool:
    return metric.startswith(("auc", "acc", "avg_delta")) and metric != "auc_std"


def better(x: float, y: float, metric: str) -> bool:
    return x > y if higher_is_better(metric) else x < y


def metric_name(metric: str) -> str:
    for prefix, name in (("fpr@", "FPR@"), ("err@", "Error@")):
        if metric.startswith(prefix):
            rest = metric[len(prefix):]
            return name + (rest[:-3] + "%TPR" if rest.endswith("tpr") else rest[:-2] + " FN")
    return {"auc": "AUC", "auc_ens": "ensembled AUC", "auc_avg": "average AUC", "acc": "accuracy",
            "acc_critical1": "accuracy of critical class 1", "acc_critical2": "accuracy of critical class 2",
            "acc_others": "accuracy of the other classes", "delong_significant": "DeLong p <= 0.05 (*)",
            "auc_std": "AUC std over members"}.get(metric, metric)


# -- one test of the table's family ---------------------------------------------------------------
@dataclass
class Test:
    """One test: `ev` holds diff (a - b, or the statistic), lo, hi, p, se, df and the noise it
    covers (and p_equiv with a margin); `p_adj` and `p_equiv_adj` are set once the whole table's
    family is known (Holm)."""

    ev: dict | None
    metric: str
    p_adj: float = math.nan
    p_equiv_adj: float = math.nan

    def favours(self, sign: int = 1) -> bool:
        """Significant after Holm, in a's favour (sign 1) or b's (sign -1)."""
        if self.ev is None or not self.p_adj <= ALPHA:
            return False
        return better(sign * self.ev["diff"], 0.0, self.metric)

    def equivalent(self) -> bool:
        """Within ± the margin by TOST after Holm (never where no margin is stated)."""
        return self.ev is not None and self.p_equiv_adj <= ALPHA

    def word(self) -> str:
        """What the test showed of a against b: better, worse, equivalent, or not distinguishable."""
        if self.favours():
            return "better"
        if self.favours(-1):
            return "worse"
        if self.equivalent():
            return f"equivalent within ±{self.ev['margin']:g}"
        return "not distinguishable at this budget"

    def text(self, name: str = "Δ") -> str:
        if self.ev is None:
            return "not comparable (different test samples)"
        ev = self.ev
        at = ""
        if ev.get("truncated"):
            k = ev["members"][0]
            vals = ev["values"]
            at = (f"at {k} members each, {vals[0]:.1f} vs {vals[1]:.1f}: " if len(vals) == 2
                  else f"at {k} members each: ")
        out = (f"{at}{name} {ev['diff']:+.2f}, 95% CI [{ev['lo']:+.2f}, {ev['hi']:+.2f}], "
               f"p {_p(ev['p'])}, Holm {_p(self.p_adj)}")
        if "p_equiv" in ev:
            out += f", TOST ±{ev['margin']:g} Holm {_p(self.p_equiv_adj)}"
        return out


def _p(p: float) -> str:
    """A p-value to 2 significant digits; below P_FLOOR said as such (the t reference's far tail
    is not worth more digits)."""
    if not math.isfinite(p):
        return "n/a"
    return f"< {P_FLOOR:g}" if p < P_FLOOR else f"{p:.2g}"


@dataclass
class Family:
    """The tests of one table, adjusted together (one family per table, equivalence tests apart)."""

    view: object
    tests: list[Test] = field(default_factory=list)
    _memo: dict = field(default_factory=dict)

    def pair(self, a: Cell, b: Cell, metric: str) -> Test:
        key = (a, b, metric)
        if key not in self._memo:
            ev = evidence([self.view.outcome(a), self.view.outcome(b)], metric, self.view.n_boot,
                          margin=margin(metric))
            self._memo[key] = self.add(ev, metric)
        return self._memo[key]

    def add(self, ev: dict | None, metric: str) -> Test:
        test = Test(ev, metric)
        self.tests.append(test)
        return test

    def adjust(self) -> None:
        adjusted = holm([t.ev["p"] if t.ev else math.nan for t in self.tests])
        equiv = holm([t.ev["p_equiv"] if t.ev and "p_equiv" in t.ev else math.nan for t in self.tests])
        for test, p, q in zip(self.tests, adjusted, equiv, strict=True):
            test.p_adj, test.p_equiv_adj = p, q

    @property
    def equivalence_tests(self) -> int:
        return sum(t.ev is not None and "p_equiv" in t.ev for t in self.tests)


def inactive(view, cell: Cell) -> bool:
    """Whether the row's regulariser stayed below 1% of the base loss throughout (every member)."""
    out = view.outcome(cell)
    return bool(out is not None and cell.reg != "none" and out.activity and not out.activity["active"])


# -- the claims block ---------------------------------------------------------------------------------
def block(view) -> list[str]:
    """Markdown of the table's claims: header with the statistics used, then each claim."""
    family = Family(view)
    fns = {"better": _better, "best": _best, "avg_delta": _avg_delta, "ensemble": _ensemble,
           "significant": _significant_claim, "noise": _better, "nearer": _nearer, "controls": _controls}
    parts = [(claim, fns[claim["kind"]](claim, view, family)) for claim in view.spec.claims]
    family.adjust()
    n = sum(t.ev is not None for t in family.tests)
    lines = ["What the paper concludes from this table, on our numbers. Each comparison: the difference "
             "of the two rows' ensembles, with a standard error over members (training seeds: the "
             "statistic on disjoint groups of members, rows paired seed by seed) and over test samples "
             f"({view.n_boot} bootstrap replicates, members fixed, rows paired on the same samples; rows "
             "of single models: test samples only), on a t reference (docs/evaluation.md); two-sided, "
             f"α = {ALPHA}, Holm-corrected over the {n} tests of this table (the family is the table). "
             "Rows of different ensemble sizes are compared like with like: each with its first members "
             "(seeds 1, 2, ...) down to the smaller size, since more members make a better ensemble "
             "whatever the method; the numbers compared are then printed with the test. "
             f"*Equivalent*: both one-sided tests (TOST) reject a difference of the margin or more "
             f"(AUC ±{MARGINS['auc']:g}, FPR ±{MARGINS['fpr']:g} points), Holm over the table's "
             f"{family.equivalence_tests} equivalence tests; otherwise *not distinguishable at this "
             "budget*, with the interval. *supported*: most pairs significant in the claimed direction "
             f"after Holm. A row marked {INACTIVE} had a regulariser term below 1% of its base loss in "
             "every epoch: its pairs are not informative.", ""]
    for claim, got in parts:
        lines.append(f"- **{claim.get('text', claim['kind'])}**")
        for line in got:
            text = line() if callable(line) else line
            lines.append(f"    - {text[1:]}" if text.startswith("\t") else f"  - {text}")
    return lines


def _verdict(k: int, n: int, significant: int, against: int = 0, uninformative: int = 0,
             equivalent: int = 0) -> str:
    """k of n pairs in the claimed direction, `significant` of them significant after Holm,
    `against` significantly the other way, `equivalent` shown equal within the margin (TOST);
    `uninformative` pairs left out (inactive regulariser)."""
    if n == 0:
        return "not informative (regulariser inactive)" if uninformative else "not run"
    if 2 * significant > n:
        return "supported"
    if against:
        return f"NOT supported ({against} significantly the other way)"
    if 2 * equivalent > n:
        return "NOT supported (equivalent within the margin)"
    if 2 * k > n:
        return "not distinguishable at this budget (ours in the claimed direction)"
    return "not distinguishable at this budget (ours the other way or tied)"


def _filter(spec) -> dict:
    return {"reg": spec} if isinstance(spec, str) else dict(spec)


def _matches(cell: Cell, flt: dict) -> bool:
    return all(getattr(cell, k) == str(v) for k, v in flt.items())


def _pairs(claim: dict, view) -> list[tuple[Cell, Cell]]:
    a, b = _filter(claim["a"]), _filter(claim["b"])
    out = []
    for ca in view.cells:
        if _matches(ca, a):
            cb = replace(ca, **{k: str(v) for k, v in b.items()})
            for twin in (cb, replace(cb, hidden=True)):     # a hidden reference row (ALM Tables 12-14)
                if twin in view.cell_set:
                    out.append((ca, twin))
                    break
    return out


def _extra_of(view, cell: Cell, key: str) -> Cell | None:
    """The row ours only `key` (recipes extras) in the section of `cell`, if the table has it."""
    for c in view.visible:
        if c.extra == key and c.section == cell.section:
            return c
    return None


def _better(claim: dict, view, family: Family) -> list[Line]:
    pairs = _pairs(claim, view)
    lines: list[Line] = [line for metric in (claim.get("metrics") or view.comparable)
                         if (line := _better_metric(pairs, metric, view, family, paper=True))]
    # `also: {alm: alm_mu0_top}`: the same pairs with a row ours only in place of the paper's row
    for reg, key in (claim.get("also") or {}).items():
        swapped = [(x if x.reg != reg else e, y if y.reg != reg else e) for x, y in pairs
                   if (e := _extra_of(view, x if x.reg == reg else y, key)) is not None]
        label = next((e.label for x, y in swapped for e in (x, y) if e.extra == key), None)
        if label is None:
            continue
        got = [line for metric in (claim.get("metrics") or view.comparable)
               if (line := _better_metric(swapped, metric, view, family, paper=False))]
        if got:
            lines.append(f"with {label} in place of the paper's row:")
            lines += [_indent(line) for line in got]
    return lines or ["no rows to compare"]


def _indent(line: Line) -> Line:
    """A line nested under the previous one (`block` indents it)."""
    return (lambda: "\t" + line()) if callable(line) else "\t" + line


def _better_metric(pairs, metric: str, view, family: Family, paper: bool) -> Line | None:
    kp = np_ = ko = 0
    tests: list[Test] = []
    left_out = 0
    for ca, cb in pairs:
        pa, pb = view.paper(ca, metric), view.paper(cb, metric)
        if paper and pa is not None and pb is not None:
            np_ += 1
            kp += better(pa, pb, metric)
        oa, ob = view.ours(ca, metric), view.ours(cb, metric)
        if oa is None or ob is None:
            continue
        if inactive(view, ca) or inactive(view, cb):
            left_out += 1
            continue
        test = family.pair(ca, cb, metric)
        ko += better(test.ev["diff"], 0.0, metric) if test.ev else better(oa, ob, metric)
        tests.append(test)
    if np_ == 0 and not tests and not left_out:
        return None
    no = len(tests)

    def p_text() -> str:
        return (f"paper {kp}/{np_}" if np_ else "paper: not in the table") if paper else "ours only"

    def text() -> str:
        if not tests and left_out:
            return (f"{metric_name(metric)}: {p_text()}; ours: not informative (regulariser inactive "
                    f"{INACTIVE})")
        sig = sum(t.favours() for t in tests)
        against = sum(t.favours(-1) for t in tests)
        p = p_text()
        one = f"; {tests[0].text()}" if no == 1 else ""
        out = f"{metric_name(metric)}: {p}; ours {ko}/{no} ({sig} significant{one})"
        if left_out:
            pairs = f"{left_out} pair{'s' * (left_out != 1)}"
            out += f"; {pairs} with an inactive regulariser ({INACTIVE}) left out"
        same = sum(t.equivalent() for t in tests)
        return f"{out}: {_verdict(ko, no, sig, against, left_out, same)}"

    return text


def _best(claim: dict, view, family: Family) -> list[Line]:
    flt = _filter(claim["row"])
    lines: list[Line] = []
    for section in view.sections:
        rows = [c for c in view.cells if c.section == section]
        target = [c for c in rows if _matches(c, flt)]
        if not target:
            continue
        t = target[0]
        for metric in claim.get("metrics") or view.comparable:
            def best_of(get, t=t, metric=metric, rows=rows):
                vals = {c: get(c, metric) for c in rows if get(c, metric) is not None}
                if t not in vals or len(vals) < 2:
                    return None, None
                others = {c: v for c, v in vals.items() if c != t}
                runner = max(others, key=lambda c: others[c] if higher_is_better(metric) else -others[c])
                if better(others[runner], vals[t], metric):
                    return "no", runner
                return ("tied" if others[runner] == vals[t] else "yes"), runner
            pbest, _ = best_of(view.paper)
            obest, runner = best_of(view.ours)
            if pbest is None and obest is None:
                continue
            quiet = obest is not None and inactive(view, t)
            test = family.pair(t, runner, metric) if obest is not None and not quiet else None
            paper = {None: "not in the table", "yes": "best", "tied": "tied best", "no": "not best"}[pbest]
            ours = {None: "not run", "yes": "best", "tied": "tied best", "no": "NOT best"}[obest]
            if quiet:
                ours = f"not informative (regulariser inactive {INACTIVE})"

            def text(section=section, metric=metric, paper=paper, ours=ours, test=test, runner=runner):
                evidence = f" (vs {runner.label}: {test.text()})" if test is not None and test.ev else ""
                if test is not None and test.ev and ours == "best" and not test.favours():
                    ours = "highest, not distinguishable from the runner-up at this budget"
                return f"{section}, {metric_name(metric)}: paper {paper}; ours {ours}{evidence}"
            lines.append(text)
    return lines or ["no rows to compare"]


def _avg_delta(claim: dict, view, family: Family) -> list[Line]:
    """Avg.Δ (D1) > 0, tested like every comparison (`results.evidence` with D1 as the statistic)."""
    lines: list[Line] = []
    for section in view.sections:
        losses = len({c.base_loss for c in view.cells if c.section == section and not c.extra})
        for metric, (paper, ours, n, same) in view.avg_deltas.get(section, {}).items():
            p = "paper: not printed" if paper is None else f"paper {paper:+.1f} (its {losses} losses)"
            if same is not None and n != losses:
                p += f", {same:+.1f} over the same {n} loss{'es' * (n != 1)} as ours"
            if ours is None:
                lines.append(f"{section}, {metric}: {p}; ours: not run")
                continue
            test, quiet = _d1_test(view, family, section, metric)
            o = f"ours {ours:+.2f} (mean over {n} loss{'es' * (n != 1)})"
            note = (f"; +ALM inactive ({INACTIVE}) in {quiet}: 'the better of base and +ALM' is in effect "
                    "the base there") if quiet else ""

            def text(section=section, metric=metric, p=p, o=o, test=test, note=note, ours=ours):
                if test.favours():
                    verdict = "supported"
                elif test.favours(-1):
                    verdict = "NOT supported (significantly the other way)"
                else:
                    side = "ours in the claimed direction" if ours > 0 else "ours the other way or tied"
                    verdict = f"not distinguishable at this budget ({side})"
                return f"{section}, {metric}: {p}; {o}; {test.text('D1')}{note}: {verdict}"
            lines.append(text)
    return lines or ["no Avg.Δ row"]


def d1(values: dict[tuple[str, str], float], metric: str) -> tuple[float, int] | None:
    """Avg.Δ, definition D1 (results/paper/INDEX.md): per base loss, the better of {base, +ALM}
    against +RankReg (positive = RankReg better); the mean over the losses that have all three.

    `values[(base_loss, reg)]` in percent; `metric` is the compared metric (fpr@98tpr, auc).
    """
    up = higher_is_better(metric)
    deltas = []
    for loss in dict.fromkeys(k[0] for k in values):
        trio = [values.get((loss, r)) for r in ("none", "alm", "rankreg")]
        if any(v is None for v in trio):
            continue
        best = max(trio[:2]) if up else min(trio[:2])
        deltas.append(trio[2] - best if up else best - trio[2])
    return (float(np.mean(deltas)), len(deltas)) if deltas else None


def compared_metric(avg_metric: str) -> str:
    """avg_delta@98tpr -> fpr@98tpr, avg_delta_auc -> auc."""
    return "auc" if avg_metric == "avg_delta_auc" else "fpr@" + avg_metric.removeprefix("avg_delta@")


def d1_evidence(view, section: str, avg_metric: str) -> tuple[dict | None, str]:
    """D1 of a section tested like every comparison (its statistic on the rows' ensembles, like
    with like), and the labels of +ALM rows that were inactive. The table's Avg.Δ row prints it."""
    metric = compared_metric(avg_metric)
    trios = []
    for loss in dict.fromkeys(c.base_loss for c in view.cells if c.section == section):
        cells = [next((c for c in view.cells if c.section == section and c.base_loss == loss and c.reg == r
                       and not c.variant), None) for r in ("none", "alm", "rankreg")]
        if all(c is not None and view.outcome(c) is not None for c in cells):
            trios.append(cells)
    quiet = ", ".join(c[1].label for c in trios if inactive(view, c[1]))
    if not trios:
        return None, quiet
    arms = [c for trio in trios for c in trio]
    up = higher_is_better(metric)

    def d1_rows(values: np.ndarray) -> np.ndarray:
        """D1 of every replicate column: values [3 * losses, R] in the trios' order."""
        v = values.reshape(len(trios), 3, -1)
        best = v[:, :2].max(axis=1) if up else v[:, :2].min(axis=1)
        return (v[:, 2] - best if up else best - v[:, 2]).mean(axis=0)

    return evidence([view.outcome(c) for c in arms], metric, view.n_boot, statistic=d1_rows, name="d1"), quiet


def _d1_test(view, family: Family, section: str, avg_metric: str) -> tuple[Test, str]:
    ev, quiet = d1_evidence(view, section, avg_metric)
    return family.add(ev, "avg_delta"), quiet


def _ensemble(claim: dict, view, family: Family) -> list[Line]:
    kp = np_ = ko = no = 0
    for c in view.cells:
        pe, pa = view.paper(c, "auc_ens"), view.paper(c, "auc_avg")
        if pe is not None and pa is not None:
            np_, kp = np_ + 1, kp + (pe > pa)
        oe, oa = view.ours(c, "auc_ens"), view.ours(c, "auc_avg")
        if oe is not None and oa is not None:
            no, ko = no + 1, ko + (oe > oa)
    verdict = "not run" if no == 0 else "no verdict: a count of rows, not a test"
    return [f"rows with ensembled AUC > members' average AUC: paper {kp}/{np_}; ours {ko}/{no}: {verdict}"]


def _significant_claim(claim: dict, view, family: Family) -> list[Line]:
    kp = np_ = ko = no = left_out = 0
    for ca, cb in _pairs(claim, view):
        flag = view.paper(ca, "delong_significant")
        if flag is not None:
            np_, kp = np_ + 1, kp + (flag == 1)
        ev = view.delong(ca)
        if ev is None:
            continue
        if inactive(view, ca) or inactive(view, cb):
            left_out += 1
            continue
        no += 1
        ko += ev["p"] <= ALPHA and ev["diff"] > 0
    if no == 0:
        verdict = "not informative (regulariser inactive)" if left_out else "not run"
    else:
        verdict = "supported" if 2 * ko > no else "NOT supported"
    skipped = f"; {left_out} with an inactive regulariser ({INACTIVE}) left out" if left_out else ""
    return [f"rows whose AUC gain passes DeLong (p <= {ALPHA}, test samples only, as the paper): "
            f"paper {kp}/{np_} (marked *); ours {ko}/{no}{skipped}: {verdict}"]


def _nearer(claim: dict, view, family: Family) -> list[Line]:
    """Of a paper row run two ways (the paper's setting, and a row ours only with `variant`),
    which lands nearer the paper's number, metric by metric, with the interval of
    |a - paper| - |b - paper| (positive: b nearer)."""
    lines: list[Line] = []
    names = claim["names"]
    for other in (c for c in view.visible if c.extra and c.variant == claim["variant"]):
        base = Cell(other.dataset, other.classes, other.ratio, other.base_loss, other.reg)
        for metric in view.comparable:
            p, a, b = view.paper(base, metric), view.ours(base, metric), view.ours(other, metric)
            if p is None or a is None or b is None:
                continue
            def nearer(values: np.ndarray, p=p) -> np.ndarray:
                return np.abs(values[0] - p) - np.abs(values[1] - p)
            ev = evidence([view.outcome(base), view.outcome(other)], metric, view.n_boot, statistic=nearer,
                          name=f"nearer {p}")
            test = family.add(ev, metric)

            def text(metric=metric, p=p, a=a, b=b, test=test, section=other.section):
                d = test.ev["diff"] if test.ev else abs(a - p) - abs(b - p)
                winner = names[1] if d > 0 else names[0]
                sig = test.ev is not None and test.p_adj <= ALPHA and d != 0
                verdict = f"{winner} nearer" + ("" if sig else " (not significant)")
                return (f"{section}, {metric_name(metric)}: {names[0]} {a:.1f}, {names[1]} {b:.1f}, paper "
                        f"{p:.1f}; {test.text('|' + names[0] + ' − paper| − |' + names[1] + ' − paper|')}"
                        f": {verdict}")
            lines.append(text)
    return lines or ["not run"]


def _controls(claim: dict, view, family: Family) -> list[Line]:
    """Rows ours only beside a method (e.g. +RankReg against BCE at its batch size, or with the dual
    sampler): does the simpler change do as well? Only a control shown equivalent (TOST) on every
    metric explains the method's gain over its base at this budget; a control not distinguishable
    from the method decides nothing."""
    flt = _filter(claim["method"])
    lines: list[Line] = []
    for key in claim["rows"]:
        for control in (c for c in view.visible if c.extra == key and view.outcome(c) is not None):
            method = next((c for c in view.cells if c.section == control.section and _matches(c, flt)
                           and c.base_loss == control.base_loss and view.outcome(c) is not None), None)
            if method is None:
                continue
            tests = [(m, family.pair(control, method, m)) for m in view.comparable
                     if view.ours(control, m) is not None and view.ours(method, m) is not None]

            def text(control=control, method=method, tests=tests):
                parts, words = [], []
                for m, t in tests:
                    words.append(t.word())
                    shown = "" if t.ev and t.ev.get("truncated") else \
                        f" {view.ours(control, m):.1f} vs {view.ours(method, m):.1f}"
                    parts.append(f"{metric_name(m)}{shown} ({t.text()}): {words[-1]}")
                worse = sum(w == "worse" for w in words)
                same = sum(w.startswith("equivalent") for w in words)
                if not tests:
                    finding = "no metric to compare"
                elif worse:
                    finding = f"significantly worse than {method.label} on {worse} of {len(tests)} metrics"
                elif same == len(tests):
                    finding = (f"equivalent to {method.label} on every metric within the margins: the "
                               "simpler change explains the method's gain at this budget")
                else:
                    finding = (f"not distinguishable from {method.label} at this budget, and not shown "
                               "equivalent: whether the simpler change explains the method's gain is not "
                               "decided")
                return f"{control.label} against {method.label}: " + "; ".join(parts) + f". **{finding}**"
            lines.append(text)
    return lines or ["no control run"]
