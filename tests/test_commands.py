"""Every console command has one error boundary (`hightpr.errors.command`): a bad argument is one
`error:` line on stderr and exit code 2, never a traceback; `HIGHTPR_DEBUG=1` lets the error through
with its stack. argparse's own refusals stay a usage line and exit code 2.

Covered: every `[project.scripts]` entry but `hightpr-train` (its Hydra entry point reads sys.argv
and is tested end to end in test_bad_input.py), `python -m hightpr.data.prepare` and
`python -m hightpr.model_card`.
"""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

import numpy as np
import pytest

from hightpr.errors import COMMAND_ERRORS, HightprError
from hightpr.runs import save_logits

ROOT = Path(__file__).resolve().parents[1]
NOT_HERE = {"hightpr-train"}  # the Hydra entry point: test_bad_input.py


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A finished binary run: validation and test logits, 60 positives and 60 negatives each."""
    rng = np.random.default_rng(0)
    run = tmp_path / "run"
    run.mkdir()
    for stage in ("val", "test"):
        labels = np.repeat([0, 1], 60)
        scores = rng.normal(size=labels.size) + 1.5 * labels
        save_logits(run, stage, {"scores": scores, "labels": labels, "ids": np.arange(labels.size),
                                 "logits": scores[:, None]})
    return run


# (script, module, argv with TMP/RUN placeholders, a fragment of the one error line)
BAD_ARGUMENTS = [
    ("hightpr-ensemble", "hightpr.cli.ensemble", ["TMP/nope"], "no such directory"),
    ("hightpr-compare", "hightpr.cli.compare", ["TMP/a", "TMP/b"], "not found"),
    ("hightpr-compare", "hightpr.cli.compare", ["RUN", "RUN", "--level", "95"], "--level must be in (0, 1)"),
    ("hightpr-plot", "hightpr.cli.plot", ["roc", "TMP/missing", "-o", "TMP/r.png"], "not found"),
    ("hightpr-plot", "hightpr.cli.plot", ["roc", "RUN", "-o", "TMP/r.bmp"], "the figure format"),
    ("hightpr-threshold", "hightpr.cli.threshold", ["TMP/missing"], "no such directory"),
    ("hightpr-threshold", "hightpr.cli.threshold", ["RUN", "--tpr", "1.5"], "tpr must be in (0, 1)"),
    ("hightpr-select", "hightpr.cli.select", ["TMP/no.csv", "--params", "reg.mu0"], "no such runs table"),
    ("hightpr-tables", "hightpr.cli.tables", ["render", "nope-t99", "--scale", "cpu", "--results", "TMP"],
     "no table or figure"),
    ("hightpr-site", "hightpr.cli.site", ["TMP/site", "--table", "nope-t99"], "no table or figure"),
    ("hightpr-site", "hightpr.cli.site", ["TMP/site", "--results", "TMP/typo"], "no such folder"),
    ("hightpr-status", "hightpr.cli.status", ["nope-t99", "--results", "TMP"], "no table or figure"),
    ("hightpr-predict", "hightpr.cli.predict", ["TMP/nope", "TMP", "--out", "TMP/p.csv"], "no such folder"),
    ("hightpr-predict", "hightpr.cli.predict", ["RUN", "TMP", "--out", "TMP/p.csv"], "holds no finished run"),
    ("hightpr-export", "hightpr.cli.export", ["TMP/nope", "--out", "TMP/m.pt2"], "no such folder"),
    ("hightpr-export", "hightpr.cli.export", ["RUN", "--out", "TMP/m.pt2"], "holds no finished run"),
    ("hightpr-export", "hightpr.cli.export", ["RUN", "--out", "TMP/m.onnx"], "a .pt2 file"),
    (None, "hightpr.data.prepare", ["cifar10", "--from", "TMP/missing.tar.gz", "--data-dir", "TMP"],
     "not found"),
    (None, "hightpr.model_card", ["TMP/nope"], "no such folder"),
    (None, "hightpr.model_card", ["RUN"], "holds no finished run or ensemble"),
]
IDS = [f"{m.rsplit('.', 1)[1]}-{i}" for i, (_, m, _, _) in enumerate(BAD_ARGUMENTS)]


def _argv(argv: list[str], tmp: Path, run: Path) -> list[str]:
    """The placeholders TMP (a fresh folder) and RUN (a finished run) filled in."""
    return [str(run) if a == "RUN" else a.replace("TMP", str(tmp)) for a in argv]


def test_every_console_command_is_covered():
    """A command added to pyproject.toml gets a bad-argument case here."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    covered = {script for script, *_ in BAD_ARGUMENTS if script}
    assert set(scripts) - NOT_HERE == covered
    for script, module, *_ in BAD_ARGUMENTS:
        if script:
            assert scripts[script] == f"{module}:main"


@pytest.mark.parametrize(("script", "module", "argv", "says"), BAD_ARGUMENTS, ids=IDS)
def test_a_bad_argument_is_one_error_line_and_exit_2(script, module, argv, says, tmp_path, run_dir, capsys,
                                                     monkeypatch):
    monkeypatch.delenv("HIGHTPR_DEBUG", raising=False)
    main = importlib.import_module(module).main
    code = main(_argv(argv, tmp_path, run_dir))
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err
    assert len(lines) == 1 and says in lines[0], err
    assert "Traceback" not in err, err


@pytest.mark.parametrize(("script", "module", "argv", "says"), BAD_ARGUMENTS, ids=IDS)
def test_debug_mode_lets_the_error_through_with_its_stack(script, module, argv, says, tmp_path, run_dir,
                                                          monkeypatch):
    monkeypatch.setenv("HIGHTPR_DEBUG", "1")
    main = importlib.import_module(module).main
    with pytest.raises(COMMAND_ERRORS) as raised:
        main(_argv(argv, tmp_path, run_dir))
    assert says in str(raised.value)
    assert raised.traceback  # the stack reaches the user (Python prints it, exit code 1)


@pytest.mark.parametrize(("module", "argv"), [
    ("hightpr.cli.compare", ["RUN", "RUN", "--stage", "train"]),
    ("hightpr.cli.threshold", ["RUN", "--tpr", "high"]),
    ("hightpr.cli.tables", ["render", "--scale", "huge"]),
    ("hightpr.data.prepare", ["imagenet"]),
])
def test_argparse_refusals_stay_a_usage_line(module, argv, tmp_path, run_dir, capsys):
    with pytest.raises(SystemExit) as stop:
        importlib.import_module(module).main(_argv(argv, tmp_path, run_dir))
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("usage:") and "Traceback" not in err


def test_other_errors_are_not_swallowed(monkeypatch):
    """Only user errors become one line: a bug keeps its traceback."""
    from hightpr.errors import command

    @command
    def broken(argv: list[str] | None = None) -> int:
        """A command with a bug."""
        raise TypeError("a bug")

    @command
    def refuses(argv: list[str] | None = None) -> int:
        """A command that refuses its input."""
        raise HightprError("give a run dir")

    monkeypatch.delenv("HIGHTPR_DEBUG", raising=False)
    with pytest.raises(TypeError):
        broken([])
    assert refuses([]) == 2
    assert broken.__doc__ == "A command with a bug."
