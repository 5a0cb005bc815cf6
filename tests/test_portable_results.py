"""Committed run records name no machine's folders (scripts/portable_results.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    path = ROOT / "scripts" / "portable_results.py"
    spec = importlib.util.spec_from_file_location("portable_results", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_run_records_hold_no_absolute_path(capsys) -> None:
    assert (ROOT / "results" / "runs").is_dir()
    rc = _tool().main(["--check", "--results", str(ROOT / "results")])
    assert rc == 0, capsys.readouterr()


CONFIG = """\
dataset:
  _target_: hightpr.data.BinaryCIFARDataModule
  root: /home/someone/data   # where it read
  ratio: 100
paths:
  data_dir: /home/someone/data
  output_root: /scratch/x/results/runs
  runs_csv: /scratch/x/results/runs/cpu/runs.csv
name: cpu
"""
METRICS = ('{\n  "best_checkpoint": '
           '"/scratch/x/results/runs/cpu/a/member_01/checkpoints/best-epoch3.ckpt",\n  "test_auc": 0.9\n}\n')
RUNS = "run_dir,seed\n/scratch/x/results/runs/cpu/a/member_01,1\nresults/runs/cpu/a/member_02,2\n"


def _tree(tmp_path: Path, config: str = CONFIG) -> Path:
    member = tmp_path / "runs" / "cpu" / "a" / "member_01"
    member.mkdir(parents=True)
    (member / "config_resolved.yaml").write_text(config)
    (member / "metrics.json").write_text(METRICS)
    (tmp_path / "runs" / "cpu" / "runs.csv").write_text(RUNS)
    return member


def test_paths_become_relative_and_nothing_else_moves(tmp_path: Path) -> None:
    member = _tree(tmp_path)
    assert _tool().main(["--results", str(tmp_path)]) == 0
    assert (member / "config_resolved.yaml").read_text() == CONFIG.replace(
        "/home/someone/data", "./data").replace("/scratch/x/", "")
    assert (member / "metrics.json").read_text() == METRICS.replace("/scratch/x/", "")
    assert (tmp_path / "runs" / "cpu" / "runs.csv").read_text() == RUNS.replace("/scratch/x/", "")
    assert _tool().main(["--check", "--results", str(tmp_path)]) == 0


def test_check_rewrites_nothing_and_fails(tmp_path: Path, capsys) -> None:
    member = _tree(tmp_path)
    assert _tool().main(["--check", "--results", str(tmp_path)]) == 1
    assert (member / "config_resolved.yaml").read_text() == CONFIG
    err = capsys.readouterr().err
    assert "3 run records hold absolute paths: run python scripts/portable_results.py" in err


def test_a_path_with_no_relative_form_is_named_not_guessed(tmp_path: Path, capsys) -> None:
    member = _tree(tmp_path, CONFIG + "init_from: /opt/pretrained/net.ckpt\n")
    assert _tool().main(["--results", str(tmp_path)]) == 1
    text = (member / "config_resolved.yaml").read_text()
    assert "init_from: /opt/pretrained/net.ckpt" in text and "data_dir: ./data" in text
    assert "/opt/pretrained/net.ckpt" in capsys.readouterr().err
