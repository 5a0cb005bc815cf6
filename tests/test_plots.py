"""ROC figures: the drawn curves are the ROC points (checked with sklearn), files are written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_curve as sk_roc_curve

from hightpr.cli.plot import main as plot_main
from hightpr.plots import plot_roc, roc_curve
from hightpr.runs import save_logits


def case(seed: int, n: int = 200, shift: float = 1.0):
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 4 == 0).astype(int)
    scores = np.round(rng.normal(size=n) + shift * labels, 1)  # ties
    return scores, labels


def test_roc_curve_matches_sklearn_with_ties():
    scores, labels = case(0)
    fpr, tpr = roc_curve(scores, labels)
    sk_fpr, sk_tpr, _ = sk_roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)


@pytest.mark.parametrize("suffix, magic", [(".png", b"\x89PNG"), (".pdf", b"%PDF")])
def test_plot_roc_draws_every_run_and_the_zoom(tmp_path, suffix, magic):
    runs = [("a", *case(1)), ("b", *case(2, shift=2.0))]
    out = tmp_path / f"roc{suffix}"
    fig = plot_roc(runs, out, zoom_tpr=0.9, title="test")
    assert out.read_bytes()[:4] == magic
    main_ax = fig.axes[0]
    curves = [line for line in main_ax.get_lines() if line.get_label().startswith(("a (AUC", "b (AUC"))]
    assert len(curves) == 2
    for line, (_, scores, labels) in zip(curves, runs, strict=True):
        sk_fpr, sk_tpr, _ = sk_roc_curve(labels, scores, drop_intermediate=False)
        np.testing.assert_allclose(line.get_xdata(), sk_fpr)
        np.testing.assert_allclose(line.get_ydata(), sk_tpr)
    inset = main_ax.child_axes[0]
    assert inset.get_ylim()[0] == pytest.approx(0.9) and len(inset.get_lines()) == 2


def test_no_zoom_and_bad_input(tmp_path):
    fig = plot_roc([("a", *case(1))], None, zoom_tpr=None)
    assert not fig.axes[0].child_axes
    with pytest.raises(ValueError, match="extension"):
        plot_roc([("a", *case(1))], tmp_path / "roc.jpeg")
    with pytest.raises(ValueError, match="0.9, not 90"):
        plot_roc([("a", *case(1))], None, zoom_tpr=90)


def write_run(run_dir: Path, seed: int) -> Path:
    scores, labels = case(seed)
    ids = np.arange(len(labels))
    run_dir.mkdir(parents=True)
    save_logits(run_dir, "test", {"scores": scores, "labels": labels, "ids": ids, "logits": scores[:, None]})
    return run_dir


def test_cli(tmp_path, capsys):
    a, b = write_run(tmp_path / "ens" / "member_01", 1), write_run(tmp_path / "other", 2)
    out = tmp_path / "fig" / "roc.pdf"
    assert plot_main(["roc", str(a), str(b / "logits_test.npz"), "-o", str(out), "--labels", "A", "B"]) == 0
    assert out.read_bytes()[:4] == b"%PDF" and "wrote" in capsys.readouterr().out
    assert plot_main(["roc", str(a), "-o", str(tmp_path / "r.png"), "--labels", "A", "B"]) == 2
    assert "2 names for 1 runs" in capsys.readouterr().err
    assert plot_main(["roc", str(tmp_path / "missing"), "-o", str(tmp_path / "r.png")]) == 2
    assert "not found" in capsys.readouterr().err
