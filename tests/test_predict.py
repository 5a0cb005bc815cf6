"""hightpr-predict: a finished run or ensemble applied to image files at its deployed threshold.

Checked against what the run itself wrote: its test images' scores in `logits_test.npz` (ids
mapped to files by its `samples.csv`), the threshold recomputed here from `logits_val.npz` by
the quantile rule's definition, and an ensemble's score as the mean of its members' own.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from hightpr.cli.predict import main as predict_main
from hightpr.data.image_table import SAMPLES
from hightpr.predict import read_predictions
from tests.test_images import truncate


@pytest.fixture
def trained(trained_images):
    """Image folders, a run and a 2-member ensemble trained on them (conftest's `trained_images`)."""
    return trained_images


def predict(capsys, *argv) -> tuple[int, str, str]:
    code = predict_main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def quantile_threshold(run_dir, tpr: float) -> float:
    """The k-th largest validation positive score, k = ceil(tpr x positives) (docs/evaluation.md)."""
    with np.load(run_dir / "logits_val.npz") as z:
        pos = np.sort(z["scores"][z["labels"] == 1])[::-1]
    return float(pos[math.ceil(tpr * len(pos)) - 1])


def test_a_run_predicts_its_own_test_scores_and_decides_at_its_threshold(trained, tmp_path, capsys):
    folders, run, _ = trained
    code, out, err = predict(capsys, run, folders, "--out", tmp_path / "p.csv", "--tpr", "0.5")
    assert code == 0, err
    got = read_predictions(tmp_path / "p.csv")
    assert list(got.columns) == ["path", "score", "decision"] and len(got) == 40
    samples = pd.read_csv(run / SAMPLES)
    with np.load(run / "logits_test.npz") as z:
        expected = dict(zip(z["ids"].tolist(), z["scores"].tolist(), strict=True))
    by_path = dict(zip(got["path"], got["score"], strict=True))
    test = samples[samples["split"] == "test"]
    diffs = [abs(by_path[p] - expected[i]) for p, i in zip(test["path"], test["id"], strict=True)]
    assert len(diffs) == 8 and max(diffs) <= 1e-5
    threshold = quantile_threshold(run, 0.5)
    assert (got["decision"] == (got["score"] >= threshold).astype(int)).all()
    head = (tmp_path / "p.csv").read_text().splitlines()[:4]
    assert head[0] == f"# model: {run} (run)"
    rule = "rule quantile (validation quantile), target TPR 0.5"
    assert head[1].startswith(f"# threshold {threshold:.9g}: {rule}")
    assert head[2] == "# promise: none (the test TPR falls short about half of the time)"
    assert f"threshold {threshold:.9g}" in out and "40 images" in out


def test_an_ensemble_predicts_the_mean_of_its_members(trained, tmp_path, capsys):
    folders, _, ens = trained
    members = sorted(ens.glob("member_*"))
    assert len(members) == 2
    files = sorted(folders.rglob("*.png"))[:10]
    for target, out in [(ens, "e.csv"), *((m, f"{m.name}.csv") for m in members)]:
        code, _, err = predict(capsys, target, *files, "--out", tmp_path / out, "--tpr", "0.95")
        assert code == 0, err
    ensemble = read_predictions(tmp_path / "e.csv")["score"].to_numpy()
    each = [read_predictions(tmp_path / f"{m.name}.csv")["score"].to_numpy() for m in members]
    assert not np.allclose(each[0], each[1])  # two different members
    np.testing.assert_allclose(ensemble, (each[0] + each[1]) / 2, atol=1e-5)  # 1 logit: score = logit
    assert (tmp_path / "e.csv").read_text().startswith(f"# model: {ens} (ensemble of 2 members")


def test_threshold_override_says_the_promise_is_gone(trained, tmp_path, capsys):
    folders, run, _ = trained
    code, out, err = predict(capsys, run, folders / "pos", "--out", tmp_path / "p.csv", "--threshold", "0")
    assert code == 0, err
    got = read_predictions(tmp_path / "p.csv")
    assert len(got) == 12 and (got["decision"] == (got["score"] >= 0).astype(int)).all()
    assert "no promise" in out


def test_bad_inputs_are_one_error_line_and_write_nothing(trained, tmp_path, capsys):
    folders, run, _ = trained
    broken = tmp_path / "broken.png"
    broken.write_bytes((folders / "pos" / "p00.png").read_bytes())
    truncate(broken)
    listing = tmp_path / "list.csv"
    listing.write_text("path\npos/p00.png\npos/missing.png\n")
    (tmp_path / "pos").mkdir()
    (tmp_path / "pos" / "p00.png").write_bytes((folders / "pos" / "p00.png").read_bytes())
    cases = [([folders, broken], f"{broken}: not a readable image"),
             ([listing], f"{listing} line 3: {tmp_path / 'pos' / 'missing.png'} does not exist"),
             ([folders, "--tpr", "0.9"], "evaluated at target TPRs 0.5, 0.95, not 0.9")]
    for args, says in cases:
        code, _, err = predict(capsys, run, *args, "--out", tmp_path / "p.csv")
        lines = [line for line in err.splitlines() if line.startswith("error:")]
        assert code == 2 and len(lines) == 1 and says in lines[0], err
        assert not list(tmp_path.glob("*p.csv*"))


def test_a_rule_without_threshold_asks_for_a_lower_target_or_threshold(trained, tmp_path, capsys):
    """The run's np threshold at 0.95 needs 59 validation positives; it has 2."""
    folders, run, _ = trained
    (run / "config_resolved.yaml").write_text(
        (run / "config_resolved.yaml").read_text().replace("threshold_rule: quantile", "threshold_rule: np"))
    code, _, err = predict(capsys, run, folders, "--out", tmp_path / "p.csv")
    (run / "config_resolved.yaml").write_text(
        (run / "config_resolved.yaml").read_text().replace("threshold_rule: np", "threshold_rule: quantile"))
    assert code == 2 and "no np threshold at TPR 0.95" in err and "--threshold" in err
