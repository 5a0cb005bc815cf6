"""What the saved runs say: which runs exist, which grid point won, a cell's numbers and their CIs.

Read-only: nothing here trains or writes. A scale's runs live in one pool,
`results/runs/<scale>/` (`runs.csv`, `ensembles/<key>/` with `metrics.json`, `logits_test.npz`
and the members), shared by every table of that scale.
"""

from __future__ import annotations

import functools
import json
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from hightpr import runs
from hightpr.ensemble import finished_members, seed_of
from hightpr.metrics import comparison, delong_test, fpr_at_fn, fpr_at_tpr, roc_auc
from hightpr.metrics.bootstrap import resample_indices
from hightpr.metrics.evaluators import TIE_BREAK, monitor_value, selection_key
from hightpr.metrics.multiclass import accuracy, class_accuracy, error_at_tpr
from hightpr.metrics.operating_point import rule_operating_point
from hightpr.metrics.thresholds import DEFAULT_RULE
from hightpr.regularizers.activity import activity, summarise
from hightpr.runs import load_logits
from hightpr.tables.cells import Plan
from hightpr.task import Task

PERCENT = 100.0


def pool_dir(results_dir: Path, scale: str) -> Path:
    return Path(results_dir) / "runs" / scale


@dataclass(frozen=True)
class Run:
    """One ensemble a cell needs: a grid point, or the cell's final configuration."""

    overrides: tuple[str, ...]
    key: str
    values: tuple = ()          # the grid point ((config key, value), ...)
    stage: str = ""             # the preset it belongs to ('' = the cell's final run)
    provisional: bool = False   # DRY: depends on a grid step not decided yet


def ensemble_path(pool: Path, key: str) -> Path:
    return Path(pool) / "ensembles" / key


@functools.cache
def _metrics(path: Path, mtime: float) -> dict:
    return json.loads(path.read_text())


def ensemble_metrics(pool: Path, key: str, members: int = 1) -> dict | None:
    """The ensemble's metrics.json when it holds at least `members` members, else None."""
    if not runs.is_finished(ensemble_path(pool, key)):
        return None
    path = runs.metrics_path(ensemble_path(pool, key))
    metrics = _metrics(path, path.stat().st_mtime)
    return metrics if metrics.get("num_members", 0) >= members else None


def selection_value(metrics: dict) -> float:
    """Validation AUC of the ensemble (its members' mean where they had their own validation
    splits); validation accuracy for multi-class runs (ALM §5.2). Never a test number."""
    found = monitor_value(metrics.get("val")) or monitor_value(metrics.get("member_mean"), prefix="val_")
    if found is None:
        raise KeyError("no validation AUC or accuracy in the ensemble's metrics.json")
    return found[1]


def selection_loss(metrics: dict) -> float | None:
    """Validation loss of the ensemble (its members' mean: an ensemble has no loss of its own), which
    breaks a tie of `selection_value`; None where it was not recorded."""
    val, mean = metrics.get("val") or {}, metrics.get("member_mean") or {}
    return val.get(TIE_BREAK, mean.get(f"val_{TIE_BREAK}"))


def resolve(plan: Plan, pool: Path, grid_limit: int | None, assume_first: bool = False,
            least: int | None = None) -> tuple[list[Run], dict, Run | None]:
    """The runs a cell needs so far, the grid values chosen on validation, and its final run.

    A grid step is decided once all of its points have finished; until then the final run is None
    (`assume_first` continues with each undecided step's first point, for listings).
    """
    runs: list[Run] = []
    chosen: dict = {}
    provisional = False
    for stage in plan.stages:
        points = stage.candidates(grid_limit)
        stage_runs = []
        for point in points:
            ov = plan.overrides({**chosen, **point}, on_base=stage.on_base)
            key = plan.key(ov, stage.on_base)
            stage_runs.append(Run(ov, key, tuple(point.items()), stage.preset, provisional))
        runs += stage_runs
        found = [ensemble_metrics(pool, r.key, plan.members if least is None else least) for r in stage_runs]
        if any(m is None for m in found):
            if not assume_first:
                return runs, chosen, None
            provisional = True
            chosen.update(points[0])
            continue
        keys = [selection_key(selection_value(m), selection_loss(m)) for m in found]
        chosen.update(points[keys.index(min(keys))])   # ties: the lower validation loss, then the first point
    ov = plan.overrides(chosen)
    final = Run(ov, plan.key(ov), tuple(chosen.items()), "", provisional)
    if final.key not in {r.key for r in runs}:
        runs.append(final)
    return runs, chosen, final


# -- a cell's numbers --------------------------------------------------------------------------
@dataclass
class Outcome:
    """A cell's final ensemble: its metrics, test logits, members and the chosen grid values."""

    key: str
    metrics: dict
    chosen: dict
    members: int
    path: Path

    @functools.cached_property
    def test(self) -> dict[str, np.ndarray]:
        return load_logits(runs.logits_path(self.path, "test"))

    @functools.cached_property
    def critical(self) -> list[int]:
        """Critical classes of a multi-class run, as its first member recorded its task."""
        for run_dir in finished_members(self.path).values():
            recorded = json.loads(runs.metrics_path(run_dir).read_text()).get("task")
            return list(Task.from_dict(recorded).critical_classes)
        return []

    @property
    def binary(self) -> bool:
        return "auc" in self.metrics.get("test", {})

    @functools.cached_property
    def member_test(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, labels, per-member test outputs [M, N] scores, or [M, N, K] logits if multi-class),
        sorted by sample id: the arms of `evidence`."""
        return _member_test(self.path, self.binary)

    @functools.cached_property
    def seeds(self) -> tuple[int, ...] | None:
        """Each member's training seed (its config's `seed`), in `member_test`'s order; None where
        one is unknown. Arms whose members share seeds are compared seed by seed."""
        seeds = [seed_of(run_dir) for run_dir in finished_members(self.path).values()]
        return None if None in seeds else tuple(int(s) for s in seeds)

    @functools.cached_property
    def activity(self) -> dict | None:
        """The regulariser's activity over the members (`regularizers.activity.summarise`)."""
        return summarise([activity(runs.csv_log_path(d)) for d in finished_members(self.path).values()])

    @functools.cached_property
    def delta(self) -> float:
        """The allowed P(TPR < target) of the guaranteed threshold, as the run was configured."""
        found = self._configured("evaluation.delta")
        return DEFAULT_DELTA if found is None else float(found)

    @functools.cached_property
    def threshold_rule(self) -> str:
        """The rule of the deployed threshold, as the run was configured (`evaluation.threshold_rule`)."""
        found = self._configured("evaluation.threshold_rule")
        return DEFAULT_RULE if found is None else str(found)

    def _configured(self, key: str):
        for run_dir in finished_members(self.path).values():
            cfg = runs.config_path(run_dir)
            found = OmegaConf.select(OmegaConf.load(cfg), key) if cfg.is_file() else None
            if found is not None:
                return found
        return None


DEFAULT_DELTA = 0.05


@functools.cache
def _member_test(path: Path, binary: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    parts = []
    for run_dir in finished_members(path).values():
        t = load_logits(runs.logits_path(run_dir, "test"))
        order = np.argsort(t["ids"], kind="stable")
        parts.append((t["ids"][order], t["labels"][order],
                      t["scores"][order] if binary else t["logits"][order]))
    ids, labels = parts[0][0], parts[0][1]
    return ids, labels, np.stack([p[2] for p in parts]).astype(np.float64)


def deployed_target(metric: str) -> float | None:
    """The target TPR of an FPR@TPR metric (`fpr@95tpr` -> 0.95); None for any other metric."""
    if metric.startswith("fpr@") and metric.endswith("tpr"):
        return int(metric[4:-3]) / 100
    return None


def deployed(out: Outcome, metric: str) -> dict | None:
    """The deployed operating point of an FPR@TPR metric: the threshold of the run's rule (the
    Neyman-Pearson one by default) fixed on the ensemble's validation logits, its FPR and TPR on
    test (percent) and whether the TPR held.

    `{"note": ...}` when validation cannot guarantee the target; None for other metrics, multi-class
    runs or ensembles whose members had validation sets of their own (no ensemble validation logits).
    """
    target = deployed_target(metric)
    if target is None or not out.binary or not runs.logits_path(out.path, "val").is_file():
        return None
    return _deployed(out.path, out.key, target, out.delta, out.threshold_rule)


@functools.cache
def _deployed(path: Path, key: str, tpr: float, delta: float, rule: str) -> dict:
    val, test = load_logits(runs.logits_path(path, "val")), load_logits(runs.logits_path(path, "test"))
    op = rule_operating_point(val["scores"], val["labels"].astype(bool), test["scores"],
                              test["labels"].astype(bool), tpr, delta, rule)
    if op[f"{rule}_threshold"] is None:
        return {"note": op[f"{rule}_note"], "delta": delta, "rule": rule}
    return {"fpr": op[f"{rule}_test_fpr"] * PERCENT, "tpr": op[f"{rule}_test_tpr"] * PERCENT,
            "held": op[f"{rule}_held"], "delta": delta, "rule": rule}


def outcome(plan: Plan, pool: Path, grid_limit: int | None, least: int | None = None) -> Outcome | None:
    """The cell's final ensemble when it has finished with the plan's members (or at least `least`,
    where a table shows an ensemble still growing to its planned size), else None."""
    _, chosen, final = resolve(plan, pool, grid_limit, least=least)
    if final is None:
        return None
    metrics = ensemble_metrics(pool, final.key, plan.members if least is None else least)
    if metrics is None:
        return None
    return Outcome(final.key, metrics, chosen, int(metrics["num_members"]), ensemble_path(pool, final.key))


def report_key(metric: str, critical: list[int]) -> str | None:
    """The key of a run's test report that holds a paper metric (None: not a per-sample metric)."""
    if metric in ("auc", "auc_ens"):
        return "auc"
    if metric.startswith("fpr@"):
        return metric
    if metric.startswith("err@"):
        return "error@" + metric[4:]
    if metric in ("acc", "acc_others"):
        return {"acc": "accuracy", "acc_others": "acc_other"}[metric]
    if metric in ("acc_critical1", "acc_critical2") and len(critical) > 1:
        return f"acc_c{critical[int(metric[-1]) - 1]}"
    return None


def value(out: Outcome, metric: str) -> float | None:
    """Our number for a paper metric, in the paper's unit (percent)."""
    if metric in ("auc_avg", "auc_std"):
        v = out.metrics.get("member_" + ("mean" if metric == "auc_avg" else "std"), {}).get("test_auc")
    else:
        key = report_key(metric, out.critical)
        v = out.metrics.get("test", {}).get(key) if key else None
    return None if v is None else float(v) * PERCENT


def member_spread(out: Outcome, metric: str) -> tuple[float, float] | None:
    """The members' mean and sample std (n - 1) of a paper metric, in percent (ensembles of >= 2).
    metrics.json keeps the population std; it is rescaled by sqrt(M / (M - 1))."""
    key = report_key(metric, out.critical)
    mean, std = out.metrics.get("member_mean") or {}, out.metrics.get("member_std") or {}
    if key is None or out.members < 2 or f"test_{key}" not in mean:
        return None
    scale = (out.members / (out.members - 1)) ** 0.5
    return float(mean[f"test_{key}"]) * PERCENT, float(std[f"test_{key}"]) * scale * PERCENT


def _report_fn(keys: list[str], critical: list[int], binary: bool):
    """f(x, y) -> {report key: fraction} for the keys asked (one multi-class report per call)."""
    fns = {}
    if not binary:
        others = lambda z: [k for k in range(z.shape[1]) if k not in critical]  # noqa: E731
        for key in keys:
            if key == "accuracy":
                fns[key] = accuracy
            elif key == "acc_other":
                fns[key] = lambda z, y: class_accuracy(z, y, others(z))
            elif key.startswith("acc_c"):
                fns[key] = _class_acc(int(key[5:]))
            elif key.startswith("error@"):
                tpr, _, c = key[6:].partition("tpr")
                c = int(c.removeprefix("_c")) if c else critical[0]
                fns[key] = _error_at(int(tpr) / 100, c, critical)
        return lambda z, y: {k: _safe(f, z, y) for k, f in fns.items()}
    for key in keys:
        if key == "auc":
            fns[key] = roc_auc
        elif key.endswith("tpr"):
            fns[key] = (lambda t: lambda s, y: fpr_at_tpr(s, y, t))(int(key[4:-3]) / 100)
        elif key.endswith("fn"):
            fns[key] = (lambda k: lambda s, y: fpr_at_fn(s, y, k))(int(key[4:-2]))
    return lambda s, y: {k: f(s, y) for k, f in fns.items()}


def _class_acc(c: int):
    return lambda z, y: class_accuracy(z, y, [c])


def _error_at(tpr: float, c: int, critical: list[int]):
    def fn(z, y):
        return error_at_tpr(z, y, c, tpr, non_critical=[k for k in range(z.shape[1]) if k not in critical])

    return fn


def _safe(f, x, y) -> float:
    """A metric of one bootstrap replicate; NaN when the replicate lacks a class it needs."""
    try:
        return f(x, y)
    except ValueError:
        return float("nan")


def _arrays(test: dict, binary: bool, order=None) -> tuple[np.ndarray, np.ndarray]:
    order = slice(None) if order is None else order
    if binary:
        return test["scores"][order], test["labels"][order].astype(bool)
    return test["logits"][order], test["labels"][order]


def bootstrap(out: Outcome, metrics: tuple[str, ...], n: int, seed: int = 0
              ) -> dict[str, tuple[float, float]]:
    """95% intervals in percent of the row's metrics asked, over its members (training seeds) and
    its test samples (`evidence` on the one arm): value ± t · se, centred on the value."""
    out_ = {}
    for metric in metrics:
        ev = evidence([out], metric, n)
        if ev is not None and np.isfinite(ev["lo"]):
            out_[metric] = (ev["lo"], ev["hi"])
    return out_


def paired(a: Outcome, b: Outcome, metric: str, n: int, seed: int = 0) -> dict | None:
    """a against b on the same test samples: the difference a - b in percent with its paired
    bootstrap 95% interval, and for AUC the DeLong p. None if they do not share their test set."""
    ta, tb = a.test, b.test
    if a.binary != b.binary or not np.array_equal(np.sort(ta["ids"]), np.sort(tb["ids"])):
        return None
    key = report_key(metric, a.critical)
    if key is None:
        return None
    xa, y = _arrays(ta, a.binary, np.argsort(ta["ids"]))
    xb, _ = _arrays(tb, b.binary, np.argsort(tb["ids"]))
    fn = _report_fn([key], a.critical, a.binary)
    diff = fn(xa, y)[key] - fn(xb, y)[key]
    draws = resample_indices(y, n, seed, stratified=a.binary)
    reps = [fn(xa[i], y[i])[key] - fn(xb[i], y[i])[key] for i in draws]
    lo, hi = np.nanquantile(reps, [0.025, 0.975])
    out = {"diff": diff * PERCENT, "lo": float(lo) * PERCENT, "hi": float(hi) * PERCENT}
    if a.binary and key == "auc":
        out["p"] = delong_test(xa, xb, y).p
    return out


# -- evidence: one test for every row interval, comparison and claim ------------------------------------
def shared_test(outcomes: list[Outcome]) -> bool:
    """Whether the arms were tested on the same samples (ids) with the same kind of output."""
    first = outcomes[0]
    return all(o.binary == first.binary and np.array_equal(o.member_test[0], first.member_test[0])
               for o in outcomes[1:])


def _arm_metric(key: str, critical: list[int], binary: bool) -> comparison.ArmMetric:
    """A report key as a function of (ensemble outputs [R, N(, C)], labels [R, N]) -> [R]."""
    if binary and (key == "auc" or (key.startswith("fpr@") and key.endswith("tpr"))):
        return comparison.binary_metric(key)
    fn = _report_fn([key], critical, binary)

    def metric(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.array([_safe(lambda z, t: fn(z, t)[key], x[r], y[r]) for r in range(x.shape[0])])
    return metric


_EVIDENCE: dict = {}


def evidence(outcomes: list[Outcome], metric: str, n: int, statistic: comparison.Statistic | None = None,
             margin: float | None = None, name: str = "") -> dict | None:
    """`hightpr.metrics.comparison.compare` on these ensembles' members, in percent: one arm's
    value, arm 0 − arm 1, or `statistic` (named `name`, for the memo) of the arms' values; None if
    they were not tested on the same samples or the metric has no per-sample form.

    Ensembles of different sizes are compared like with like (`comparison.like_with_like`: each
    arm's first k members, k the smallest size). The test-sample draws
    are seeded by the arms' keys and the metric, so the same comparison gets the same numbers in
    every table that holds it."""
    if not outcomes or any(o is None for o in outcomes) or not shared_test(outcomes):
        return None
    memo = (tuple((o.key, str(o.path)) for o in outcomes), metric, n, margin, name if statistic else "")
    if memo not in _EVIDENCE:
        first = outcomes[0]
        key = report_key(metric, first.critical)
        if key is None:
            return None
        _, y, _ = first.member_test
        arms, truncated = comparison.like_with_like([comparison.Arm(o.member_test[2], o.seeds)
                                                     for o in outcomes])
        seed = zlib.crc32("|".join([*(o.key for o in outcomes), metric]).encode())
        _EVIDENCE[memo] = comparison.compare(
            arms, y, _arm_metric(key, first.critical, first.binary), statistic, n=n, seed=seed,
            margin=margin, stratified=first.binary, scale=PERCENT)
        _EVIDENCE[memo]["truncated"] = truncated
    return _EVIDENCE[memo]
