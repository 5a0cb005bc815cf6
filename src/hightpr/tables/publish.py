"""Render any declared table or figure from saved runs: the one entry the commands and the site use.

Tables render in `hightpr.tables.render`, figures (which build on it) in `hightpr.tables.figures`;
choosing between them here keeps the two modules from importing each other.
"""

from __future__ import annotations

import pandas as pd

from hightpr.tables.figures import render_figure
from hightpr.tables.output import TableOutput
from hightpr.tables.render import render_paper_table
from hightpr.tables.runner import Context
from hightpr.tables.specs import TableSpec


def render_output(spec: TableSpec, ctx: Context, write: bool = True) -> TableOutput:
    """The markdown, tidy CSV and JSON of a table or figure (written to results/tables/<scale>/)."""
    if spec.is_figure:
        return render_figure(spec, ctx, write)
    return render_paper_table(spec, ctx, write)


def render_table(spec: TableSpec, ctx: Context, write: bool = True) -> tuple[str, pd.DataFrame]:
    """The markdown and tidy CSV of a table or figure (all three files written, as `render_output`)."""
    out = render_output(spec, ctx, write)
    return out.md, out.csv
