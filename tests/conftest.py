"""Shared fixtures: a tiny CIFAR-format dataset and helpers that train on it (in-process, or `train.py`)."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

import hightpr.conf
from hightpr.data.prepare import make_tiny_cifar10

ROOT = Path(__file__).resolve().parents[1]
CONF_PATH = Path(hightpr.conf.__file__).parent  # the package configs (pkg://hightpr.conf)
FAST_TRAIN = [
    "dataset=tiny", "trainer=cpu_quick", "trainer.max_epochs=2", "trainer.enable_progress_bar=false",
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


def _result(code: int, out: str, err: str, runs_csv: Path) -> TrainResult:
    run_dir = metrics = None
    if code == 0 and runs_csv.is_file():
        run_dir = Path(pd.read_csv(runs_csv)["run_dir"].iloc[-1])
        metrics = json.loads((run_dir / "metrics.json").read_text())
    return TrainResult(code, out, err, run_dir, metrics, runs_csv)


def _args(data_dir: Path, work_dir: Path, overrides, fast: bool, name: str) -> list[str]:
    return [*(FAST_TRAIN if fast else []), f"paths.data_dir={data_dir}",
            f"paths.output_root={work_dir / 'outputs'}", f"name={name}", *overrides]


def run_train(data_dir: Path, work_dir: Path, *overrides: str, fast: bool = True,
              name: str = "test") -> TrainResult:
    """What `python train.py FAST_TRAIN... overrides...` does, in this process.

    The config is composed as the command line composes it and trained by `train`; a user
    error is caught at the same boundary as `main` (exit code 2, one `error:` line); Hydra's
    composition errors give exit code 1. The hightpr log is returned as `stderr`.
    """
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from hightpr.config import compose_config
    from hightpr.errors import user_errors
    from hightpr.training import train

    runs_csv = work_dir / "outputs" / name / "runs.csv"
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logger = logging.getLogger("hightpr")
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    code = 0
    try:
        with contextlib.redirect_stderr(stream), user_errors():
            cfg = compose_config(_args(data_dir, work_dir, overrides, fast, name))
            train(cfg)
    except SystemExit as stop:
        code = int(stop.code or 0)
    except (HydraException, OmegaConfBaseException) as err:
        code = 1
        stream.write(f"{type(err).__name__}: {err}\n")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    return _result(code, "", stream.getvalue(), runs_csv)


def run_train_subprocess(data_dir: Path, work_dir: Path, *overrides: str, fast: bool = True,
                         name: str = "test") -> TrainResult:
    """`python train.py FAST_TRAIN... overrides...` for real, in a subprocess (exit codes, messages)."""
    args = [sys.executable, str(ROOT / "train.py"), *_args(data_dir, work_dir, overrides, fast, name)]
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(args, capture_output=True, text=True, cwd=work_dir, env=env, timeout=600)
    return _result(proc.returncode, proc.stdout, proc.stderr, work_dir / "outputs" / name / "runs.csv")


QUANTILE = ["evaluation.threshold_rule=quantile", "evaluation.operating_tprs=[0.5,0.95]"]


@pytest.fixture(scope="session")
def trained_images(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(image folders, a run, a 2-member ensemble) of dataset=images trained on generated PNGs
    (quantile rule: few validation positives). Shared by the predict, export and model card tests."""
    from tests.test_images import IMAGES, image_folders  # it imports this module

    base = tmp_path_factory.mktemp("trained_images")
    folders = image_folders(base / "imgs")
    data = [*IMAGES, f"dataset.root={folders}", "dataset.positive=pos", *QUANTILE]
    run = run_train(base / "data", base, *data)
    assert run.returncode == 0, run.stderr[-3000:]
    ens = run_train(base / "data", base, *data, "ensemble.members=2", name="ens")
    assert ens.returncode == 0, ens.stderr[-3000:]
    ens_dir = next((base / "outputs" / "ens" / "ensembles").iterdir())
    return folders, run.run_dir, ens_dir


@pytest.fixture
def train(tiny_data_dir, tmp_path):
    """`train(*overrides)` trains on the tiny dataset in-process; returns TrainResult."""

    def _run(*overrides: str, fast: bool = True, name: str = "test") -> TrainResult:
        return run_train(tiny_data_dir, tmp_path, *overrides, fast=fast, name=name)

    return _run


@pytest.fixture
def train_cli(tiny_data_dir, tmp_path):
    """`train_cli(*overrides)` runs `python train.py` in a subprocess; returns TrainResult."""

    def _run(*overrides: str, fast: bool = True, name: str = "test") -> TrainResult:
        return run_train_subprocess(tiny_data_dir, tmp_path, *overrides, fast=fast, name=name)

    return _run


def real_cifar10_dir() -> Path | None:
    """The prepared real CIFAR-10 under $HIGHTPR_DATA_DIR, if there is one."""
    root = os.environ.get("HIGHTPR_DATA_DIR")
    if root and (Path(root) / "cifar-10-batches-py" / "data_batch_1").is_file():
        return Path(root)
    return None
