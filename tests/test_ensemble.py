"""Ensembles: logit averaging, member mean ± std, finished members not retrained, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from sklearn.metrics import roc_auc_score

from hightpr.checks import check_keys
from hightpr.cli.ensemble import main as ensemble_main
from hightpr.ensemble import aggregate, average_logits, member_summary
from hightpr.errors import HightprError
from hightpr.identity import ensemble_key
from hightpr.metrics import binary_report
from hightpr.runs import append_run, load_logits, member_dir, save_logits, save_metrics
from hightpr.task import Task
from hightpr.training import train_members
from tests.conftest import CONF_PATH

N_TEST, N_VAL = 60, 30


def compose_cfg(out: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF_PATH), version_base="1.3"):
        return compose("config", overrides=[f"paths.output_root={out}", "name=t", "dataset=tiny", *overrides])


def fake_member(run_dir: Path, seed: int, num_logits: int = 2, val_ids_offset: int = 0) -> dict:
    """What a finished run leaves: logits files (rows shuffled per member) and metrics.json."""
    rng = np.random.default_rng(seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics = {}
    for stage, n, first_id in (("val", N_VAL, 10 + val_ids_offset), ("test", N_TEST, 1000)):
        ids = np.arange(first_id, first_id + n)
        if num_logits <= 2:
            labels = (ids % 3 == 0).astype(np.float32)
            signal = labels[:, None] * np.arange(num_logits)
        else:
            labels = ids % num_logits
            signal = 2.0 * np.eye(num_logits)[labels]
        logits = (rng.normal(size=(n, num_logits)) + signal).astype(np.float32)
        order = rng.permutation(n)
        scores = logits[:, 0] if num_logits == 1 else logits[:, 1] - logits[:, 0]
        out = {"scores": scores[order], "labels": labels[order], "ids": ids[order], "logits": logits[order]}
        save_logits(run_dir, stage, out)
        metrics[stage] = (binary_report(out["scores"], out["labels"]) if num_logits <= 2 else
                          {"accuracy": float((out["logits"].argmax(1) == out["labels"]).mean())})
    (run_dir / "config_resolved.yaml").write_text(f"seed: {seed}\n")
    recorded = {"task": Task().to_dict()} if num_logits <= 2 else {}  # multi-class: --critical names it
    save_metrics(run_dir, {**metrics, **recorded})
    return metrics


def mean_by_id(paths: list[Path]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The members' saved logits averaged per sample id, written out with a dict (no sorting trick)."""
    sums: dict[int, np.ndarray] = {}
    labels: dict[int, float] = {}
    for path in paths:
        f = load_logits(path)
        for i, z, y in zip(f["ids"], f["logits"], f["labels"], strict=True):
            sums[int(i)] = sums.get(int(i), 0) + z.astype(np.float64) / len(paths)
            labels[int(i)] = float(y)
    ids = sorted(sums)
    return np.array(ids), np.array([labels[i] for i in ids]), np.stack([sums[i] for i in ids])


# -- averaging and the report ---------------------------------------------------------------------
@pytest.mark.parametrize("num_logits", [1, 2])
def test_aggregate_averages_saved_logits_and_reports_member_mean_std(tmp_path, num_logits):
    edir = tmp_path / "ens"
    for m in (1, 2, 3, 5):  # a gap in the member numbers is fine
        fake_member(member_dir(edir, m), seed=m, num_logits=num_logits)
    (member_dir(edir, 4) / "checkpoints").mkdir(parents=True)  # unfinished: ignored
    metrics = aggregate(edir)

    paths = [member_dir(edir, m) / "logits_test.npz" for m in (1, 2, 3, 5)]
    ids, labels, mean = mean_by_id(paths)
    saved = load_logits(edir / "logits_test.npz")
    assert np.array_equal(saved["ids"], ids) and np.array_equal(saved["labels"], labels)
    np.testing.assert_allclose(saved["logits"], mean, rtol=1e-6, atol=1e-6)
    score = mean[:, 0] if num_logits == 1 else mean[:, 1] - mean[:, 0]
    assert metrics["test"]["auc"] == pytest.approx(roc_auc_score(labels, score))
    assert metrics["num_members"] == 4 and [m["member"] for m in metrics["members"]] == [1, 2, 3, 5]

    member_aucs = []
    for p in paths:
        f = load_logits(p)
        member_aucs.append(roc_auc_score(f["labels"], f["scores"]))
    assert metrics["member_mean"]["test_auc"] == pytest.approx(np.mean(member_aucs))
    assert metrics["member_std"]["test_auc"] == pytest.approx(np.std(member_aucs, ddof=0))
    # members share the validation set: the ensemble has val metrics and an operating point
    assert "val" in metrics and set(metrics["operating_point"]) == {"90tpr", "95tpr", "98tpr"}
    assert json.loads((edir / "metrics.json").read_text())["test"]["auc"] == metrics["test"]["auc"]


def test_members_with_their_own_validation_split_give_no_ensemble_val(tmp_path):
    edir = tmp_path / "ens"
    fake_member(member_dir(edir, 1), seed=1)
    fake_member(member_dir(edir, 2), seed=2, val_ids_offset=5)
    metrics = aggregate(edir)
    assert "val" not in metrics and "operating_point" not in metrics
    assert not (edir / "logits_val.npz").exists()


def test_single_member_has_zero_std(tmp_path):
    fake_member(member_dir(tmp_path, 1), seed=1)
    metrics = aggregate(tmp_path)
    assert metrics["member_std"]["test_auc"] == 0.0


def test_member_summary_is_the_population_std_of_alm_tables_10_11():
    # AUCs 0.80, 0.84, 0.90: mean 0.8466666667; deviations -0.0466667, -0.0066667, 0.0533333,
    # squares sum to 0.0050666667; / 3 members (ddof 0) = 0.0016888889, sqrt = 0.0410960934
    # (the sample std, / 2, would be 0.0503322296)
    reports = [{"auc": 0.80, "n_pos": 10}, {"auc": 0.84, "n_pos": 10}, {"auc": 0.90, "n_pos": 10}]
    mean, std = member_summary(reports)
    assert mean == pytest.approx({"auc": 0.8466666667}) and std == pytest.approx({"auc": 0.0410960934})
    assert member_summary([{"auc": 0.7}]) == ({"auc": 0.7}, {"auc": 0.0})


def test_multiclass_members_use_the_critical_classes_they_recorded(tmp_path):
    edir = tmp_path / "ens"
    for m in (1, 2):
        fake_member(member_dir(edir, m), seed=m, num_logits=4)
    with pytest.raises(HightprError, match="--critical"):  # nothing recorded: never guessed
        aggregate(edir)
    for m in (1, 2):
        path = member_dir(edir, m) / "metrics.json"
        save_metrics(path.parent, {**json.loads(path.read_text()), "task": Task(4, (3,)).to_dict()})
    metrics = aggregate(edir)
    ids, labels, mean = mean_by_id([member_dir(edir, m) / "logits_test.npz" for m in (1, 2)])
    assert metrics["test"]["accuracy"] == pytest.approx((mean.argmax(1) == labels).mean())
    assert {"error@80tpr", "error@90tpr", "acc_critical"} <= set(metrics["test"])


def test_members_must_share_the_test_ids():
    a = {"ids": np.array([1, 2, 3]), "labels": np.array([0, 1, 0]), "logits": np.zeros((3, 1))}
    b = {**a, "ids": np.array([1, 2, 4])}
    with pytest.raises(HightprError, match="other samples"):
        average_logits([a, b], ["member_01", "member_02"])
    with pytest.raises(HightprError, match="disagree on the labels"):
        average_logits([a, {**a, "labels": np.array([1, 1, 0])}])


# -- orchestration --------------------------------------------------------------------------------
class FakeRun:
    """Stands in for `cli.train.run`: writes a finished member and records what it trained."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, Path]] = []

    def __call__(self, cfg, run_dir: Path) -> dict:
        self.calls.append((int(cfg.ensemble.member), int(cfg.seed), Path(run_dir)))
        return fake_member(Path(run_dir), seed=int(cfg.seed))


def test_seven_of_ten_present_trains_only_the_three_missing(tmp_path):
    first = FakeRun()
    train_members(compose_cfg(tmp_path, "ensemble.members=7"), batched=False, run_fn=first)
    assert [c[0] for c in first.calls] == [1, 2, 3, 4, 5, 6, 7]
    edir = first.calls[0][2].parent
    before = {m: (member_dir(edir, m) / "metrics.json").stat().st_mtime_ns for m in range(1, 8)}

    again = FakeRun()
    metrics = train_members(compose_cfg(tmp_path, "ensemble.members=10"), batched=False, run_fn=again)
    assert [(m, seed) for m, seed, _ in again.calls] == [(8, 8), (9, 9), (10, 10)]
    assert all(d == member_dir(edir, m) for m, _, d in again.calls)
    after = {m: (member_dir(edir, m) / "metrics.json").stat().st_mtime_ns for m in range(1, 8)}
    assert after == before
    assert metrics["num_members"] == 10

    rows = pd.read_csv(tmp_path / "t" / "runs.csv")
    assert list(rows["kind"]) == ["ensemble", "ensemble"] and list(rows["members"]) == [7, 10]


def test_one_member_per_job_and_unfinished_attempts_are_handed_to_the_run(tmp_path):
    fake = FakeRun()
    cfg = compose_cfg(tmp_path, "ensemble.member=3", "ensemble.base_seed=100")
    out = train_members(cfg, batched=False, run_fn=fake)
    assert [(m, seed) for m, seed, _ in fake.calls] == [(3, 103)]
    edir = fake.calls[0][2].parent
    assert out["member"] == 3 and not (edir / "metrics.json").exists()  # no aggregation
    train_members(cfg, batched=False, run_fn=fake)  # finished: not trained again
    assert len(fake.calls) == 1

    stale = member_dir(edir, 4)
    (stale / "checkpoints").mkdir(parents=True)
    (stale / "checkpoints" / "old.ckpt").write_text("x")
    train_members(compose_cfg(tmp_path, "ensemble.member=4", "ensemble.base_seed=100"), batched=False,
                  run_fn=fake)
    assert fake.calls[-1][0] == 4  # the run resumes it or clears it (tests/test_resume.py)


def test_member_config_points_outputs_to_the_member_dir(tmp_path):
    seen = []

    def capture(cfg, run_dir):  # the run dir is the member dir; the logger writes into it (build_trainer)
        seen.append((str(run_dir), cfg.ensemble.key, cfg.dataset.seed))
        return fake_member(Path(run_dir), 1)

    train_members(compose_cfg(tmp_path, "ensemble.member=2", "ensemble.key=mine"), batched=False,
                  run_fn=capture)
    edir = tmp_path / "t" / "ensembles" / "mine"
    assert seen == [(str(member_dir(edir, 2)), "mine", 2)]


def test_ensemble_key_ignores_seed_member_and_paths_only(tmp_path):
    choices = {"dataset": "tiny", "loss": "bce", "reg": "none"}
    base = ensemble_key(compose_cfg(tmp_path), choices)
    assert base.startswith("tiny-bce-none-")
    for same in (["seed=7"], ["ensemble.member=3", "ensemble.members=10"], ["paths.data_dir=/elsewhere"],
                 ["trainer.num_threads=4", "trainer.enable_progress_bar=false"], ["logger=none"]):
        assert ensemble_key(compose_cfg(tmp_path / "other", *same), choices) == base, same
    for other in (["optimizer.lr=0.5"], ["dataset.ratio=20"], ["model.width=16"]):
        assert ensemble_key(compose_cfg(tmp_path, *other), choices) != base, other


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["ensemble.members=0"], "ensemble.members=0: expected null or an integer >= 1"),
        (["ensemble.members=10", "ensemble.member=12"], "ensemble.member=12 is outside ensemble.members=10"),
        (["ensemble.member=two"], "ensemble.member='two': expected null or an integer >= 1"),
    ],
)
def test_bad_ensemble_settings(tmp_path, overrides, message):
    with pytest.raises(HightprError, match=message):
        check_keys(compose_cfg(tmp_path, *overrides))


# -- hightpr-ensemble -----------------------------------------------------------------------------
def test_cli_aggregates_existing_members_and_appends_a_row(tmp_path, capsys):
    edir = tmp_path / "t" / "ensembles" / "k"
    for m in (1, 2):
        fake_member(member_dir(edir, m), seed=m)
        append_run(tmp_path / "t" / "runs.csv", {"run_dir": str(member_dir(edir, m)), "kind": "member",
                                                 "loss": "bce", "seed": m, "test_auc": 0.5})
    assert ensemble_main([str(edir)]) == 0
    text = capsys.readouterr().out
    assert "2 members (1, 2)" in text and "± " in text
    rows = pd.read_csv(tmp_path / "t" / "runs.csv")
    last = rows.iloc[-1]
    assert last["kind"] == "ensemble" and last["loss"] == "bce" and last["members"] == 2
    assert last["test_auc"] == pytest.approx(json.loads((edir / "metrics.json").read_text())["test"]["auc"])


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert ensemble_main([str(tmp_path / "nope")]) == 2
    assert "no such directory" in capsys.readouterr().err
    assert ensemble_main([str(tmp_path), "--no-csv"]) == 2
    assert "no finished member" in capsys.readouterr().err


# -- real training through train.py --------------------------------------------------------------
def test_train_py_ensemble_end_to_end(train):
    first = train("ensemble.members=2")
    assert first.returncode == 0, first.stderr[-3000:]
    edir = first.run_dir
    assert edir.parent.name == "ensembles" and first.metrics["num_members"] == 2
    m1 = member_dir(edir, 1) / "metrics.json"
    stamp, content = m1.stat().st_mtime_ns, m1.read_text()

    more = train("ensemble.members=3")
    assert more.returncode == 0, more.stderr[-3000:]
    assert more.run_dir == edir and more.metrics["num_members"] == 3
    assert m1.stat().st_mtime_ns == stamp and m1.read_text() == content
    assert "member 1 already finished" in more.stdout + more.stderr

    ids, labels, mean = mean_by_id([member_dir(edir, m) / "logits_test.npz" for m in (1, 2, 3)])
    saved = load_logits(edir / "logits_test.npz")
    assert np.array_equal(saved["ids"], ids)
    np.testing.assert_allclose(saved["logits"], mean, rtol=1e-6, atol=1e-6)
    assert more.metrics["test"]["auc"] == pytest.approx(roc_auc_score(labels, mean[:, 0]))  # 1-logit BCE

    rows = pd.read_csv(more.runs_csv)
    members = rows[rows["kind"] == "member"]
    assert sorted(members["member"]) == [1, 2, 3] and sorted(members["seed"]) == [1, 2, 3]
    last = rows.iloc[-1]
    assert last["member_mean_test_auc"] == pytest.approx(members["test_auc"].mean())
    assert last["member_std_test_auc"] == pytest.approx(members["test_auc"].std(ddof=0))
    for m in (1, 2, 3):  # every member wrote its own per-epoch log
        assert (member_dir(edir, m) / "csv" / "metrics.csv").is_file()
