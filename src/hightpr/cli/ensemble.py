"""`hightpr-ensemble DIR`: aggregate whatever members of an ensemble dir finished and print the result.

Training an ensemble is `python train.py ensemble.members=10 ...` (the missing members, then the
aggregate) or `python train.py ensemble.member=3 ...` (member 3 only: one cluster job per member);
both are `hightpr.training.train_members`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hightpr.errors import HightprError, command
from hightpr.help import HelpFormatter


@command
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        formatter_class=HelpFormatter,
        prog="hightpr-ensemble",
        description="Aggregate the finished members of an ensemble dir (average their logits, report the "
                    "ensemble beside the members' mean ± std) and append its row to runs.csv.")
    parser.add_argument("ensemble_dir", type=Path, help="outputs/<name>/ensembles/<key>")
    parser.add_argument("--critical", type=int, nargs="+", default=None,
                        help="critical class(es) for multi-class members (Error@TPR, accuracies)")
    parser.add_argument("--runs-csv", type=Path, default=None,
                        help="table for the ensemble row (default: <name>/runs.csv beside ensembles/)")
    parser.add_argument("--no-csv", action="store_true", help="do not append a row to runs.csv")
    args = parser.parse_args(argv)
    from hightpr.ensemble import finish_ensemble, summary_text, unfinished_members

    edir = args.ensemble_dir
    if not edir.is_dir():
        raise HightprError(f"{edir}: no such directory (expected outputs/<name>/ensembles/<key>)")
    evaluator = None
    if args.critical:
        from hightpr.metrics.multiclass import MulticlassEvaluator

        evaluator = MulticlassEvaluator(args.critical)
    runs_csv = None if args.no_csv else (args.runs_csv or edir.resolve().parents[1] / "runs.csv")
    metrics = finish_ensemble(edir, runs_csv, evaluator)
    print(summary_text(edir, metrics))
    missing = unfinished_members(edir)
    if missing:
        print(f"unfinished member dirs (not used): {', '.join(missing)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
