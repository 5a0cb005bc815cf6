"""Help, the composed config and a refused override answer without importing the training stack.

Importing Lightning takes seconds (torchmetrics, torch); `train.py --help`, `--cfg job` and a
refused `trainer.*` value must not wait for it. `python -X importtime` lists every module a
process imported, so the check reads what the real command imported.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "pytorch_lightning", "lightning_fabric", "torchmetrics", "pandas", "sklearn")


def imported(args: list[str], tmp_path: Path) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run `python -X importtime train.py ARGS`; its result and the top-level packages it imported."""
    proc = subprocess.run([sys.executable, "-X", "importtime", str(ROOT / "train.py"), *args],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    names = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines()
             if line.startswith("import time:")}
    return proc, names


@pytest.mark.parametrize("args, expect_rc, expect", [
    (["--help"], 0, "== Configuration groups =="),
    (["--cfg", "job", "model.width=8"], 0, "width: 8"),
    (["trainer.max_epochs=abc"], 2, "error: trainer.max_epochs='abc': expected null or -1"),
    (["trainer.max_epoch=3"], 2, "did you mean max_epochs?"),
    (["seed=-1"], 2, "error: seed=-1"),
])
def test_answers_without_the_training_stack(args, expect_rc, expect, tmp_path):
    extra = [] if args[0] == "--help" else [f"paths.output_root={tmp_path}"]
    proc, names = imported([*args, *extra], tmp_path)
    assert proc.returncode == expect_rc, proc.stderr[-2000:]
    assert expect in proc.stdout + proc.stderr
    assert not names & set(HEAVY), f"{' '.join(args)} imported {sorted(names & set(HEAVY))}"
    assert "Traceback" not in proc.stderr


def test_composing_a_config_in_process_imports_no_training_stack():
    code = ("import sys; from hightpr.config import compose_config; import hightpr.cli.train; "
            "cfg = compose_config(['loss=ldam', 'reg=rankreg']); "
            "from hightpr.checks import trainer_arguments; "
            "assert 'max_epochs' in trainer_arguments(); "
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_trainer_arguments_read_from_source_judge_values_as_lightnings_signature():
    import inspect
    import typing

    import pytorch_lightning as pl

    from hightpr.checks import trainer_signature
    from hightpr.checks.values import _fits

    read = trainer_signature()
    assert list(read) == [n for n in inspect.signature(pl.Trainer.__init__).parameters if n != "self"]
    hints = typing.get_type_hints(pl.Trainer.__init__)
    probes = [1, -1, 0, 0.5, "x", True, None, [1, 2], "warn", "bf16-mixed", "32", 32, 64, "64-true", {}]
    for name, hint in hints.items():
        if name == "return":
            continue
        assert [_fits(v, read[name]) for v in probes] == [_fits(v, hint) for v in probes], name
    assert read["precision"] == hints["precision"] and read["deterministic"] == hints["deterministic"]
