"""The claims a paper makes from a table, checked on our numbers with DeLong or bootstrap evidence.

Claims are declared per table in tables.yaml; each is counted on the paper's own numbers and on
ours, and ours are called "supported" only when they agree for most rows *and* at least one
difference is significant (DeLong p <= 0.05 for AUC, else a paired bootstrap 95% interval that
excludes 0). Everything else is said plainly: same direction but not significant, not supported,
or not run.
"""

from __future__ import annotations

from dataclasses import replace

from hightpr.tables.cells import Cell
from hightpr.tables.results import paired

ALPHA = 0.05


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


def _filter(spec) -> dict:
    return {"reg": spec} if isinstance(spec, str) else dict(spec)


def _matches(cell: Cell, flt: dict) -> bool:
    return all(getattr(cell, k) == str(v) for k, v in flt.items())


def _verdict(k: int, n: int, significant: int, against: int = 0) -> str:
    """`against`: pairs significantly the other way."""
    if n == 0:
        return "not run"
    if 2 * k > n and significant:
        return "supported"
    if 2 * k > n:
        return "same direction, not significant"
    if against:
        return f"NOT supported ({against} significantly the other way)"
    return "NOT supported (the other way or tied, not significant)"


def _significant(ev: dict | None, metric: str) -> bool:
    """The difference a - b is significant in a's favour."""
    if ev is None:
        return False
    if "p" in ev:
        return ev["p"] <= ALPHA and better(ev["diff"], 0.0, metric)
    return (ev["lo"] > 0 or ev["hi"] < 0) and better(ev["diff"], 0.0, metric)


def _reversed(ev: dict | None) -> dict | None:
    """The evidence of b - a from that of a - b."""
    if ev is None:
        return None
    return {**ev, "diff": -ev["diff"], "lo": -ev["hi"], "hi": -ev["lo"]}


def check(claim: dict, view) -> list[str]:
    """Markdown lines for one claim; `view` is the rendered table (render.TableView)."""
    kind = claim["kind"]
    text = claim.get("text", kind)
    fn = {"better": _better, "best": _best, "avg_delta": _avg_delta, "ensemble": _ensemble,
          "significant": _significant_claim, "noise": _better, "nearer": _nearer}[kind]
    return [f"- **{text}**", *(f"  - {line}" for line in fn(claim, view))]


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


def _better(claim: dict, view) -> list[str]:
    pairs = _pairs(claim, view)
    lines = []
    for metric in claim.get("metrics") or view.comparable:
        kp = np_ = ko = no = sig = against = 0
        for ca, cb in pairs:
            pa, pb = view.paper(ca, metric), view.paper(cb, metric)
            if pa is not None and pb is not None:
                np_ += 1
                kp += better(pa, pb, metric)
            oa, ob = view.ours(ca, metric), view.ours(cb, metric)
            if oa is not None and ob is not None:
                no += 1
                ko += better(oa, ob, metric)
                ev = paired(view.outcome(ca), view.outcome(cb), metric, view.n_boot)
                sig += _significant(ev, metric)
                against += _significant(_reversed(ev), metric)
        if np_ == 0 and no == 0:
            continue
        paper = f"paper {kp}/{np_}" if np_ else "paper: not in the table"
        test = "DeLong" if metric.startswith("auc") else "paired bootstrap 95%"
        lines.append(f"{metric_name(metric)}: {paper}; ours {ko}/{no} ({sig} significant, {test}): "
                     f"{_verdict(ko, no, sig, against)}")
    return lines or ["no rows to compare"]


def _best(claim: dict, view) -> list[str]:
    flt = _filter(claim["row"])
    lines = []
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
            evidence = ""
            if obest is not None:
                ev = paired(view.outcome(t), view.outcome(runner), metric, view.n_boot)
                if ev is not None:
                    delong = f", DeLong p {ev['p']:.3g}" if "p" in ev else ""
                    evidence = (f" (vs {runner.label}: Δ {ev['diff']:+.2f}, 95% CI "
                                f"[{ev['lo']:+.2f}, {ev['hi']:+.2f}]{delong})")
            paper = {None: "not in the table", "yes": "best", "tied": "tied best", "no": "not best"}[pbest]
            ours = {None: "not run", "yes": "best", "tied": "tied best", "no": "NOT best"}[obest]
            lines.append(f"{section}, {metric_name(metric)}: paper {paper}; ours {ours}{evidence}")
    return lines or ["no rows to compare"]


def _avg_delta(claim: dict, view) -> list[str]:
    lines = []
    for section in view.sections:
        for metric, (paper, ours, n) in view.avg_deltas.get(section, {}).items():
            p = "paper: not printed" if paper is None else f"paper {paper:+.1f}"
            if ours is None:
                lines.append(f"{section}, {metric}: {p}; ours: not run")
                continue
            o = f"ours {ours:+.2f} (mean over {n} loss{'es' * (n != 1)})"
            verdict = "agrees (a mean: the per-loss tests are above)" if ours > 0 else "NOT supported"
            lines.append(f"{section}, {metric}: {p}; {o}: {verdict}")
    return lines or ["no Avg.Δ row"]


def _ensemble(claim: dict, view) -> list[str]:
    kp = np_ = ko = no = 0
    for c in view.cells:
        pe, pa = view.paper(c, "auc_ens"), view.paper(c, "auc_avg")
        if pe is not None and pa is not None:
            np_, kp = np_ + 1, kp + (pe > pa)
        oe, oa = view.ours(c, "auc_ens"), view.ours(c, "auc_avg")
        if oe is not None and oa is not None:
            no, ko = no + 1, ko + (oe > oa)
    verdict = "not run" if no == 0 else ("supported" if 2 * ko > no else "NOT supported")
    return [f"rows with ensembled AUC > members' average AUC: paper {kp}/{np_}; ours {ko}/{no}: {verdict}"]


def _significant_claim(claim: dict, view) -> list[str]:
    kp = np_ = ko = no = 0
    for ca, _ in _pairs(claim, view):
        flag = view.paper(ca, "delong_significant")
        if flag is not None:
            np_, kp = np_ + 1, kp + (flag == 1)
        ev = view.delong(ca)
        if ev is not None:
            no += 1
            ko += ev["p"] <= ALPHA and ev["diff"] > 0
    verdict = "not run" if no == 0 else ("supported" if 2 * ko > no else "NOT supported")
    return [f"rows whose AUC gain passes DeLong (p <= {ALPHA}): paper {kp}/{np_} (marked *); "
            f"ours {ko}/{no}: {verdict}"]


def _nearer(claim: dict, view) -> list[str]:
    """Of a paper row run two ways (the paper's setting, and a row ours only with `variant`),
    which lands nearer the paper's number, metric by metric (e.g. Adam against SGD)."""
    lines = []
    for other in (c for c in view.visible if c.extra and c.variant == claim["variant"]):
        base = Cell(other.dataset, other.classes, other.ratio, other.base_loss, other.reg)
        near = []
        for metric in view.comparable:
            p, a, b = view.paper(base, metric), view.ours(base, metric), view.ours(other, metric)
            if p is None or a is None or b is None:
                continue
            winner = claim["names"][0] if abs(a - p) <= abs(b - p) else claim["names"][1]
            near.append(f"{metric_name(metric)}: {claim['names'][0]} {a:.1f}, {claim['names'][1]} {b:.1f}, "
                        f"paper {p:.1f} -> {winner}")
        if near:
            lines.append(f"{other.section}: " + "; ".join(near))
    return lines or ["not run"]
