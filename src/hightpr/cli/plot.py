"""`hightpr-plot roc RUN... -o roc.png`: figures from saved runs (no training, no GPU)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hightpr.cli.compare import load_run, run_label
from hightpr.errors import HightprError, command
from hightpr.help import HelpFormatter


def roc_command(args: argparse.Namespace) -> Path:
    from hightpr.plots import plot_roc

    labels = args.labels or [run_label(p) for p in args.runs]
    if len(labels) != len(args.runs):
        raise HightprError(f"--labels gives {len(labels)} names for {len(args.runs)} runs")
    curves = []
    for path, label in zip(args.runs, labels, strict=True):
        out = load_run(path, args.stage)
        curves.append((label, out["scores"], out["labels"]))
    zoom = None if args.zoom <= 0 else args.zoom
    plot_roc(curves, args.out, zoom_tpr=zoom, title=args.title)
    return args.out


@command
def main(argv: list[str] | None = None) -> int:
    """Entry point of `hightpr-plot`; returns 2 with one `error:` line on a problem."""
    parser = argparse.ArgumentParser(prog="hightpr-plot", description="Figures from saved runs.",
                                     formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="figure", required=True)
    roc = sub.add_parser("roc", help="ROC curves of several runs on one axis, zoom on high TPR "
                                      "(RankReg Fig. 3)", formatter_class=HelpFormatter)
    roc.add_argument("runs", type=Path, nargs="+", help="run or ensemble dirs, or logits_*.npz files")
    roc.add_argument("-o", "--out", type=Path, default=Path("roc.png"), help="output .png, .pdf or .svg")
    roc.add_argument("--labels", nargs="+", default=None, help="legend names, one per run")
    roc.add_argument("--zoom", type=float, default=0.9, help="inset on TPR >= this (0: no inset)")
    roc.add_argument("--stage", default="test", choices=("test", "val"))
    roc.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    out = roc_command(args)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
