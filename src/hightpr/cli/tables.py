"""`python -m hightpr.cli.tables`: the papers' tables and figures, ours beside theirs (`make table-...`).

    run NAME [--scale S] [--dry] [--rows R] [--launcher local|slurm]   train what is missing, render
    render [NAME ...] [--scale S]                                     re-render from saved runs only
    list                                                              every table and figure

NAME is `rankreg-t1` ... `alm-t16`, `almv1-t8`, `rankreg-f3`, `rankreg-f4`. Outputs:
`results/tables/<scale>/<name>.{md,csv,json}` (figures also `.png`); runs: `results/runs/<scale>/`.
docs/tables.md describes the scales, the data each table uses and the layout of results/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hightpr.errors import HightprError, command
from hightpr.help import HelpFormatter
from hightpr.tables.specs import SCALES, all_specs, get_scale, get_spec


def _context(args):
    from hightpr.tables.runner import Context

    paper = args.paper
    if paper is None and not (args.results / "paper").is_dir():
        paper = Path("results") / "paper"   # outputs elsewhere (--results /tmp/x): the repository's papers
    kwargs = {"results_dir": args.results, "paper_root": paper}
    if args.data_dir is not None:
        kwargs["data_dir"] = args.data_dir
    return lambda scale: Context(get_scale(scale).with_overrides(args.override), **kwargs)


def cmd_run(args) -> int:
    from hightpr.tables.publish import render_table
    from hightpr.tables.render import tables_dir
    from hightpr.tables.runner import dry_run, failure_message, format_listing, run_table

    spec = get_spec(args.name)
    ctx = _context(args)(args.scale)
    if args.dry:
        print(format_listing(spec, ctx, dry_run(spec, ctx, args.rows)))
        return 0
    summary = run_table(spec, ctx, args.rows, args.launcher, progress=not args.no_progress,
                        parallel=args.jobs)
    render_table(spec, ctx)
    total = summary.trained + summary.reused + len(summary.failures)
    print(f"{summary.line(spec, ctx.scale.name, total)} -> {tables_dir(ctx) / spec.name}.md")
    if summary.failures:
        raise HightprError(failure_message(summary))
    return 0


def cmd_render(args) -> int:
    from hightpr.tables.publish import render_table
    from hightpr.tables.render import has_ours, tables_dir

    make = _context(args)
    names = args.names or [n for n, s in all_specs().items() if s.is_figure == args.figures]
    scales = [args.scale] if args.scale else [s for s in SCALES if (args.results / "runs" / s).is_dir()]
    written = 0
    for scale in scales:
        ctx = make(scale)
        for name in names:
            spec = get_spec(name)
            if args.names or has_ours(spec, ctx):
                render_table(spec, ctx)
                written += 1
                print(f"rendered {tables_dir(ctx) / name}.md")
    if not written:
        print(f"nothing to render: no saved runs under {args.results / 'runs'} "
              f"for {', '.join(scales) or 'any scale'}")
    return 0


def cmd_list(args) -> int:
    for name, spec in all_specs().items():
        print(f"{name:<12} {spec.title}")
    return 0


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--results", type=Path, default=Path("results"),
                        help="where runs/ and tables/ go (default ./results, the repository's)")
    common.add_argument("--paper", type=Path, default=None,
                        help="the papers' CSVs (default <results>/paper, else ./results/paper)")
    common.add_argument("--data-dir", type=Path, default=None,
                        help="data dir (default $HIGHTPR_DATA_DIR, else ./data)")
    common.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="add a config override to every run (part of its key; printed in the table "
                             "header), e.g. --override trainer.max_epochs=1 to try a block quickly")
    p = argparse.ArgumentParser(prog="python -m hightpr.cli.tables", description=__doc__,
                                formatter_class=HelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", parents=[common], help="train what the table is missing, then render it",
                         formatter_class=HelpFormatter)
    run.add_argument("name")
    run.add_argument("--scale", choices=SCALES, default="cpu")
    run.add_argument("--dry", action="store_true", help="list the runs and which exist; compose and "
                     "validate every config; train nothing")
    run.add_argument("--rows", default=None,
                     help="a block name or comma-separated row patterns (bce*, bce+alm)")
    run.add_argument("--launcher", choices=("local", "slurm"), default=None,
                     help="run the missing members through this Hydra launcher instead of in-process")
    run.add_argument("--jobs", type=int, default=None, help="launcher: ensembles submitted at once")
    run.add_argument("--no-progress", action="store_true")
    run.set_defaults(func=cmd_run)
    render = sub.add_parser("render", parents=[common], help="re-render from saved runs (trains nothing)",
                            formatter_class=HelpFormatter)
    render.add_argument("names", nargs="*")
    render.add_argument("--scale", choices=SCALES, default=None,
                        help="one scale (default: every scale with saved runs)")
    render.add_argument("--figures", action="store_true",
                        help="without names: the figures instead of the tables")
    render.set_defaults(func=cmd_render)
    sub.add_parser("list", help="every table and figure").set_defaults(func=cmd_list)
    return p


@command
def main(argv: list[str] | None = None) -> int:
    """Entry point of `hightpr-tables`; returns 2 with one `error:` line on a problem."""
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
