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

Every evidence line is a value first (`evaluate`: a dict with its `kind`, its `outcome` code and
the numbers behind it, tests included) and a sentence second (`sentence`, the one function that
words a value): the markdown prints the sentences, the table's JSON keeps the values.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from hightpr.metrics.comparison import holm
from hightpr.tables.cells import Cell
from hightpr.tables.output import plain
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


# An evidence line: its value now, or (when it needs the Holm-adjusted family) a function giving it.
Line = dict | Callable[[], dict]


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

    def outcome(self) -> str:
        """What the test showed of a against b: better, worse, equivalent, not_distinguishable
        (not_comparable: the rows were not tested on the same samples)."""
        if self.ev is None:
            return "not_comparable"
        if self.favours():
            return "better"
        if self.favours(-1):
            return "worse"
        return "equivalent" if self.equivalent() else "not_distinguishable"

    def value(self, a: str = "", b: str = "", statistic: str = "Δ") -> dict:
        """The test as a value (`test_text` words it): the rows, the statistic and its interval, p
        before and after Holm, TOST where a margin is stated, the like-with-like cut, the noise."""
        out = {"a": a, "b": b, "metric": self.metric, "statistic": statistic, "outcome": self.outcome()}
        ev = self.ev
        if ev is None:
            return out
        out.update({k: ev[k] for k in ("diff", "lo", "hi", "p", "se", "df", "noise") if k in ev},
                   p_holm=self.p_adj, values=ev.get("values"), members=ev.get("members"))
        if ev.get("truncated"):
            out["like_with_like"] = ev["members"][0]
        if "p_equiv" in ev:
            out.update(margin=ev["margin"], p_equiv=ev["p_equiv"], p_equiv_holm=self.p_equiv_adj)
        return plain(out)

    def word(self) -> str:
        """What the test showed of a against b: better, worse, equivalent, or not distinguishable."""
        return word(self.value())

    def text(self, name: str = "Δ") -> str:
        return test_text(self.value(statistic=name))


def word(test: dict) -> str:
    """A test value's outcome in words: better, worse, equivalent within ±m, not distinguishable."""
    got = test["outcome"]
    if got in ("better", "worse"):
        return got
    if got == "equivalent":
        return f"equivalent within ±{test['margin']:g}"
    return "not distinguishable at this budget"


def test_text(test: dict) -> str:
    """A test value as printed: the numbers compared when cut like with like, the statistic, its
    95% interval, p and Holm's p, and TOST's Holm p where a margin is stated."""
    if test["outcome"] == "not_comparable":
        return "not comparable (different test samples)"
    at = ""
    if test.get("like_with_like"):
        k, vals = test["like_with_like"], test["values"]
        at = (f"at {k} members each, {vals[0]:.1f} vs {vals[1]:.1f}: " if len(vals) == 2
              else f"at {k} members each: ")
    out = (f"{at}{test['statistic']} {test['diff']:+.2f}, 95% CI [{test['lo']:+.2f}, {test['hi']:+.2f}], "
           f"p {_p(test['p'])}, Holm {_p(test['p_holm'])}")
    if "p_equiv" in test:
        out += f", TOST ±{test['margin']:g} Holm {_p(test['p_equiv_holm'])}"
    return out


def _p(p: float | None) -> str:
    """A p-value to 2 significant digits; below P_FLOOR said as such (the t reference's far tail
    is not worth more digits)."""
    if p is None or not math.isfinite(p):
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
def evaluate(view) -> dict:
    """The table's claims as values: `intro` (the statistics used: tests, equivalence tests,
    bootstrap replicates, α, margins) and `claims`, each its `text`, `kind` and evidence `lines`
    (values, `sentence` words them), after Holm over the table's family."""
    family = Family(view)
    fns = {"better": _better, "best": _best, "avg_delta": _avg_delta, "ensemble": _ensemble,
           "significant": _significant_claim, "noise": _better, "nearer": _nearer, "controls": _controls}
    parts = [(claim, fns[claim["kind"]](claim, view, family)) for claim in view.spec.claims]
    family.adjust()
    intro = {"tests": sum(t.ev is not None for t in family.tests),
             "equivalence_tests": family.equivalence_tests, "bootstrap": view.n_boot, "alpha": ALPHA,
             "margins": dict(MARGINS)}
    claims = [{"text": claim.get("text", claim["kind"]), "kind": claim["kind"],
               "lines": [plain({"level": 0, **(line() if callable(line) else line)}) for line in got]}
              for claim, got in parts]
    return plain({"intro": intro, "claims": claims})


def intro_text(intro: dict) -> str:
    """The claims' header: how each comparison is tested and what the verdict words mean."""
    return ("What the paper concludes from this table, on our numbers. Each comparison: the difference "
            "of the two rows' ensembles, with a standard error over members (training seeds: the "
            "statistic on disjoint groups of members, rows paired seed by seed) and over test samples "
            f"({intro['bootstrap']} bootstrap replicates, members fixed, rows paired on the same samples; "
            "rows of single models: test samples only), on a t reference (docs/evaluation.md); two-sided, "
            f"α = {intro['alpha']}, Holm-corrected over the {intro['tests']} tests of this table (the "
            "family is the table). Rows of different ensemble sizes are compared like with like: each with "
            "its first members (seeds 1, 2, ...) down to the smaller size, since more members make a better "
            "ensemble whatever the method; the numbers compared are then printed with the test. "
            f"*Equivalent*: both one-sided tests (TOST) reject a difference of the margin or more "
            f"(AUC ±{intro['margins']['auc']:g}, FPR ±{intro['margins']['fpr']:g} points), Holm over the "
            f"table's {intro['equivalence_tests']} equivalence tests; otherwise *not distinguishable at this "
            "budget*, with the interval. *supported*: most pairs significant in the claimed direction "
            f"after Holm. A row marked {INACTIVE} had a regulariser term below 1% of its base loss in "
            "every epoch: its pairs are not informative.")


def markdown(result: dict) -> list[str]:
    """Markdown of evaluated claims (`evaluate`): the header, then each claim and its lines."""
    lines = [intro_text(result["intro"]), ""]
    for claim in result["claims"]:
        lines.append(f"- **{claim['text']}**")
        lines += [("    - " if line["level"] else "  - ") + sentence(line) for line in claim["lines"]]
    return lines


OUTCOMES = ("supported", "not_supported", "other_way", "equivalent", "not_best", "not_distinguishable",
            "tied", "not_significant", "undecided", "nearer", "control_worse", "control_better",
            "control_mixed", "control_equivalent", "heading", "inactive", "not_run", "no_verdict")


def _outcome(k: int, n: int, significant: int, against: int = 0, uninformative: int = 0,
             equivalent: int = 0) -> str:
    """k of n pairs in the claimed direction, `significant` of them significant after Holm,
    `against` significantly the other way, `equivalent` shown equal within the margin (TOST);
    `uninformative` pairs left out (inactive regulariser): one of OUTCOMES."""
    if n == 0:
        return "inactive" if uninformative else "not_run"
    if 2 * significant > n:
        return "supported"
    if against:
        return "other_way"
    if 2 * equivalent > n:
        return "equivalent"
    return "not_distinguishable"


def _verdict_text(outcome: str, against: int = 0, direction: str = "claimed") -> str:
    """A pair count's verdict (`_outcome`) in words."""
    side = "ours in the claimed direction" if direction == "claimed" else "ours the other way or tied"
    return {"inactive": "not informative (regulariser inactive)", "not_run": "not run",
            "supported": "supported", "other_way": f"NOT supported ({against} significantly the other way)",
            "equivalent": "NOT supported (equivalent within the margin)",
            "not_distinguishable": f"not distinguishable at this budget ({side})"}[outcome]


def _verdict(k: int, n: int, significant: int, against: int = 0, uninformative: int = 0,
             equivalent: int = 0) -> str:
    """The verdict on k of n pairs in words (see `_outcome`)."""
    outcome = _outcome(k, n, significant, against, uninformative, equivalent)
    return _verdict_text(outcome, against, "claimed" if 2 * k > n else "other")


def sentence(line: dict) -> str:
    """An evidence line's value (`evaluate`) as the sentence the markdown and the site print."""
    return _SENTENCES[line["kind"]](line)


def _count(pair: list[int] | None) -> str:
    return f"{pair[0]}/{pair[1]}"


def _empty_sentence(line: dict) -> str:
    return {"no_rows": "no rows to compare", "not_run": "not run", "no_control": "no control run",
            "no_avg_row": "no Avg.Δ row"}[line["reason"]]


def _empty(reason: str) -> dict:
    return {"kind": "empty", "outcome": "not_run", "reason": reason}


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
            lines.append({"kind": "substitute", "outcome": "heading", "row": label})
            lines += [_indent(line) for line in got]
    return lines or [_empty("no_rows")]


def _indent(line: Line) -> Line:
    """A line nested under the previous one (one level deeper)."""
    return (lambda: {**line(), "level": 1}) if callable(line) else {**line, "level": 1}


def _substitute_sentence(line: dict) -> str:
    return f"with {line['row']} in place of the paper's row:"


def _better_metric(pairs, metric: str, view, family: Family, paper: bool) -> Line | None:
    kp = np_ = ko = 0
    tests: list[tuple[Test, Cell, Cell]] = []
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
        tests.append((test, ca, cb))
    if np_ == 0 and not tests and not left_out:
        return None

    def value() -> dict:
        sig = sum(t.favours() for t, _, _ in tests)
        against = sum(t.favours(-1) for t, _, _ in tests)
        same = sum(t.equivalent() for t, _, _ in tests)
        no = len(tests)
        outcome = "inactive" if not tests and left_out else _outcome(ko, no, sig, against, left_out, same)
        return {"kind": "better", "outcome": outcome, "metric": metric,
                "paper": [int(kp), np_] if paper else None, "ours": [int(ko), no],
                "direction": "claimed" if 2 * ko > no else "other", "significant": sig, "against": against,
                "equivalent": same, "left_out": left_out,
                "tests": [t.value(a.label, b.label) for t, a, b in tests]}

    return value


def _better_sentence(line: dict) -> str:
    paper = line["paper"]
    p = ("ours only" if paper is None else f"paper {_count(paper)}" if paper[1]
         else "paper: not in the table")
    name = metric_name(line["metric"])
    if line["outcome"] == "inactive" and not line["tests"]:
        return f"{name}: {p}; ours: not informative (regulariser inactive {INACTIVE})"
    one = f"; {test_text(line['tests'][0])}" if len(line["tests"]) == 1 else ""
    out = f"{name}: {p}; ours {_count(line['ours'])} ({line['significant']} significant{one})"
    if line["left_out"]:
        n = line["left_out"]
        out += f"; {n} pair{'s' * (n != 1)} with an inactive regulariser ({INACTIVE}) left out"
    return f"{out}: {_verdict_text(line['outcome'], line['against'], line['direction'])}"


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

            def value(section=section, metric=metric, pbest=pbest, obest=obest, quiet=quiet, test=test,
                      runner=runner, t=t) -> dict:
                tested = test.value(t.label, runner.label) if test is not None else None
                if quiet:
                    outcome = "inactive"
                elif obest is None:
                    outcome = "not_run"
                elif obest != "yes":
                    outcome = {"no": "not_best", "tied": "tied"}[obest]
                elif tested is not None and tested["outcome"] not in ("not_comparable", "better"):
                    outcome = "not_distinguishable"
                else:
                    outcome = "supported"
                return {"kind": "best", "outcome": outcome, "section": section, "metric": metric,
                        "paper": pbest, "ours": obest, "runner": runner.label if runner else None,
                        "test": tested}
            lines.append(value)
    return lines or [_empty("no_rows")]


def _best_sentence(line: dict) -> str:
    paper = {None: "not in the table", "yes": "best", "tied": "tied best", "no": "not best"}[line["paper"]]
    ours = {None: "not run", "yes": "best", "tied": "tied best", "no": "NOT best"}[line["ours"]]
    if line["outcome"] == "inactive":
        ours = f"not informative (regulariser inactive {INACTIVE})"
    test = line["test"]
    shown = test is not None and test["outcome"] != "not_comparable"
    evidence = f" (vs {line['runner']}: {test_text(test)})" if shown else ""
    if shown and ours == "best" and test["outcome"] != "better":
        ours = "highest, not distinguishable from the runner-up at this budget"
    return f"{line['section']}, {metric_name(line['metric'])}: paper {paper}; ours {ours}{evidence}"


def _avg_delta(claim: dict, view, family: Family) -> list[Line]:
    """Avg.Δ (D1) > 0, tested like every comparison (`results.evidence` with D1 as the statistic)."""
    lines: list[Line] = []
    for section in view.sections:
        losses = len({c.base_loss for c in view.cells if c.section == section and not c.extra})
        for metric, (paper, ours, n, same) in view.avg_deltas.get(section, {}).items():
            facts = {"kind": "avg_delta", "section": section, "metric": metric, "paper": paper,
                     "losses": losses, "paper_same": same, "n": n, "ours": ours}
            if ours is None:
                lines.append({**facts, "outcome": "not_run", "test": None, "inactive_alm": ""})
                continue
            test, quiet = _d1_test(view, family, section, metric)

            def value(facts=facts, test=test, quiet=quiet, ours=ours) -> dict:
                if test.favours():
                    outcome = "supported"
                elif test.favours(-1):
                    outcome = "other_way"
                else:
                    outcome = "not_distinguishable"
                return {**facts, "outcome": outcome, "direction": "claimed" if ours > 0 else "other",
                        "test": test.value(statistic="D1"), "inactive_alm": quiet}
            lines.append(value)
    return lines or [_empty("no_avg_row")]


def _avg_delta_sentence(line: dict) -> str:
    paper, losses, same, n = line["paper"], line["losses"], line["paper_same"], line["n"]
    p = "paper: not printed" if paper is None else f"paper {paper:+.1f} (its {losses} losses)"
    if same is not None and n != losses:
        p += f", {same:+.1f} over the same {n} loss{'es' * (n != 1)} as ours"
    head = f"{line['section']}, {line['metric']}: {p}"
    if line["ours"] is None:
        return f"{head}; ours: not run"
    o = f"ours {line['ours']:+.2f} (mean over {n} loss{'es' * (n != 1)})"
    quiet = line["inactive_alm"]
    note = (f"; +ALM inactive ({INACTIVE}) in {quiet}: 'the better of base and +ALM' is in effect "
            "the base there") if quiet else ""
    verdict = {"supported": "supported", "other_way": "NOT supported (significantly the other way)"}.get(
        line["outcome"]) or _verdict_text("not_distinguishable", direction=line["direction"])
    return f"{head}; {o}; {test_text(line['test'])}{note}: {verdict}"


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
    return [{"kind": "ensemble", "outcome": "not_run" if no == 0 else "no_verdict",
             "paper": [int(kp), np_], "ours": [int(ko), no]}]


def _ensemble_sentence(line: dict) -> str:
    verdict = "not run" if line["outcome"] == "not_run" else "no verdict: a count of rows, not a test"
    return (f"rows with ensembled AUC > members' average AUC: paper {_count(line['paper'])}; "
            f"ours {_count(line['ours'])}: {verdict}")


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
        outcome = "inactive" if left_out else "not_run"
    else:
        outcome = "supported" if 2 * ko > no else "not_supported"
    return [{"kind": "significant", "outcome": outcome, "alpha": ALPHA, "paper": [int(kp), np_],
             "ours": [int(ko), no], "left_out": left_out}]


def _significant_sentence(line: dict) -> str:
    n = line["left_out"]
    skipped = f"; {n} with an inactive regulariser ({INACTIVE}) left out" if n else ""
    verdict = {"inactive": "not informative (regulariser inactive)", "not_run": "not run",
               "supported": "supported", "not_supported": "NOT supported"}[line["outcome"]]
    return (f"rows whose AUC gain passes DeLong (p <= {line['alpha']}, test samples only, as the paper): "
            f"paper {_count(line['paper'])} (marked *); ours {_count(line['ours'])}{skipped}: {verdict}")


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

            def value(metric=metric, p=p, a=a, b=b, test=test, section=other.section, base=base,
                      other=other) -> dict:
                d = test.ev["diff"] if test.ev else abs(a - p) - abs(b - p)
                sig = bool(test.ev is not None and test.p_adj <= ALPHA and d != 0)
                statistic = "|" + names[0] + " − paper| − |" + names[1] + " − paper|"
                return {"kind": "nearer", "outcome": "nearer" if sig else "not_significant",
                        "section": section, "metric": metric, "names": list(names), "a": a, "b": b,
                        "paper": p, "difference": d, "winner": names[1] if d > 0 else names[0],
                        "test": test.value(base.label, other.label, statistic)}
            lines.append(value)
    return lines or [_empty("not_run")]


def _nearer_sentence(line: dict) -> str:
    names = line["names"]
    verdict = f"{line['winner']} nearer" + ("" if line["outcome"] == "nearer" else " (not significant)")
    return (f"{line['section']}, {metric_name(line['metric'])}: {names[0]} {line['a']:.1f}, {names[1]} "
            f"{line['b']:.1f}, paper {line['paper']:.1f}; {test_text(line['test'])}: {verdict}")


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

            def value(control=control, method=method, tests=tests) -> dict:
                metrics = [{"metric": m, "ours": [view.ours(control, m), view.ours(method, m)],
                            "test": t.value(control.label, method.label)} for m, t in tests]
                outcomes = [m["test"]["outcome"] for m in metrics]
                return {"kind": "controls", "outcome": _control_outcome(outcomes), "control": control.label,
                        "method": method.label, "worse": outcomes.count("worse"),
                        "better": outcomes.count("better"), "metrics": metrics}
            lines.append(value)
    return lines or [_empty("no_control")]


def _control_outcome(outcomes: list[str]) -> str:
    """A control against its method from the per-metric test outcomes (control vs method): any
    significant difference decides; otherwise only equivalence on every metric explains the gain."""
    worse, better = outcomes.count("worse"), outcomes.count("better")
    if not outcomes:
        return "not_run"
    if worse or better:
        return "control_mixed" if worse and better else "control_worse" if worse else "control_better"
    return "control_equivalent" if all(o == "equivalent" for o in outcomes) else "undecided"


def _controls_sentence(line: dict) -> str:
    parts = []
    for m in line["metrics"]:
        t = m["test"]
        shown = "" if t.get("like_with_like") else f" {m['ours'][0]:.1f} vs {m['ours'][1]:.1f}"
        parts.append(f"{metric_name(m['metric'])}{shown} ({test_text(t)}): {word(t)}")
    method, n = line["method"], len(line["metrics"])
    worse, better = line["worse"], line.get("better", 0)
    same = [metric_name(m["metric"]) for m in line["metrics"] if m["test"]["outcome"] == "equivalent"]
    shown = (f"equivalent to {method} within the margin on {', '.join(same)} only, not distinguishable "
             "on the rest" if same else f"not distinguishable from {method} on any metric, and not shown "
             "equivalent")
    finding = {
        "not_run": "no metric to compare",
        "control_worse": f"significantly worse than {method} on {worse} of {n} metrics",
        "control_better": (f"significantly better than {method} on {better} of {n} metrics: the simpler "
                           "change does more than the method at this budget"),
        "control_mixed": (f"significantly worse than {method} on {worse} and better on {better} "
                          f"of {n} metrics"),
        "control_equivalent": (f"equivalent to {method} on every metric within the margins: the simpler "
                               "change explains the method's gain at this budget"),
        "undecided": (f"{shown} at this budget: whether the simpler change explains the method's gain "
                      "is not decided")}[line["outcome"]]
    return f"{line['control']} against {method}: " + "; ".join(parts) + f". **{finding}**"


_SENTENCES: dict[str, Callable[[dict], str]] = {
    "better": _better_sentence, "substitute": _substitute_sentence, "best": _best_sentence,
    "avg_delta": _avg_delta_sentence, "ensemble": _ensemble_sentence, "significant": _significant_sentence,
    "nearer": _nearer_sentence, "controls": _controls_sentence, "empty": _empty_sentence}
