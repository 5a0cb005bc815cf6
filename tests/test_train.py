"""End-to-end: `python train.py` through Hydra on tiny data, its outputs, errors, determinism."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from hightpr.runs import load_logits

TPR_KEYS = ("fpr@90tpr", "fpr@92tpr", "fpr@95tpr", "fpr@98tpr", "fpr@100tpr")


@pytest.fixture(scope="module")
def first_run(tiny_data_dir, tmp_path_factory):
    """One default run of `python train.py` shared by the output checks (module scope: trained once)."""
    from tests.conftest import run_train_subprocess

    return run_train_subprocess(tiny_data_dir, tmp_path_factory.mktemp("run"))


def test_run_writes_every_output(first_run):
    r = first_run
    assert r.returncode == 0, r.stderr[-3000:]
    d = r.run_dir
    for name in ("config_resolved.yaml", "metrics.json", "logits_val.npz", "logits_test.npz",
                 ".hydra/config.yaml", "csv/metrics.csv"):
        assert (d / name).is_file(), name
    assert len(list((d / "checkpoints").glob("best-*.ckpt"))) == 1
    for stage, (n_pos, n_neg) in {"val": (20, 20), "test": (40, 40)}.items():
        m = r.metrics[stage]
        assert (m["n_pos"], m["n_neg"]) == (n_pos, n_neg)
        assert 0.0 <= m["auc"] <= 1.0 and all(0.0 <= m[k] <= 1.0 for k in TPR_KEYS)
        logits = load_logits(d / f"logits_{stage}.npz")
        assert len(logits["scores"]) == len(logits["labels"]) == len(logits["ids"]) == n_pos + n_neg
        assert int(logits["labels"].sum()) == n_pos and len(np.unique(logits["ids"])) == n_pos + n_neg
    assert r.metrics["data"] == {"train_pos": 12, "train_neg": 117, "val_pos": 20, "val_neg": 20,
                                 "test_pos": 40, "test_neg": 40}


def test_saved_logits_reproduce_saved_metrics(first_run):
    from hightpr.metrics import binary_report

    logits = load_logits(first_run.run_dir / "logits_test.npz")
    report = binary_report(logits["scores"], logits["labels"])
    for key in ("auc", *TPR_KEYS):
        assert report[key] == pytest.approx(first_run.metrics["test"][key])
    for stage in ("val", "test"):  # the base loss (BCE) over the split: the tie-break of the best epoch
        saved = load_logits(first_run.run_dir / f"logits_{stage}.npz")
        bce = torch.nn.functional.binary_cross_entropy_with_logits(
            torch.from_numpy(saved["logits"][:, 0]).double(), torch.from_numpy(saved["labels"]).double())
        assert first_run.metrics[stage]["loss"] == pytest.approx(float(bce), rel=1e-5)


def test_runs_csv_row(first_run):
    rows = pd.read_csv(first_run.runs_csv)
    assert len(rows) == 1
    row = rows.iloc[0]
    assert (row["dataset"], row["loss"], row["reg"], row["seed"]) == ("tiny", "bce", "none", 1)
    assert row["dataset.ratio"] == 10 and row["test_auc"] == pytest.approx(first_run.metrics["test"]["auc"])


def test_best_checkpoint_holds_the_tested_model(first_run):
    ckpt = next((first_run.run_dir / "checkpoints").glob("best-*.ckpt"))
    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert any(k.startswith("model.") for k in state["state_dict"])


def test_same_seed_same_metrics_other_seed_other_draw(train, first_run):
    again = train()
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.metrics["test"] == first_run.metrics["test"]
    a = load_logits(first_run.run_dir / "logits_test.npz")["scores"]
    b = load_logits(again.run_dir / "logits_test.npz")["scores"]
    assert np.array_equal(a, b)
    other = train("seed=2")
    assert other.returncode == 0
    assert not np.array_equal(a, load_logits(other.run_dir / "logits_test.npz")["scores"])


def test_init_from_checkpoint(train, first_run):
    ckpt = next((first_run.run_dir / "checkpoints").glob("best-*.ckpt"))
    r = train(f"init_from={ckpt}", "trainer.max_epochs=1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "initialised the model from" in r.stdout + r.stderr


@pytest.mark.parametrize(
    "override, expect",
    [
        ("loss=bcee", "Could not find 'loss/bcee'"),
        ("paths.data_dir=/nonexistent", "python -m hightpr.data.prepare tiny --data-dir /nonexistent"),
        ("init_from=/nonexistent.ckpt", "no such checkpoint file"),
        ("dataset.ratio=0.01", "positives but only"),
        ("dataset.ratio=abc", "dataset.ratio='abc': expected a number"),
        ("++trainer.limit_train_batch=3",
         "trainer.limit_train_batch: no component reads this setting; did you mean limit_train_batches?"),
        ("++trainer.no_such_key=1", "trainer.no_such_key: no component reads this setting"),
        ("+loss.bta=0.9 loss=cbbce", "loss.bta: no component reads this setting; did you mean beta?"),
        ("+seeed=3", "seeed: no component reads this setting; did you mean seed?"),
        ("++trainer.callbacks=[]", "trainer.callbacks is set by hightpr itself"),
        ("optimizer.lr=-1", "Invalid learning rate: -1"),
        ("reg=rankreg reg.penalty=quartic", "penalty must be one of"),
    ],
)
def test_bad_input_is_one_clear_message(train, override, expect):
    r = train(*override.split())
    assert r.returncode != 0
    assert expect in r.stderr
    assert "Traceback" not in r.stderr
    assert len([line for line in r.stderr.splitlines() if line.startswith("error:")]) <= 1


def test_trainer_takes_lightning_arguments_by_their_own_names(train):
    r = train("trainer.limit_train_batches=3", "trainer.batch_size=8", "trainer.max_epochs=1")
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.metrics["global_step"] == 3  # 129 training samples would be 17 batches of 8
    quick = train("trainer.fast_dev_run=true")  # a debug run: metrics.json, but no runs.csv row
    assert quick.returncode == 0, quick.stderr[-3000:]
    assert len(pd.read_csv(quick.runs_csv)) == 1
    (quick_metrics,) = [p for p in quick.runs_csv.parent.glob("runs/*/metrics.json") if p.parent != r.run_dir]
    assert json.loads(quick_metrics.read_text())["global_step"] == 1


def test_the_cli_refuses_an_unread_key_in_one_line(train_cli):
    r = train_cli("++trainer.no_such_key=1")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "trainer.no_such_key" in errors[0]


def test_debug_lets_a_user_error_through_with_its_cause(train, monkeypatch):
    from hightpr.errors import HightprError

    monkeypatch.setenv("HIGHTPR_DEBUG", "1")
    with pytest.raises(HightprError, match="invalid evaluation configuration") as raised:
        train("evaluation.threshold_rule=nope")  # the boundary re-raises: the full stack, the cause chained
    assert isinstance(raised.value.__cause__, ValueError)


def test_evaluation_settings_reach_every_report(train):
    r = train("evaluation.delta=0.2", "evaluation.operating_tprs=[0.9]", "ensemble.members=2")
    assert r.returncode == 0, r.stderr[-3000:]
    assert list(r.metrics["operating_point"]) == ["90tpr"]  # the ensemble, with its members' settings
    op = r.metrics["operating_point"]["90tpr"]
    assert op["np_delta"] == 0.2 and ("np_threshold" in op or "np_note" in op)
    member = json.loads((r.run_dir / "member_01" / "metrics.json").read_text())
    assert member["operating_point"]["90tpr"]["np_delta"] == 0.2


@pytest.mark.parametrize("epochs, lr, best_is_last", [(1, 1e-3, True), (3, 0.05, False)])
def test_the_kept_best_validation_equals_validating_the_best_checkpoint(train, monkeypatch, epochs, lr,
                                                                        best_is_last):
    """When the best epoch was the last one validated, its outputs are kept instead of loading the best
    checkpoint and validating it again; otherwise the best checkpoint is validated. Either way the
    files are those of validating the best checkpoint."""
    import pytorch_lightning as pl

    import hightpr.training

    calls = []
    real_validate = pl.Trainer.validate
    monkeypatch.setattr(pl.Trainer, "validate", lambda self, *a, **k: (calls.append(1), real_validate(
        self, *a, **k))[1])
    overrides = (f"trainer.max_epochs={epochs}", "trainer.patience=99", f"optimizer.lr={lr}")
    kept = train(*overrides, name="kept")
    assert kept.metrics["best_checkpoint"].endswith(f"best-epoch{epochs - 1 if best_is_last else 0:03d}.ckpt")
    assert calls == ([] if best_is_last else [1])
    monkeypatch.setattr(hightpr.training, "_holds_best_validation", lambda trainer, module: False)
    validated = train(*overrides, name="validated")
    assert kept.metrics["val"] == validated.metrics["val"]
    assert kept.metrics["operating_point"] == validated.metrics["operating_point"]
    for stage in ("val", "test"):
        a, b = (load_logits(r.run_dir / f"logits_{stage}.npz") for r in (kept, validated))
        assert all(np.array_equal(a[k], b[k]) for k in ("logits", "scores", "labels", "ids"))
