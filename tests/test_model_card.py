"""model_card.md: written by training into every finished run and ensemble folder, rewritten by
`python -m hightpr.model_card`.

Checked against values computed here from what the folders hold by other means: class counts
from `samples.csv`, the test AUC by scikit-learn from `logits_test.npz`, the quantile threshold from
`logits_val.npz`, and a single run's AUC interval against DeLong's standard error.
"""

from __future__ import annotations

import json
import logging
import math
import re

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from sklearn.metrics import roc_auc_score

from hightpr.data.image_table import SAMPLES
from hightpr.metrics.delong import delong_covariance
from hightpr.model_card import CARD, main, render, write_after_training
from tests.test_predict import quantile_threshold


def row(card: str, first: str) -> list[str]:
    """The cells after the first of the markdown table row that starts with `| first |`."""
    found = [line for line in card.splitlines() if line.startswith(f"| {first} |")]
    assert len(found) == 1, first
    return [cell.strip() for cell in found[0].strip("|").split("|")][1:]


def interval(cell: str) -> tuple[float, float]:
    lo, hi = re.fullmatch(r"\[(\S+), (\S+)\]", cell).groups()
    return float(lo), float(hi)


def test_training_writes_a_card_into_the_run_the_ensemble_and_its_members(trained_images):
    _, run, ens = trained_images
    for folder in (run, ens, ens / "member_01", ens / "member_02"):
        assert (folder / CARD).is_file(), folder
    card = (run / CARD).read_text()
    assert "hightpr-predict and hightpr-export use the threshold" in card   # an image run: they apply it
    samples = pd.read_csv(run / SAMPLES)
    for split in ("train", "val", "test"):
        part = samples[samples["split"] == split]
        pos, neg = int((part["label"] == "pos").sum()), int((part["label"] == "neg").sum())
        assert row(card, split)[:3] == [str(pos), str(neg), str(pos + neg)]
    assert row(card, "pos") == [str(int(((samples["label"] == "pos") & (samples["split"] == s)).sum()))
                                    for s in ("train", "val", "test")]
    with np.load(run / "logits_test.npz") as z:
        auc = roc_auc_score(z["labels"], z["scores"])
    value, ci = row(card, "AUC")
    lo, hi = interval(ci)
    assert float(value) == pytest.approx(auc, abs=5e-5) and lo <= float(value) <= hi
    threshold = row(card, "0.5")[0]
    assert float(threshold) == pytest.approx(quantile_threshold(run, 0.5), rel=1e-5)
    assert "test samples only" in card and "- seed: 1 " in card and "`resnet18` (width 8)" in card
    assert "Rule `quantile` (validation quantile)" in card
    for words in ("exchangeable", "also chose the tested epoch", "slightly optimistic", "other hospitals",
                  "not a probability", "prevalence", "Training-seed variability"):
        assert words in card, words


def test_an_ensemble_card_counts_members_and_their_seeds(trained_images):
    _, _, ens = trained_images
    card = (ens / CARD).read_text()
    assert card.startswith(f"# Model card: {ens.name}\n\nAn ensemble of 2 members")
    seeds = [OmegaConf.load(ens / m / "config_resolved.yaml").seed for m in ("member_01", "member_02")]
    assert f"seeds [{seeds[0]}, {seeds[1]}]" in card
    assert "members (training seeds) and test samples" in card
    with np.load(ens / "logits_test.npz") as z:
        auc = roc_auc_score(z["labels"], z["scores"])
    assert float(row(card, "AUC")[0]) == pytest.approx(auc, abs=5e-5)
    assert "the ensemble's averaged validation scores" in card


def test_the_command_rewrites_a_card_and_refuses_what_is_not_finished(trained_images, tmp_path, capsys):
    _, run, _ = trained_images
    before = (run / CARD).read_text()
    (run / CARD).unlink()
    assert main([str(tmp_path), str(run)]) == 2  # every folder checked before one is written
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and f"{tmp_path} holds no finished run or ensemble" in lines[0], err
    assert not (run / CARD).exists() and not list(tmp_path.iterdir())
    assert main([str(run)]) == 0
    assert (run / CARD).read_text() == before  # seeded intervals: the same card again
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def synthetic_run(folder, n: int = 300, separation: float = 1.0, seed: int = 0):
    """A finished binary run folder written by hand: metrics.json, test and validation logits, no config."""
    rng = np.random.default_rng(seed)
    folder.mkdir()
    labels = np.repeat([0, 1], n)
    for stage in ("val", "test"):
        scores = (rng.normal(size=2 * n) + separation * labels).astype(np.float32)
        np.savez(folder / f"logits_{stage}.npz", scores=scores, labels=labels, ids=np.arange(2 * n),
                 logits=scores[:, None])
    with np.load(folder / "logits_test.npz") as z:
        auc = roc_auc_score(z["labels"], z["scores"])
    report = {"auc": auc, "fpr@95tpr": 0.5, "n_pos": n, "n_neg": n}
    metrics = {"test": report, "val": report, "task": {"kind": "binary", "num_classes": 2,
                                                       "critical_classes": []},
               "data": {"train_pos": 10, "train_neg": 90, "val_pos": n, "val_neg": n, "test_pos": n,
                        "test_neg": n}}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


def test_a_single_runs_auc_interval_is_its_test_sample_noise(tmp_path):
    """About AUC ± 1.96 DeLong standard errors: test samples are the only noise of one model."""
    run = synthetic_run(tmp_path / "run")
    card = render(run)
    with np.load(run / "logits_test.npz") as z:
        aucs, cov = delong_covariance([z["scores"]], z["labels"])
    lo, hi = interval(row(card, "AUC")[1])
    half = 1.959964 * math.sqrt(cov[0, 0])
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.15)
    assert (lo + hi) / 2 == pytest.approx(aucs[0], abs=1e-4)  # centred on the value (4 decimals)
    assert "None recorded" in card and "FPR @ 95 TPR" in card  # no operating point, no threshold
    assert "dataset none" in card  # no config: the card says what it lacks, it does not fail


def test_a_multiclass_card_has_no_threshold_and_a_broken_folder_is_a_warning(tmp_path, caplog):
    run = synthetic_run(tmp_path / "multi")
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["task"] = {"kind": "multiclass", "num_classes": 10, "critical_classes": [9]}
    metrics["test"] = {"accuracy": 0.8, "error@90tpr_c9": 0.3}
    (run / "metrics.json").write_text(json.dumps(metrics))
    card = render(run)
    assert "multi-class" in card and "no binary threshold" in card and "| accuracy | 0.8000 |" in card
    (run / "metrics.json").write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="hightpr"):
        assert write_after_training(run) is None
    assert "python -m hightpr.model_card" in caplog.text and not (run / CARD).exists()
