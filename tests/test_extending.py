"""docs/extending.md, followed literally: its code blocks are written to files and trained with."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from tests.conftest import ROOT

GUIDE = ROOT / "docs" / "extending.md"


def guide_files() -> dict[str, str]:
    """Every fenced block of the guide whose first line names a file (`# my_losses.py`)."""
    files = {}
    for block in re.findall(r"```(?:python|yaml)\n(.*?)```", GUIDE.read_text(), flags=re.S):
        first = block.splitlines()[0]
        match = re.fullmatch(r"# ((?:my_configs/)?[\w/]+\.(?:py|yaml))", first.strip())
        if match:
            files[match.group(1)] = block
    return files


@pytest.fixture
def user_project(tmp_path, monkeypatch):
    """The user's project of the guide: modules on sys.path, configs in my_configs/."""
    for name, text in guide_files().items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))
    for module in ("my_losses", "my_regs"):
        sys.modules.pop(module, None)
    return tmp_path


def test_the_guide_names_its_files():
    assert {"my_losses.py", "my_regs.py", "my_configs/loss/squared_hinge.yaml",
            "my_configs/reg/score_l2.yaml", "my_configs/dataset/my_scans.yaml"} <= set(guide_files())


def test_toy_loss_matches_a_hand_computed_value(user_project):
    from my_losses import SquaredHinge

    loss = SquaredHinge(margin=1.0)
    logits = torch.tensor([[2.0], [0.5], [-1.0], [0.25]])
    y = torch.tensor([1.0, 1.0, 0.0, 0.0])
    # margins 1 - (+1)(2) = -1 -> 0; 1 - 0.5 = 0.5 -> 0.25; 1 - (-1)(-1) = 0 -> 0; 1 + 0.25 -> 1.5625
    assert loss(logits, y).item() == pytest.approx((0 + 0.25 + 0 + 1.5625) / 4)


def test_toy_loss_and_regulariser_train_from_the_users_config_dir(user_project, train):
    search = f"hydra.searchpath=[file://{user_project / 'my_configs'}]"
    r = train(search, "loss=squared_hinge", "reg=score_l2", "reg.weight=0.5")
    assert r.returncode == 0, r.stderr[-3000:]
    row = pd.read_csv(r.runs_csv).iloc[-1]
    assert (row["loss"], row["reg"], row["reg.weight"]) == ("squared_hinge", "score_l2", 0.5)
    log = pd.read_csv(r.run_dir / "csv" / "metrics.csv").dropna(subset=["train/reg_term"])
    assert (log["train/reg_term"] > 0).all()


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["loss=squared_hinge", "+loss.margn=2"],
         "loss.margn: no component reads this setting; did you mean margin?"),
        (["loss=squared_hinge", "loss.margin=-1"], "loss.margin must be > 0"),
        (["reg=score_l2", "dataset=tiny_cifar10_lt", "loss=ce"],
         "reg=score_l2 is binary but the data is multi-class"),
    ],
)
def test_the_guides_promises_about_errors(user_project, train, overrides, message):
    r = train(f"hydra.searchpath=[file://{user_project / 'my_configs'}]", *overrides)
    assert r.returncode == 2 and message in r.stderr, r.stderr[-2000:]


def test_the_guides_preset_composes(user_project):
    from hightpr.config import compose_config

    configs = user_project / "my_configs"
    (configs / "experiment").mkdir()
    preset = re.search(r"```yaml\n(# @package _global_\n# My study.*?)```", GUIDE.read_text(), flags=re.S)
    (configs / "experiment" / "my_study.yaml").write_text(preset.group(1))
    cfg = compose_config([f"hydra.searchpath=[file://{configs}]", "experiment=my_study"])
    assert cfg.reg._target_.endswith("RankReg") and cfg.dataset.ratio == 200
    assert (cfg.reg.buffer.strategy, cfg.reg.buffer.size) == ("fifo", 48)
    assert "buffer" not in cfg


def test_the_guides_dataset_brings_its_model(user_project):
    from hightpr.config import compose_config

    cfg = compose_config([f"hydra.searchpath=[file://{user_project / 'my_configs'}]", "dataset=my_scans"])
    assert cfg.model._target_.endswith("cnn3d") and cfg.dataset._target_ == "my_data.ScansDataModule"
    assert Path(cfg.paths.data_dir).name in cfg.dataset.root
