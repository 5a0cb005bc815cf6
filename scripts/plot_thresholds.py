"""What a sensitivity guarantee costs: test FPR at the oracle, validation-quantile and NP thresholds.

For each target TPR from 0.85 to 0.99 it reads a finished run's `logits_val.npz` and
`logits_test.npz` and draws

- left: the test FPR at the oracle threshold (picked on test: the papers' FPR@TPR), at the
  validation-quantile threshold (`threshold_at_tpr` on validation) and at the Neyman-Pearson
  threshold (`np_threshold`, P(population TPR < target) <= delta);
- right: the test TPR each deployable threshold actually gives, against the target.

Targets that need more validation positives than the run has get no NP point.

    python scripts/plot_thresholds.py outputs/<name>/runs/<run> --out docs/figures/threshold_tradeoff.png
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from hightpr.cli.threshold import load_split
from hightpr.errors import HightprError
from hightpr.metrics import fpr_at_tpr, np_min_positives, np_threshold
from hightpr.metrics.operating_point import rates_at_threshold, threshold_at_tpr

TARGETS = np.round(np.arange(0.85, 0.9901, 0.01), 2)


def curves(run_dir: Path, delta: float) -> dict[str, np.ndarray]:
    """Test FPR and TPR per target at the three thresholds (NaN where the NP rule has too few positives)."""
    val, test = load_split(Path(run_dir), "val"), load_split(Path(run_dir), "test")
    n_pos = int(val["labels"].sum())
    out = {k: np.full(TARGETS.size, np.nan) for k in ("oracle_fpr", "val_fpr", "val_tpr", "np_fpr", "np_tpr")}
    for i, tpr in enumerate(TARGETS):
        out["oracle_fpr"][i] = fpr_at_tpr(test["scores"], test["labels"], tpr)
        t = threshold_at_tpr(val["scores"], val["labels"], tpr)
        out["val_tpr"][i], out["val_fpr"][i] = rates_at_threshold(test["scores"], test["labels"], t)
        if n_pos >= np_min_positives(tpr, delta):
            t = np_threshold(val["scores"], val["labels"], tpr, delta)
            out["np_tpr"][i], out["np_fpr"][i] = rates_at_threshold(test["scores"], test["labels"], t)
    out["n_val_pos"] = np.array(n_pos)
    return out


def plot(c: dict[str, np.ndarray], delta: float, out: Path, title: str | None = None) -> Path:
    """The two panels (test FPR, test TPR against the target), saved to `out`."""
    fig = Figure(figsize=(10.0, 4.2), dpi=150)
    FigureCanvasAgg(fig)
    ax_fpr, ax_tpr = fig.subplots(1, 2)
    np_label = f"NP guaranteed (δ = {delta:g})"
    ax_fpr.plot(TARGETS, c["oracle_fpr"], "o-", ms=3, color="grey", label="oracle (threshold picked on test)")
    ax_fpr.plot(TARGETS, c["val_fpr"], "s-", ms=3, color="tab:blue", label="validation quantile")
    ax_fpr.plot(TARGETS, c["np_fpr"], "^-", ms=4, color="tab:red", label=np_label)
    ax_fpr.set(xlabel="target TPR", ylabel="test FPR", title="False positives on test", ylim=(0, None))
    ax_tpr.plot(TARGETS, TARGETS, ":", color="black", lw=1, label="target")
    ax_tpr.plot(TARGETS, c["val_tpr"], "s-", ms=3, color="tab:blue", label="validation quantile")
    ax_tpr.plot(TARGETS, c["np_tpr"], "^-", ms=4, color="tab:red", label=np_label)
    ax_tpr.set(xlabel="target TPR", ylabel="test TPR", title="Sensitivity reached on test")
    for ax in (ax_fpr, ax_tpr):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, frameon=False)
    missing = TARGETS[np.isnan(c["np_fpr"])]
    note = f"; no NP threshold for target ≥ {missing.min():.2f}" if missing.size else ""
    fig.suptitle(title or f"{int(c['n_val_pos'])} validation positives{note}", fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    return out


def main(argv: list[str] | None = None) -> int:
    """Read a run dir, draw the trade-off, print the numbers behind it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path,
                        help="run or ensemble dir holding logits_val.npz and logits_test.npz")
    parser.add_argument("--out", type=Path, default=Path("threshold_tradeoff.png"), help="output .png")
    parser.add_argument("--delta", type=float, default=0.05, help="NP error level")
    parser.add_argument("--title", default=None)
    args = parser.parse_args(argv)
    try:
        c = curves(args.run_dir, args.delta)
        plot(c, args.delta, args.out, args.title)
    except (HightprError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{'target':>6} {'oracle FPR':>10} {'quantile TPR':>12} {'quantile FPR':>12} "
          f"{'NP TPR':>7} {'NP FPR':>7}")
    for i, tpr in enumerate(TARGETS):
        print(f"{tpr:>6.2f} {c['oracle_fpr'][i]:>10.4f} {c['val_tpr'][i]:>12.4f} {c['val_fpr'][i]:>12.4f} "
              f"{c['np_tpr'][i]:>7.4f} {c['np_fpr'][i]:>7.4f}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
