"""Every command's --help shows the defaults of its options (one formatter: hightpr.help)."""

from __future__ import annotations

import importlib

import pytest

# (module with main(argv), argv, an option whose default the help must show)
COMMANDS = [
    ("hightpr.cli.compare", ["--help"], "(default: test)"),
    ("hightpr.cli.ensemble", ["--help"], "(default:"),
    ("hightpr.cli.plot", ["roc", "--help"], "(default: roc.png)"),
    ("hightpr.cli.select", ["--help"], "(default:"),
    ("hightpr.cli.threshold", ["--help"], "(default: np)"),
    ("hightpr.cli.site", ["--help"], "(default ./results"),
    ("hightpr.cli.status", ["--help"], "(default:"),
    ("hightpr.cli.tables", ["render", "--help"], "(default:"),
    ("hightpr.data.prepare", ["--help"], "(default:"),
    ("hightpr.cli.predict", ["--help"], "(default: 0.95)"),
    ("hightpr.cli.export", ["--help"], "(default: 0.95)"),
]


@pytest.mark.parametrize(("module", "argv", "shown"), COMMANDS,
                         ids=[c[0].rsplit(".", 1)[1] for c in COMMANDS])
def test_help_shows_defaults(module, argv, shown, capsys):
    with pytest.raises(SystemExit) as stop:
        importlib.import_module(module).main(argv)
    out = capsys.readouterr().out
    assert stop.value.code == 0 and shown in " ".join(out.split()), out
