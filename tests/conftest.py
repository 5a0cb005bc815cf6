"""Shared fixtures: a tiny CIFAR-format dataset and a helper that runs `train.py` for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from hightpr.data.prepare import make_tiny_cifar10

ROOT = Path(__file__).resolve().parents[1]
FAST_TRAIN = [
    "dataset=tiny", "trainer=cpu_quick", "trainer.max_epochs=2", "trainer.progress_bar=false",
    "trainer.num_threads=1", "model.width=8",
]


@dataclass
class TrainResult:
    returncode: int
    stdout: str
    stderr: str
    run_dir: Path | None
    metrics: dict | None
    runs_csv: Path


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    data_dir = tmp_path_factory.mktemp("data")
    make_tiny_cifar10(data_dir)
    return data_dir


def run_train(data_dir: Path, work_dir: Path, *overrides: str, fast: bool = True,
              name: str = "test") -> TrainResult:
    """Run `python train.py FAST_TRAIN... overrides...` in a subprocess."""
    out_root = work_dir / "outputs"
    args = [sys.executable, str(ROOT / "train.py"), *(FAST_TRAIN if fast else []),
            f"paths.data_dir={data_dir}", f"paths.output_root={out_root}", f"name={name}",
            *overrides]
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(args, capture_output=True, text=True, cwd=work_dir, env=env, timeout=600)
    runs_csv = out_root / name / "runs.csv"
    run_dir = metrics = None
    if proc.returncode == 0 and runs_csv.is_file():
        run_dir = Path(pd.read_csv(runs_csv)["run_dir"].iloc[-1])
        metrics = json.loads((run_dir / "metrics.json").read_text())
    return TrainResult(proc.returncode, proc.stdout, proc.stderr, run_dir, metrics, runs_csv)


@pytest.fixture
def train(tiny_data_dir, tmp_path):
    """`train(*overrides)` runs `python train.py` on the tiny dataset; returns TrainResult."""

    def _run(*overrides: str, fast: bool = True, name: str = "test") -> TrainResult:
        return run_train(tiny_data_dir, tmp_path, *overrides, fast=fast, name=name)

    return _run


def real_cifar10_dir() -> Path | None:
    """The prepared real CIFAR-10 under $HIGHTPR_DATA_DIR, if there is one."""
    root = os.environ.get("HIGHTPR_DATA_DIR")
    if root and (Path(root) / "cifar-10-batches-py" / "data_batch_1").is_file():
        return Path(root)
    return None
