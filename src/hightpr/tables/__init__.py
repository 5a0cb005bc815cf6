"""The papers' tables and figures as `make` targets: specs as data, runs in a pool, ours beside theirs.

specs.py (tables.yaml, recipes.yaml, scales.yaml) -> cells.py (a cell's runs at a scale) ->
runner.py (train what is missing) -> results.py (read saved runs) -> render.py / figures.py /
claims.py (markdown + tidy CSV). Entry point: `python -m hightpr.cli.tables` (docs/tables.md).
"""
