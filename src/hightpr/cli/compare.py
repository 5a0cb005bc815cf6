"""`hightpr-compare RUN_A RUN_B`: DeLong test (and optional bootstrap CIs) for two saved runs.

A RUN is a run dir, an ensemble dir (anything holding `logits_test.npz`) or a `logits_*.npz`
file. Both must have been tested on the same samples (same ids). Two ensembles of at least two
finished members each also get the tables' test over members and test samples
(`hightpr.metrics.comparison.compare`), paired seed by seed where their members share seeds.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np

from hightpr.ensemble import seed_of
from hightpr.errors import HightprError, command
from hightpr.help import HelpFormatter
from hightpr.metrics import comparison
from hightpr.metrics.bootstrap import default_metrics, paired_bootstrap
from hightpr.metrics.delong import delong_covariance, delong_test
from hightpr.runs import finished_members, load_logits, logits_path


def run_label(path: Path) -> str:
    """A short name for a run: its folder, with the parent for generic names (member_03, timestamps)."""
    path = Path(path)
    if path.suffix == ".npz":
        path = path.parent
    name = path.name
    if re.fullmatch(r"member_\d+|\d+|\d{8}-\d{6}.*", name):
        name = f"{path.parent.name}/{name}"
    return name


def load_run(path: Path, stage: str = "test") -> dict[str, np.ndarray]:
    """Scores, labels and ids of a run (dir or npz file), sorted by sample id."""
    path = Path(path)
    file = path if path.suffix == ".npz" else logits_path(path, stage)
    if not file.is_file():
        hint = " (an ensemble writes it when aggregated: hightpr-ensemble DIR)" if path.is_dir() else ""
        raise HightprError(f"{file}: not found; give a finished run or ensemble dir{hint}")
    out = load_logits(file)
    missing = {"scores", "labels", "ids"} - set(out)
    if missing:
        raise HightprError(f"{file} lacks {sorted(missing)}: not a logits file written by hightpr")
    order = np.argsort(out["ids"], kind="stable")
    return {k: np.asarray(out[k])[order] for k in ("scores", "labels", "ids")}


def paired(a: dict[str, np.ndarray], b: dict[str, np.ndarray], name_a: str, name_b: str) -> np.ndarray:
    """The common labels of two runs; a clear error unless both were tested on the same samples."""
    if a["ids"].shape != b["ids"].shape or not np.array_equal(a["ids"], b["ids"]):
        common = len(np.intersect1d(a["ids"], b["ids"]))
        raise HightprError(f"{name_a} ({len(a['ids'])} samples) and {name_b} ({len(b['ids'])} samples) were "
                           f"tested on different samples ({common} ids in common): compare runs of the same "
                           "dataset and test split")
    if not np.array_equal(a["labels"], b["labels"]):
        raise HightprError(f"{name_a} and {name_b} disagree on the labels of the same sample ids")
    return a["labels"]


def member_arm(path: Path, stage: str = "test") -> tuple[np.ndarray, np.ndarray, comparison.Arm] | None:
    """(ids, labels, the members' scores and seeds) of an ensemble dir with >= 2 finished members,
    samples sorted by id; None for anything else."""
    path = Path(path)
    members = finished_members(path) if path.is_dir() else {}
    if len(members) < 2:
        return None
    runs = [load_run(d, stage) for d in members.values()]
    if any(not np.array_equal(r["ids"], runs[0]["ids"]) for r in runs):
        return None
    seeds = [seed_of(d) for d in members.values()]
    known = None if None in seeds else tuple(int(s) for s in seeds)
    return runs[0]["ids"], runs[0]["labels"], comparison.Arm(np.stack([r["scores"] for r in runs]), known)


def members_test(path_a: Path, path_b: Path, stage: str, tprs: tuple[float, ...], n: int, seed: int,
                 level: float) -> dict | None:
    """{metric: evidence} of A − B over members and test samples (percent), None unless both are
    ensembles of >= 2 members tested on the same samples; ensembles of different sizes are cut to
    the smaller, as the tables compare them."""
    a, b = member_arm(path_a, stage), member_arm(path_b, stage)
    if a is None or b is None or not np.array_equal(a[0], b[0]):
        return None
    labels = a[1].astype(bool)
    metrics = ["auc", *(f"fpr@{round(t * 100)}tpr" for t in tprs)]
    arms, truncated = comparison.like_with_like([a[2], b[2]])   # as the tables compare them
    return {m: {**comparison.compare(arms, labels, m, n=n, seed=seed, level=level, scale=100.0),
                "truncated": truncated} for m in metrics}


def compare(path_a: Path, path_b: Path, stage: str = "test", bootstrap: int = 0,
            tprs: tuple[float, ...] = (0.90, 0.95, 0.98), seed: int = 0, level: float = 0.95) -> dict:
    """DeLong test of AUC(a) = AUC(b) and, with `bootstrap` > 0, paired bootstrap intervals."""
    a, b = load_run(path_a, stage), load_run(path_b, stage)
    labels = paired(a, b, str(path_a), str(path_b))
    res = delong_test(a["scores"], b["scores"], labels)
    _, cov = delong_covariance([a["scores"], b["scores"]], labels)
    var_diff = max(float(cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]), 0.0)
    out = {"a": str(path_a), "b": str(path_b), "stage": stage, "n_pos": int((labels == 1).sum()),
           "n_neg": int((labels == 0).sum()), "auc_a": res.auc_a, "auc_b": res.auc_b,
           "auc_diff": res.auc_a - res.auc_b, "se_diff": float(np.sqrt(var_diff)), "z": res.z, "p": res.p}
    if bootstrap:
        intervals = paired_bootstrap(a["scores"], b["scores"], labels, default_metrics(tprs), n=bootstrap,
                                     seed=seed, level=level)
        out["bootstrap"] = {"n": bootstrap, "level": level, "seed": seed, "metrics": intervals}
    got = members_test(path_a, path_b, stage, tprs, bootstrap or 1000, seed, level)
    if got is not None:
        out["members_test"] = {m: {k: (list(v) if isinstance(v, tuple) else v) for k, v in ev.items()}
                               for m, ev in got.items()}
    return out


def report_text(res: dict) -> str:
    la, lb = run_label(Path(res["a"])), run_label(Path(res["b"]))
    width = max(len(la), len(lb))
    lines = [f"{res['stage']} set: {res['n_pos']} positives, {res['n_neg']} negatives",
             f"A  {la:<{width}}  AUC {res['auc_a']:.4f}   ({res['a']})",
             f"B  {lb:<{width}}  AUC {res['auc_b']:.4f}   ({res['b']})",
             f"DeLong, two-sided: AUC A - B = {res['auc_diff']:+.4f} (SE {res['se_diff']:.4f}), "
             f"z = {res['z']:.3f}, p = {res['p']:.4g}"]
    if "bootstrap" in res:
        bs = res["bootstrap"]
        pct = f"{bs['level'] * 100:g}%"
        lines.append(f"paired bootstrap ({bs['n']} stratified resamples, {pct} percentile intervals):")
        lines.append(f"{'metric':<11}{'A':>26}{'B':>26}{'A - B':>28}")
        for name, r in bs["metrics"].items():
            cells = [f"{r[k]:.4f} [{r[k + '_lo']:.4f}, {r[k + '_hi']:.4f}]" for k in ("a", "b")]
            diff = f"{r['diff']:+.4f} [{r['diff_lo']:+.4f}, {r['diff_hi']:+.4f}]"
            lines.append(f"{name:<11}{cells[0]:>26}{cells[1]:>26}{diff:>28}")
    if "members_test" in res:
        first = next(iter(res["members_test"].values()))
        pct = f"{first['level'] * 100:g}%"
        ma, mb = first["members"]
        paired = ", paired by seed" if first["paired"] else ""
        if first.get("truncated"):
            paired += f", the larger cut to its first {ma}, like with like"
        lines.append(f"members x test samples (the tables' test; {ma} and {mb} members{paired}; percent, "
                     f"{pct} interval, t reference):")
        for name, ev in res["members_test"].items():
            lines.append(f"{name:<11}A - B {ev['diff']:+.2f} [{ev['lo']:+.2f}, {ev['hi']:+.2f}]  "
                         f"se {ev['se']:.2f} (members {ev['se_members']:.2f}, test {ev['se_test']:.2f})  "
                         f"p {ev['p']:.3g}")
    return "\n".join(lines)


@command
def main(argv: list[str] | None = None) -> int:
    """Entry point of `hightpr-compare`; returns 2 with one `error:` line on a problem."""
    parser = argparse.ArgumentParser(
        formatter_class=HelpFormatter,
        prog="hightpr-compare",
        description="DeLong test for the AUCs of two runs or ensembles scored on the same test set "
                    "(ALM appendix F); optional paired bootstrap CIs for AUC and FPR@TPR.")
    parser.add_argument("run_a", type=Path, help="run or ensemble dir, or a logits_*.npz file")
    parser.add_argument("run_b", type=Path)
    parser.add_argument("--stage", default="test", choices=("test", "val"), help="which saved logits")
    parser.add_argument("--bootstrap", type=int, default=0, metavar="N",
                        help="also N paired bootstrap resamples (e.g. 1000) for CIs of AUC and FPR@TPR")
    parser.add_argument("--tprs", type=float, nargs="+", default=[0.90, 0.95, 0.98],
                        help="TPRs of the bootstrapped FPR@TPR (default 0.90 0.95 0.98)")
    parser.add_argument("--level", type=float, default=0.95, help="confidence level (default 0.95)")
    parser.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(argv)
    if args.bootstrap < 0:
        raise HightprError(f"--bootstrap must be >= 0, got {args.bootstrap}")
    if not 0 < args.level < 1:
        raise HightprError(f"--level must be in (0, 1), got {args.level} (write 0.95, not 95)")
    res = compare(args.run_a, args.run_b, args.stage, args.bootstrap, tuple(args.tprs), args.seed, args.level)
    print(json.dumps(res, indent=2) if args.json else report_text(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
