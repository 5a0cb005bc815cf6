"""`hightpr-status [NAME ...] --scale S` (`make status`): every planned run of the tables at a scale,
finished / running (a live run.lock) / failed (first error line, log) / missing.

    hightpr-status rankreg-t1 --scale cpu    # each planned run of one table
    hightpr-status --scale cpu               # every table: a summary line, then its runs not missing
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hightpr.errors import command
from hightpr.help import HelpFormatter
from hightpr.tables.specs import SCALES


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hightpr-status", description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("names", nargs="*", help="tables or figures (default: all of them)")
    p.add_argument("--scale", choices=SCALES, default="cpu")
    p.add_argument("--results", type=Path, default=Path("results"))
    p.add_argument("--paper", type=Path, default=None,
                   help="the papers' CSVs (default <results>/paper, else ./results/paper)")
    p.add_argument("--all", action="store_true",
                   help="without names: list every planned run, missing ones too")
    return p


@command
def main(argv: list[str] | None = None) -> int:
    """Entry point of `hightpr-status`; returns 2 with one `error:` line on a problem."""
    args = parser().parse_args(argv)
    from hightpr.site.model import scale_context
    from hightpr.site.status import PoolReader, format_table_status, table_status
    from hightpr.tables.specs import all_specs, get_spec

    paper = args.paper
    if paper is None and not (args.results / "paper").is_dir():
        paper = Path("results") / "paper"
    ctx = scale_context(args.scale, args.results, paper)
    specs = [get_spec(n) for n in args.names] if args.names else list(all_specs().values())
    reader = PoolReader(ctx.pool)
    if not ctx.pool.is_dir():
        print(f"no runs at scale {args.scale}: {ctx.pool} does not exist (every planned run is missing)")
    for spec in specs:
        states = table_status(spec, ctx, reader)
        print(format_table_status(spec, states, args.scale, every=bool(args.names) or args.all))
    return 0


if __name__ == "__main__":
    sys.exit(main())
