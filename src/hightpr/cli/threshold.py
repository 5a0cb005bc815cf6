"""`hightpr-threshold RUN_DIR --tpr 0.95 --delta 0.05 --rule np`: a deployment threshold with a promise.

Reads a finished run's (or ensemble's) `logits_val.npz` and `logits_test.npz`, and prints the
threshold of the chosen rule (`hightpr.metrics.thresholds`; default the Neyman-Pearson threshold,
P(population TPR < tpr) <= delta) with its validation and test rates, beside the plain
validation-quantile threshold (`threshold_at_tpr`: median-unbiased, no guarantee). No training, no GPU.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from hightpr.errors import HightprError, command
from hightpr.help import HelpFormatter
from hightpr.metrics.operating_point import rates_at_threshold, threshold_at_tpr
from hightpr.metrics.roc import fpr_at_tpr
from hightpr.metrics.thresholds import DEFAULT_RULE, RULES, check_rule, describe
from hightpr.runs import load_logits, logits_path


def load_split(run_dir: Path, stage: str) -> dict[str, np.ndarray]:
    """Scores and binary labels of one split; a clear error for what a binary run never writes."""
    file = logits_path(run_dir, stage)
    if not file.is_file():
        hint = " (an ensemble writes it only when its members share the validation set)" \
            if stage == "val" else ""
        raise HightprError(f"{file}: not found; give a finished binary run or ensemble dir{hint}")
    out = load_logits(file)
    missing = {"scores", "labels"} - set(out)
    if missing:
        raise HightprError(f"{file} lacks {sorted(missing)}: not a logits file written by hightpr")
    logits, labels = out.get("logits"), np.asarray(out["labels"]).reshape(-1)
    if (logits is not None and logits.ndim == 2 and logits.shape[1] > 2) or not np.isin(labels, (0, 1)).all():
        classes = logits.shape[1] if logits is not None and logits.ndim == 2 else "several"
        raise HightprError(f"{file}: multi-class logits ({classes} classes); thresholds need a binary run")
    return {"scores": np.asarray(out["scores"], dtype=np.float64).reshape(-1), "labels": labels}


def point(val: dict[str, np.ndarray], test: dict[str, np.ndarray], threshold: float, tpr: float) -> dict:
    """Validation and test TPR/FPR at `threshold`, and whether the test TPR reaches the target."""
    val_tpr, val_fpr = rates_at_threshold(val["scores"], val["labels"], threshold)
    test_tpr, test_fpr = rates_at_threshold(test["scores"], test["labels"], threshold)
    return {"threshold": threshold, "val_tpr": val_tpr, "val_fpr": val_fpr, "test_tpr": test_tpr,
            "test_fpr": test_fpr, "held": bool(test_tpr >= tpr)}


def thresholds(run_dir: Path, tpr: float, delta: float, rule: str = DEFAULT_RULE) -> dict:
    """The chosen rule's (`guaranteed`) and the validation-quantile thresholds of a run, with their rates."""
    run_dir = Path(run_dir)
    check_rule(rule)
    if not run_dir.is_dir():
        raise HightprError(f"{run_dir}: no such directory (give a run or ensemble dir)")
    val, test = load_split(run_dir, "val"), load_split(run_dir, "test")
    n_pos = int(val["labels"].sum())
    chosen = describe(rule, val["scores"], val["labels"], tpr, delta)  # raises with the minimum positives
    guaranteed = point(val, test, chosen["threshold"], tpr)
    guaranteed.update({k: chosen[k] for k in ("k", "n", "violation_probability", "expected_fnr")})
    quantile = point(val, test, threshold_at_tpr(val["scores"], val["labels"], tpr), tpr)
    return {"run_dir": str(run_dir), "rule": rule, "target_tpr": tpr, "delta": delta,
            "val_positives": n_pos, "val_negatives": int((val["labels"] == 0).sum()),
            "test_positives": int(test["labels"].sum()), "test_negatives": int((test["labels"] == 0).sum()),
            "guaranteed": guaranteed, "validation_quantile": quantile,
            "oracle_test_fpr": fpr_at_tpr(test["scores"], test["labels"], tpr)}


def ordinal(k: int) -> str:
    """1st, 2nd, 3rd, 4th, ..., 11th, 12th, 13th, 21st: how the order statistic is read out."""
    suffix = "th" if k % 100 in (11, 12, 13) else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
    return f"{k}{suffix}"


def _rates(p: dict) -> list[str]:
    """Validation and test rates at one threshold, and whether test reaches the target."""
    held = "reaches" if p["held"] else "misses"
    return [f"  validation  TPR {p['val_tpr']:.4f}  FPR {p['val_fpr']:.4f}",
            f"  test        TPR {p['test_tpr']:.4f}  FPR {p['test_fpr']:.4f}  ({held} the target)"]


def _promise(res: dict) -> str:
    """The chosen rule's promise in one line, with the order statistic it picked."""
    g, tpr, delta, rule = res["guaranteed"], res["target_tpr"], res["delta"], res.get("rule", DEFAULT_RULE)
    at = f"{ordinal(g['k'])} lowest of {g['n']} validation positives"
    if rule in ("np", "ltt"):
        return (f"  P(population TPR < {tpr:g}) <= {delta:g}, exact for continuous scores, {at} "
                f"(violation probability {g['violation_probability']:.4f})")
    if rule == "crc":
        return (f"  E[population TPR] >= {tpr:g} (expected miss rate {g['expected_fnr']:.4f}), {at}; "
                f"P(population TPR < {tpr:g}) = {g['violation_probability']:.4f} for continuous scores")
    return (f"  no guarantee: {at}; P(population TPR < {tpr:g}) = {g['violation_probability']:.4f} "
            "for continuous scores")


def report_text(res: dict) -> str:
    """The two thresholds, the promise and the rates, as a few aligned lines."""
    g, q, tpr = res["guaranteed"], res["validation_quantile"], res["target_tpr"]
    rule = RULES[res.get("rule", DEFAULT_RULE)]
    name = "guaranteed threshold" if rule.name in ("np", "ltt") else "threshold"
    lines = [f"{res['run_dir']}: validation {res['val_positives']} positives / {res['val_negatives']} "
             f"negatives, test {res['test_positives']} / {res['test_negatives']}",
             f"{name} ({rule.title}): {g['threshold']:.6g}",
             _promise(res),
             *_rates(g),
             f"validation-quantile threshold (TPR >= {tpr:g} on validation, no guarantee): "
             f"{q['threshold']:.6g}",
             *_rates(q),
             f"oracle test FPR at TPR {tpr:g} (threshold picked on test): {res['oracle_test_fpr']:.4f}"]
    return "\n".join(lines)


@command
def main(argv: list[str] | None = None) -> int:
    """Entry point of `hightpr-threshold`; returns 2 with one `error:` line on a problem."""
    parser = argparse.ArgumentParser(
        prog="hightpr-threshold",
        description="Threshold for a target TPR chosen on the validation positives by a rule (np: "
                    "P(population TPR < tpr) <= delta, Neyman-Pearson order statistic), beside the plain "
                    "validation-quantile threshold.",
        formatter_class=HelpFormatter)
    parser.add_argument("run_dir", type=Path,
                        help="run or ensemble dir holding logits_val.npz and logits_test.npz")
    parser.add_argument("--tpr", type=float, default=0.95, help="target TPR in (0, 1)")
    parser.add_argument("--delta", type=float, default=0.05, help="allowed probability of missing the target")
    parser.add_argument("--rule", default=DEFAULT_RULE, metavar="{" + ",".join(RULES) + "}",
                        help="np: Neyman-Pearson, P(TPR < tpr) <= delta; ltt: learn-then-test, the same "
                             "promise; crc: conformal risk control, E[TPR] >= tpr; quantile: no guarantee")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    res = thresholds(args.run_dir, args.tpr, args.delta, args.rule)
    print(json.dumps(res, indent=2) if args.json else report_text(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
