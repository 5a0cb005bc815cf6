"""`hightpr-site [OUT]` (`make site`): the results site, static HTML built from saved runs.

    hightpr-site site --results results      # site/index.html, one page per table, status, figures

Open `OUT/index.html` in a browser (file://) or serve the folder (`python -m http.server -d site`).
docs/site.md describes the pages.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hightpr.errors import HightprError, command
from hightpr.help import HelpFormatter
from hightpr.tables.specs import SCALES


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hightpr-site", description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("out", nargs="?", type=Path, default=Path("site"),
                   help="where the site goes (default ./site)")
    p.add_argument("--results", type=Path, default=Path("results"),
                   help="runs/, tables/ and paper/ (default ./results, the repository's)")
    p.add_argument("--paper", type=Path, default=None,
                   help="the papers' CSVs (default <results>/paper, else ./results/paper)")
    p.add_argument("--scale", action="append", choices=SCALES, default=None,
                   help="only these scales (repeat; default all three)")
    p.add_argument("--table", action="append", default=None, metavar="NAME",
                   help="only this table's page (repeat; the index and status still cover every table)")
    p.add_argument("--render", action="store_true",
                   help="render every table in memory from the saved runs instead of reading results/tables/")
    return p


@command
def main(argv: list[str] | None = None) -> int:
    """Entry point of `hightpr-site`; returns 2 with one `error:` line on a problem."""
    args = parser().parse_args(argv)
    if not args.results.is_dir():  # a typo would build a site of empty tables
        raise HightprError(f"--results {args.results}: no such folder (the saved runs are under "
                           "<results>/runs/<scale>/; default ./results)")
    from hightpr.site.build import build_site

    report = build_site(args.out, args.results, args.paper, tuple(args.scale or SCALES), args.render,
                        args.table)
    print("\n".join(report.lines()))
    print(f"open {(args.out / 'index.html').resolve().as_uri()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
