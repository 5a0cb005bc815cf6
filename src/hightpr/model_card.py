"""`model_card.md`: what a finished run or ensemble is, how well it did, and what its threshold promises.

Rendered from what the folder holds, nothing else: `config_resolved.yaml` (the training
configuration), `metrics.json` (data counts, test metrics, the deployed operating points) and the
test logits (the metrics' 95% intervals), and for an ensemble the same files of its members.
Intervals are `hightpr.metrics.comparison.compare`'s, as the tables compute them: test-sample
noise for a single run, members (training seeds) and test samples for an ensemble.

Every finished folder gets its card where its metrics.json is written (`hightpr.runs.write_run`,
`hightpr.ensemble.aggregate`, through `write_after_training`), so this module reads the run and
ensemble layout itself instead of importing those modules. `python -m hightpr.model_card DIR...`
(re)writes the card of folders trained before cards existed.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf
from scipy.stats import binomtest

from hightpr.errors import HightprError, command
from hightpr.help import HelpFormatter
from hightpr.metrics.comparison import Arm, compare
from hightpr.metrics.thresholds import RULES
from hightpr.runs import (
    CARD,
    card_path,
    config_path,
    finished_members,
    is_finished,
    logits_path,
    read_metrics,
    samples_path,
)

LEVEL = 0.95
BOOTSTRAP = 1000  # test-sample replicates of the intervals
CARD_TPRS = (0.90, 0.95, 0.98)  # FPR@TPR rows of the metrics table, with the run's own targets
SPLITS = ("train", "val", "test")
# settings that say where or how fast, not what was learnt: left out of the configuration lines
NOT_SHOWN = {"_target_", "_partial_", "root", "csv", "cache_dir", "decode_workers", "seed", "batch_size",
             "eval_batch_size", "pretrained_path", "num_threads"}
log = logging.getLogger("hightpr")


# -- reading the folder (its layout: hightpr.runs) ---------------------------------------------------
def _test_logits(run: Path) -> dict[str, np.ndarray]:
    path = logits_path(run, "test")
    try:
        with np.load(path) as z:
            return {k: np.asarray(z[k]) for k in ("ids", "labels", "scores")}
    except (OSError, ValueError, KeyError, EOFError) as err:
        raise HightprError(f"{path}: missing or corrupt logits file ({err}); re-run that run") from err


def _config(run: Path) -> DictConfig:
    path = config_path(run)
    return OmegaConf.load(path) if path.is_file() else OmegaConf.create({})


class Folder:
    """A finished run, or an ensemble with its finished members, as the card reads it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise HightprError(f"{self.path}: no such folder; give a finished run or ensemble folder")
        if not is_finished(self.path):
            raise HightprError(f"{self.path} holds no finished run or ensemble (metrics.json and "
                               "logits_test.npz): give a folder whose training ended")
        self.metrics = read_metrics(self.path)
        ensemble = self.metrics.get("kind") == "ensemble"
        self.members = list(finished_members(self.path).values()) if ensemble else []
        self.runs = self.members or [self.path]
        self.config = _config(self.runs[0])
        self.run_metrics = [read_metrics(r) for r in self.runs]
        task = self.run_metrics[0].get("task") or {}
        self.binary = not task.get("critical_classes")

    @property
    def ensemble(self) -> bool:
        """Whether the folder is an ensemble (its card is about its members' mean logits)."""
        return bool(self.members)

    def seeds(self) -> list[int | None]:
        """The training seed of each run (its config_resolved.yaml), None where unknown."""
        return [_config(r).get("seed") for r in self.runs]


# -- sections ------------------------------------------------------------------------------------
def _name(node) -> str:
    target = node.get("_target_") if isinstance(node, Mapping | DictConfig) else None
    return "none" if target is None else str(target).rsplit(".", 1)[-1]


def _value(v) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if OmegaConf.is_list(v) or isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    return str(v)


def _component(node, skip: tuple[str, ...] = ()) -> str:
    """`Name (key value, ...)` of a config node: its class and the settings that shape what is learnt."""
    if node is None or (isinstance(node, Mapping | DictConfig) and node.get("_target_") is None):
        return "none"
    parts = []
    for key, v in node.items():
        if key in NOT_SHOWN or key in skip or v is None:
            continue
        if OmegaConf.is_dict(v) or isinstance(v, Mapping):
            if v.get("_target_") is not None:
                parts.append(f"{key} {_component(v)}")
            continue
        parts.append(f"{key} {_value(v)}")
    return f"`{_name(node)}`" + (f" ({', '.join(parts)})" if parts else "")


def _data_section(folder: Folder) -> list[str]:
    data = [m.get("data") or {} for m in folder.run_metrics]
    first = data[0]
    lines = ["## Data", ""]
    dataset = folder.config.get("dataset") or {}
    what = [f"dataset {_component(dataset, skip=('positive',))}"]
    if dataset.get("positive") is not None:
        what.append(f"positive (critical) class `{dataset.get('positive')}`, every other class negative")
    lines += ["; ".join(what) + ".", ""]
    if all(f"{s}_pos" in first and f"{s}_neg" in first for s in SPLITS):
        lines += ["| split | positives | negatives | total | positive share |", "|---|---:|---:|---:|---:|"]
        for s in SPLITS:
            pos, neg = int(first[f"{s}_pos"]), int(first[f"{s}_neg"])
            share = f"{pos / (pos + neg):.1%}" if pos + neg else "-"
            lines.append(f"| {s} | {pos} | {neg} | {pos + neg} | {share} |")
    elif first:
        lines.append(", ".join(f"{k} {v}" for k, v in sorted(first.items())))
    else:
        lines.append("The run's metrics.json records no data counts.")
    if any(d != first for d in data[1:]):
        lines += ["", f"Counts of {folder.runs[0].name}; the members' training draws differ "
                  "(each member's metrics.json has its own)."]
    samples = samples_path(folder.runs[0])
    if samples.is_file():
        table = pd.read_csv(samples, dtype={"label": str})
        counts = table.groupby(["label", "split"]).size().unstack(fill_value=0)
        splits = [s for s in SPLITS if s in counts.columns]
        lines += ["", "Images per class (`samples.csv`):", "",
                  "| class | " + " | ".join(splits) + " |", "|---|" + "---:|" * len(splits)]
        for label, row in counts.iterrows():
            lines.append(f"| {label} | " + " | ".join(str(int(row[s])) for s in splits) + " |")
    return lines


def _training_section(folder: Folder) -> list[str]:
    cfg = folder.config
    trainer = cfg.get("trainer") or {}
    epochs = [m.get("epochs_trained") for m in folder.run_metrics]
    best = [Path(str(m.get("best_checkpoint") or "")).stem.removeprefix("best-") for m in folder.run_metrics]
    seeds = folder.seeds()
    evaluation = cfg.get("evaluation") or {}
    lines = ["## Training", "",
             f"- model: {_component(cfg.get('model'))}",
             f"- loss: {_component(cfg.get('loss'))}; regulariser: {_component(cfg.get('reg'))}; "
             f"sampler: {_component(cfg.get('sampler'))}",
             f"- optimizer: {_component(cfg.get('optimizer'))}; "
             f"scheduler: {_component(cfg.get('scheduler'))}",
             f"- epochs: at most {trainer.get('max_epochs', '?')} (early stopping: patience "
             f"{trainer.get('patience', '?')} epochs on the validation monitor), batch size "
             f"{trainer.get('batch_size', '?')}; epochs trained: {', '.join(map(str, epochs))}; tested "
             f"checkpoint: {', '.join(b or '?' for b in best)} (the best validation epoch)"]
    if folder.ensemble:
        lines.append(f"- members: {len(folder.runs)} ({', '.join(r.name for r in folder.runs)}), seeds "
                     f"{_value(seeds)}; their logits are averaged")
    else:
        lines.append(f"- seed: {seeds[0]} (data draw, initialisation, augmentation)")
    if evaluation:
        lines.append(f"- evaluation: threshold rule `{evaluation.get('threshold_rule', 'np')}`, "
                     f"delta {_value(evaluation.get('delta'))}, "
                     f"target TPRs {_value(evaluation.get('operating_tprs'))}")
    return lines


def _aligned_test(folder: Folder) -> tuple[np.ndarray, np.ndarray] | None:
    """Each run's test scores [M, N] in one sample order, and the labels; None if they differ."""
    parts = []
    for run in folder.runs:
        z = _test_logits(run)
        order = np.argsort(z["ids"], kind="stable")
        parts.append({k: v[order] for k, v in z.items()})
    if any(not np.array_equal(p["ids"], parts[0]["ids"]) for p in parts[1:]):
        return None
    return np.stack([p["scores"] for p in parts]).astype(np.float64), parts[0]["labels"].astype(int)


def card_tprs(folder: Folder) -> list[float]:
    """The targets whose FPR@TPR the card shows: 0.90, 0.95, 0.98 and the run's own, as reported."""
    own = (folder.config.get("evaluation") or {}).get("operating_tprs") or []
    report = folder.metrics.get("test") or {}
    tprs = sorted({*CARD_TPRS, *(float(t) for t in own)})
    return [t for t in tprs if f"fpr@{round(t * 100):d}tpr" in report]


def metric_intervals(folder: Folder, n: int = BOOTSTRAP, seed: int = 0) -> dict[str, dict]:
    """{metric: compare's result} for AUC and FPR@TPR on the test set (binary runs)."""
    aligned = _aligned_test(folder)
    if aligned is None:
        return {}
    scores, labels = aligned
    seeds = folder.seeds()
    arm = Arm(scores, tuple(int(s) for s in seeds) if all(s is not None for s in seeds) else None)
    names = ["auc", *(f"fpr@{round(t * 100):d}tpr" for t in card_tprs(folder))]
    return {name: compare([arm], labels, name, n=n, seed=seed, level=LEVEL) for name in names}


def _metrics_section(folder: Folder) -> list[str]:
    report = folder.metrics.get("test") or {}
    n_pos, n_neg = report.get("n_pos"), report.get("n_neg")
    what = f"the ensemble of {len(folder.runs)} members (mean logits)" if folder.ensemble else "the run"
    size = f" ({n_pos} positives, {n_neg} negatives)" if n_pos is not None else ""
    lines = ["## Test metrics", "", f"Of {what} on the test split{size}."]
    if not folder.binary:
        lines += ["", "| metric | value |", "|---|---:|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in report.items() if not k.startswith("n_")]
        lines += ["", "A multi-class run: the card gives no intervals."]
        return lines
    intervals = metric_intervals(folder)
    if not intervals:
        lines += ["", "The members were not tested on the same samples: no intervals."]
        return lines
    noise = next(iter(intervals.values()))["noise"]
    lines += ["", "| metric | value | 95% interval |", "|---|---:|---:|"]
    for name, got in intervals.items():
        label = "AUC" if name == "auc" else name.upper().replace("TPR", " TPR").replace("FPR@", "FPR @ ")
        value = report.get(name, got["diff"])
        lines.append(f"| {label} | {value:.4f} | [{max(got['lo'], 0.0):.4f}, {min(got['hi'], 1.0):.4f}] |")
    lines += ["", f"Intervals: value ± t · se, clipped to [0, 1]; noise: {noise} "
              f"(`hightpr.metrics.comparison.compare` with {BOOTSTRAP} stratified test-sample replicates, "
              "as the tables compute them)."]
    if folder.ensemble:
        mean, std = folder.metrics.get("member_mean") or {}, folder.metrics.get("member_std") or {}
        if "test_auc" in mean:
            lines.append(f"The members alone: test AUC {mean['test_auc']:.4f} ± {std.get('test_auc', 0):.4f} "
                         "(mean ± std).")
        if len(folder.runs) < 5:
            lines.append(f"With {len(folder.runs)} members the member noise is measured on few groups: "
                         "the intervals are wide by design.")
    else:
        lines.append("A single run: the intervals cover test-sample noise only, not how much another "
                     "training seed would change the model (an ensemble's card covers both).")
    return lines


def _rate(rate: float | None, n: int | None) -> str:
    """A test rate with its exact (Clopper-Pearson) 95% interval over the test samples."""
    if rate is None:
        return "-"
    if not n:
        return f"{rate:.4f}"
    k = round(rate * n)
    ci = binomtest(k, n).proportion_ci(LEVEL, method="exact")
    return f"{rate:.4f} [{ci.low:.3f}, {ci.high:.3f}]"


def _reads_image_files(config: Mapping) -> bool:
    """Whether the run's dataset decodes image files, so that hightpr-predict and hightpr-export apply it."""
    from hydra.utils import get_class

    try:
        return bool(getattr(get_class(str(config["dataset"]["_target_"])), "reads_image_files", False))
    except (KeyError, TypeError, ImportError, AttributeError, ValueError):
        return False


def _threshold_section(folder: Folder) -> list[str]:
    lines = ["## Deployed threshold", ""]
    points = folder.metrics.get("operating_point")
    if not folder.binary:
        return [*lines, "None: a multi-class run has no binary threshold (hightpr-predict and "
                "hightpr-export apply binary runs)."]
    if not points:
        return [*lines, "None recorded (an ensemble whose members do not share validation samples): "
                "hightpr-predict and hightpr-export need `--threshold`, with no promise."]
    evaluation = folder.config.get("evaluation") or {}
    name = str(evaluation.get("threshold_rule", "np"))
    rule = RULES[name]
    delta = evaluation.get("delta")
    report = folder.metrics.get("test") or {}
    val = folder.metrics.get("val") or {}
    n_val = val.get("n_pos")
    chosen = "the ensemble's averaged validation scores" if folder.ensemble else "the validation scores"
    lines += [f"Rule `{name}` ({rule.title})" + (f", delta {_value(delta)}" if rule.uses_delta else "")
              + f", chosen on {chosen}" + (f" ({n_val} positives)" if n_val is not None else "")
              + ". A score >= the threshold is called positive." + (
                  " hightpr-predict and hightpr-export use the threshold at `--tpr` (default 0.95)."
                  if _reads_image_files(folder.config) else ""), "",
              "| target TPR | threshold | validation TPR / FPR | test TPR [95% CI] | test FPR [95% CI] |",
              "|---:|---:|---:|---:|---:|"]
    notes = []
    for point in points.values():
        target = point["target_tpr"]
        value = point.get(f"{name}_threshold")
        if value is None:
            note = point.get(f"{name}_note", "no threshold")
            lines.append(f"| {target:g} | none | - | - | - |")
            notes.append(f"At target {target:g}: {note}.")
            continue
        vt, vf = point.get(f"{name}_val_tpr"), point.get(f"{name}_val_fpr")
        lines.append(f"| {target:g} | {value:.6g} | {vt:.3f} / {vf:.3f} | "
                     f"{_rate(point.get(f'{name}_test_tpr'), report.get('n_pos'))} | "
                     f"{_rate(point.get(f'{name}_test_fpr'), report.get('n_neg'))} |")
    promise = rule.promise.replace("delta", _value(delta)) if rule.uses_delta else rule.promise
    lines += ["", *notes, *([""] if notes else []),
              f"Promise at each target: {promise}. Test rates' intervals are exact binomial intervals "
              "over the test samples at the fixed threshold.", "",
              "Where the rule gives one, the promise rests on assumptions:", "",
              "- the validation samples are exchangeable with the images the model will see in use (same "
              "population, acquisition and labelling); the promise is about positives, so it does not "
              "depend on how many negatives come along;",
              "- the validation set also chose the tested epoch" + (" of every member" if folder.ensemble
                                                                    else "")
              + " (best validation monitor), so the model is not independent of it: the promise is "
              "slightly optimistic;",
              "- it is about the population TPR; on a finite number of positives in use the observed "
              "TPR scatters around it. The FPR has no promise: the test FPR estimates it."]
    return lines


def _limits_section(folder: Folder) -> list[str]:
    report = folder.metrics.get("test") or {}
    n_pos, n_neg = report.get("n_pos"), report.get("n_neg")
    share = f" ({n_pos / (n_pos + n_neg):.1%} positives here)" if n_pos and n_neg else ""
    lines = ["## What the numbers do not cover", "",
             "- Images from other hospitals, cameras, scanners, protocols or populations than those "
             "sampled here, and any distribution shift after training: the metrics and the "
             "threshold's promise hold only for data like the validation and test splits.",
             "- Calibration: the score is a logit (or a difference of two), ranked and thresholded; "
             "it is not a probability and was not calibrated.",
             f"- A prevalence different from the test split's{share}: TPR and FPR do not depend on it, "
             "but the share of positive calls that are right (PPV = TPR p / (TPR p + FPR (1 - p)) at "
             "prevalence p) does.",
             "- Subgroups (sex, age, skin type, device...) were not evaluated separately, and test "
             "labels are taken as correct."]
    if not folder.ensemble:
        lines.append("- Training-seed variability: another seed gives another model; the intervals "
                     "above do not include it.")
    return lines


def render(path: Path) -> str:
    """The model card of a finished run or ensemble folder, as markdown."""
    folder = Folder(path)
    kind = (f"an ensemble of {len(folder.runs)} members (logits averaged)" if folder.ensemble
            else "a single run")
    lines = [f"# Model card: {folder.path.name}", "",
             f"{kind[0].upper()}{kind[1:]}, {'binary' if folder.binary else 'multi-class'}. Written from "
             "this folder's config_resolved.yaml, metrics.json and test logits"
             + (" (and its members')" if folder.ensemble else "")
             + "; rewrite it with `python -m hightpr.model_card <this folder>`.", ""]
    for section in (_data_section, _training_section, _metrics_section, _threshold_section,
                    _limits_section):
        lines += [*section(folder), ""]
    return "\n".join(lines).rstrip() + "\n"


def write_card(path: Path) -> Path:
    """Render and write `model_card.md` into the folder (temporary file, then renamed)."""
    path = Path(path)
    text = render(path)
    out = card_path(path)
    tmp = path / f".{CARD}.{os.getpid()}.tmp"
    try:
        tmp.write_text(text)
        os.replace(tmp, out)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise HightprError(f"cannot write {out} ({err})") from err
    return out


def write_after_training(path: Path) -> Path | None:
    """`write_card` at the end of training: a card that cannot be written is a warning, never a
    failed run (its metrics.json is already there)."""
    try:
        return write_card(path)
    except Exception as err:  # noqa: BLE001 - the run is finished whatever the card does
        log.warning("model card not written in %s (%s: %s); write it with: python -m hightpr.model_card %s",
                    path, type(err).__name__, err, path)
        return None


@command
def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m hightpr.model_card`; returns 2 with one `error:` line on a problem."""
    parser = argparse.ArgumentParser(
        prog="python -m hightpr.model_card", formatter_class=HelpFormatter,
        description="Write model_card.md into finished run or ensemble folders: data, training "
                    "configuration, test metrics with 95% intervals, the deployed threshold with its "
                    "rule, promise and assumptions, and what the numbers do not cover.")
    parser.add_argument("folders", type=Path, nargs="+", metavar="RUN_OR_ENSEMBLE",
                        help="finished run or ensemble folders; each gets its model_card.md")
    args = parser.parse_args(argv)
    folders = [Folder(f).path for f in args.folders]  # every folder checked before any is written
    for folder in folders:
        print(write_card(folder))
    return 0


if __name__ == "__main__":
    sys.exit(main())

