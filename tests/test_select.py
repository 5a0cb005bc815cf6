"""hightpr-select: per cell, the searched values with the best validation metric, as a preset."""

from __future__ import annotations

import pandas as pd
import pytest

from hightpr.cli.select import main as select_main
from hightpr.cli.select import swept_from_multirun
from hightpr.config import compose_config


def test_a_grid_selects_per_cell_on_validation_and_the_preset_reproduces_it(train, tmp_path, capsys):
    for loss in ("bce", "s_ml"):
        for mu0 in ("1e-7", "1e-2"):
            r = train(f"loss={loss}", "reg=alm", f"reg.mu0={mu0}", "trainer.max_epochs=1", name="grid")
            assert r.returncode == 0, r.stderr[-3000:]
    runs_csv = tmp_path / "outputs" / "grid" / "runs.csv"
    rows = pd.read_csv(runs_csv)
    # independent expectation: per loss, the mu0 of the highest validation AUC (first row on ties)
    expected = {loss: group.sort_values("val_auc", ascending=False, kind="stable").iloc[0]["reg.mu0"]
                for loss, group in rows.groupby("loss")}
    if any(rows.groupby("loss")["val_auc"].nunique() == 1):  # a tie: the lower validation loss decides
        expected = {loss: group.sort_values(["val_auc", "val_loss"], ascending=[False, True],
                                            kind="stable").iloc[0]["reg.mu0"]
                    for loss, group in rows.groupby("loss")}

    out = tmp_path / "selected"
    assert select_main([str(runs_csv), "--params", "reg.mu0", "--out", str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and all("2 candidates" in line for line in printed)
    presets = sorted((out / "experiment" / "selected").glob("*.yaml"))
    assert len(presets) == 2
    for preset in presets:
        cfg = compose_config([f"hydra.searchpath=[file://{out}]", f"experiment=selected/{preset.stem}"])
        loss = cfg.loss._target_.rsplit(".", 1)[-1]
        loss = {"BCE": "bce", "SymmetricMarginBCE": "s_ml"}[loss]
        assert cfg.reg.mu0 == pytest.approx(expected[loss]) and cfg.reg._target_.endswith("ALMRegularizer")
        assert "Selected by hightpr-select" in preset.read_text()


def test_searched_keys_come_from_the_grids_multirun_file(tmp_path):
    runs = tmp_path / "runs"
    runs.mkdir()
    (runs / "multirun.yaml").write_text(
        "hydra:\n  sweeper:\n    params:\n      reg.mu0: 1e-7,1e-6\n"
        "  overrides:\n    task: ['loss=bce', 'reg.delta=0.1,0.5', 'seed=1,2']\n")
    assert swept_from_multirun(tmp_path / "runs.csv") == ["reg.delta", "reg.mu0"]


@pytest.mark.parametrize("argv, message", [
    (["nowhere.csv", "--params", "reg.mu0"], "no such runs table"),
    (["RUNS", "--params", "reg.mu"], "no column 'reg.mu'"),
    (["RUNS"], "pass --params"),
])
def test_errors_are_one_line(tmp_path, capsys, argv, message):
    runs = tmp_path / "runs.csv"
    table = {"run_dir": ["a"], "loss": ["bce"], "reg.mu0": [1e-7], "val_auc": [0.9]}
    pd.DataFrame(table).to_csv(runs, index=False)
    argv = [str(runs) if a == "RUNS" else str(tmp_path / a) if a.endswith(".csv") else a for a in argv]
    assert select_main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow  # a real Optuna study: two trials in a subprocess
def test_optuna_sweeper_maximises_the_validation_objective(tiny_data_dir, tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    import subprocess
    import sys

    from tests.conftest import ROOT, _args

    args = [sys.executable, str(ROOT / "train.py"), "-m", "hparams_search=optuna_alm",
            "hydra.sweeper.n_trials=2",
            *_args(tiny_data_dir, tmp_path, ["reg=alm", "trainer.max_epochs=1"], True, "optuna")]
    proc = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = (tmp_path / "outputs" / "optuna" / "runs" / "optimization_results.yaml").read_text()
    best = pd.read_csv(tmp_path / "outputs" / "optuna" / "runs.csv")["val_auc"].max()
    assert f"best_value: {best}" in results


def test_a_tie_goes_to_the_lower_validation_loss_then_the_first_row():
    from hightpr.cli.select import select

    rows = pd.DataFrame({
        "loss": ["bce"] * 4 + ["s_ml"] * 3,
        "reg.mu0": [1e-7, 1e-6, 1e-5, 1e-4, 1e-7, 1e-6, 1e-5],
        "val_auc": [0.9, 0.95, 0.95, float("nan"), 0.8, 0.8, 0.7],
        "val_loss": [0.1, 0.6, 0.5, 0.0, float("nan"), 0.9, 0.1],
    })
    chosen = select(rows, ["reg.mu0"]).set_index("loss")
    assert chosen.loc["bce", "reg.mu0"] == 1e-5       # 0.95 twice: the lower validation loss
    assert chosen.loc["s_ml", "reg.mu0"] == 1e-6      # 0.8 twice: a loss beats no loss
    assert chosen["candidates"].tolist() == [4, 3] and set(chosen["_monitor"]) == {"val_auc"}
    multiclass = select(rows.rename(columns={"val_auc": "val_accuracy"}), ["reg.mu0"])
    assert set(multiclass["_monitor"]) == {"val_accuracy"}
