"""Ensembles of the papers: members, logit averaging, member-vs-ensemble report.

A reported number is a 10-member ensemble (ALM §5.2, RankReg §4.3): member m trains with its own
seed (its own training-data draw and initialisation), the members' test logits are averaged in
logit space, and the members' own mean ± std is reported beside the ensemble (ALM Tables 10-11).

On disk an ensemble is a folder `<output_root>/<name>/ensembles/<key>/` holding `member_XX/`
run dirs (each a normal run: metrics.json, logits_*.npz, ...) and, once aggregated, its own
`metrics.json` and `logits_test.npz`. The key names the configuration (everything but the seed),
so re-running the same command finds the members that already finished.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf, open_dict

from hightpr.errors import HightprError
from hightpr.identity import ensemble_key
from hightpr.metrics.evaluators import Evaluator, evaluator_for
from hightpr.model_card import write_after_training
from hightpr.runs import (  # an ensemble's layout is the run folder's (hightpr.runs)
    MEMBER_PREFIX,
    append_run,
    config_path,
    finished_members,
    flatten,
    load_logits,
    logits_path,
    metrics_path,
    read_metrics,
    save_logits,
    save_metrics,
)
from hightpr.task import Task


def positive_int(value, name: str) -> int | None:
    """`ensemble.members` / `ensemble.member`: null or a positive integer."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise HightprError(f"{name} must be a positive integer (e.g. {name}=10), got {value!r}")
    return value


def ensemble_requested(cfg: DictConfig) -> bool:
    """`ensemble.members=N` or `ensemble.member=M` asks for an ensemble (or one of its members)."""
    ens = cfg.get("ensemble")
    return ens is not None and (ens.get("members") is not None or ens.get("member") is not None)


def ensemble_dir_of(cfg: DictConfig, choices: Mapping[str, str] | None = None) -> Path:
    """`<output_root>/<name>/ensembles/<key>`; the key is `ensemble.key` or derived from the config."""
    key = cfg.ensemble.get("key") or ensemble_key(cfg, choices)
    return Path(cfg.paths.output_root) / str(cfg.name) / "ensembles" / str(key)


def member_config(cfg: DictConfig, member: int, ensemble_dir: Path) -> DictConfig:
    """The run config of member `member`: seed base_seed + member, outputs in its member dir."""
    mcfg = copy.deepcopy(cfg)
    with open_dict(mcfg):
        mcfg.seed = int(cfg.ensemble.get("base_seed") or 0) + member
        mcfg.ensemble.member = member
        mcfg.ensemble.key = ensemble_dir.name
    return mcfg


# -- logit averaging -----------------------------------------------------------------------------
def _sorted_by_id(out: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    ids = np.asarray(out["ids"]).astype(np.int64)
    if len(np.unique(ids)) != len(ids):
        raise HightprError("a logits file holds the same sample id twice; re-run that member")
    order = np.argsort(ids, kind="stable")
    logits = np.asarray(out["logits"], dtype=np.float64)
    logits = logits.reshape(len(ids), -1)
    return {"ids": ids[order], "labels": np.asarray(out["labels"])[order], "logits": logits[order]}


def average_logits(outputs: Sequence[Mapping[str, np.ndarray]],
                   names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Mean of the members' raw logits [N, K], aligned by sample id (the same ids required).

    For binary heads this equals averaging the score (z1 - z0 is linear in the logits).
    Returns ids (sorted), labels and the mean logits.
    """
    if not outputs:
        raise HightprError("no member outputs to average")
    names = list(names) if names is not None else [f"member {i + 1}" for i in range(len(outputs))]
    parts = [_sorted_by_id(o) for o in outputs]
    ref = parts[0]
    for name, part in zip(names[1:], parts[1:], strict=True):
        if part["ids"].shape != ref["ids"].shape or not np.array_equal(part["ids"], ref["ids"]):
            raise HightprError(f"{name} was evaluated on other samples than {names[0]} (different ids); "
                               "members of one ensemble must share the test set")
        if part["logits"].shape[1] != ref["logits"].shape[1]:
            raise HightprError(f"{name} has {part['logits'].shape[1]} logits per sample, {names[0]} "
                               f"{ref['logits'].shape[1]}: members must share the model head")
        if not np.array_equal(part["labels"], ref["labels"]):
            raise HightprError(f"{name} and {names[0]} disagree on the labels of the same sample ids")
    mean = np.mean([p["logits"] for p in parts], axis=0)
    return {"ids": ref["ids"], "labels": ref["labels"], "logits": mean}


def member_summary(reports: Sequence[Mapping[str, float]]) -> tuple[dict[str, float], dict[str, float]]:
    """(mean, std) over the members of every numeric report key. The std is the population std
    (np.std, ddof 0), the ± of ALM Tables 10-11 in the official aggregation; a single member gives
    0.0. Counts (n_pos, n_neg) are left out."""
    keys = [k for k in reports[0] if not k.startswith("n_") and all(k in r for r in reports)]
    mean = {k: float(np.mean([r[k] for r in reports])) for k in keys}
    std = {k: float(np.std([r[k] for r in reports], ddof=0)) for k in keys}
    return mean, std


def task_of_run(run_dir: Path) -> Task:
    """The task a member trained on, as its metrics.json records it."""
    metrics = metrics_path(run_dir)
    recorded = read_metrics(run_dir).get("task") if metrics.is_file() else None
    if not recorded:
        raise HightprError(f"{metrics} records no task (binary, or multi-class with its critical classes): "
                           "pass them, e.g. hightpr-ensemble DIR --critical 9, or re-run that member")
    return Task.from_dict(recorded)


def evaluator_of_run(run_dir: Path) -> Evaluator:
    """The evaluator a member used: its task's, with the member's `evaluation` settings (binary)."""
    task = task_of_run(run_dir)
    path = config_path(run_dir)
    settings = OmegaConf.load(path).get("evaluation") if path.is_file() else None
    if not task.binary or settings is None:
        return evaluator_for(task)
    return evaluator_for(task, **OmegaConf.to_container(settings, resolve=True))


def _with_scores(avg: dict[str, np.ndarray], evaluator: Evaluator) -> dict[str, np.ndarray]:
    logits = avg["logits"].astype(np.float32)
    return {"scores": evaluator.scores(logits), "labels": avg["labels"], "ids": avg["ids"], "logits": logits}


def seed_of(run_dir: Path) -> int | None:
    """A finished run's training seed, as its resolved config recorded it (None where unknown)."""
    path = config_path(run_dir)
    return OmegaConf.load(path).get("seed") if path.is_file() else None


def aggregate(ensemble_dir: Path, evaluator: Evaluator | None = None) -> dict:
    """Average the finished members' logits; write and return the ensemble's metrics.

    Writes `metrics.json`, `logits_test.npz` (and `logits_val.npz` when the members share their
    validation set, which also gives the validation-chosen operating point) and `model_card.md`.
    """
    ensemble_dir = Path(ensemble_dir)
    members = finished_members(ensemble_dir)
    if not members:
        raise HightprError(f"{ensemble_dir}: no finished member (member_XX/metrics.json); train members "
                           "with `python train.py ensemble.member=N ...` or `ensemble.members=10`")
    names = [p.name for p in members.values()]
    member_metrics = [read_metrics(p) for p in members.values()]
    test = average_logits([load_logits(logits_path(p, "test")) for p in members.values()], names)
    evaluator = evaluator or evaluator_of_run(next(iter(members.values())))
    outputs = {"test": _with_scores(test, evaluator)}
    val_files = [logits_path(p, "val") for p in members.values()]
    if all(f.is_file() for f in val_files):
        vals = [load_logits(f) for f in val_files]
        if all(np.array_equal(np.sort(v["ids"]), np.sort(vals[0]["ids"])) for v in vals):
            outputs["val"] = _with_scores(average_logits(vals, names), evaluator)

    metrics: dict = {"kind": "ensemble", "members": []}
    for stage, out in outputs.items():
        save_logits(ensemble_dir, stage, out)
        metrics[stage] = evaluator(out["logits"], out["labels"])
    stale = logits_path(ensemble_dir, "val")
    if "val" not in outputs and stale.is_file():
        stale.unlink()
    ops = getattr(evaluator, "operating_points", None)
    if ops is not None and "val" in outputs:
        metrics["operating_point"] = ops(outputs["val"], outputs["test"])
    for (m, path), mm in zip(members.items(), member_metrics, strict=True):
        metrics["members"].append({"member": m, "run_dir": str(path), "seed": seed_of(path),
                                   **{f"test_{k}": v for k, v in mm.get("test", {}).items()}})
    mean, std = {}, {}
    for stage in ("val", "test"):
        reports = [mm[stage] for mm in member_metrics if stage in mm]
        if len(reports) == len(member_metrics):
            m_mean, m_std = member_summary(reports)
            mean.update({f"{stage}_{k}": v for k, v in m_mean.items()})
            std.update({f"{stage}_{k}": v for k, v in m_std.items()})
    metrics["member_mean"], metrics["member_std"] = mean, std
    metrics["num_members"] = len(members)
    save_metrics(ensemble_dir, metrics)
    write_after_training(ensemble_dir)
    return metrics


def ensemble_row(ensemble_dir: Path, metrics: Mapping, member_row: Mapping[str, object] | None) -> dict:
    """The ensemble's runs.csv row: a member's config columns, the ensemble's metrics, and the
    members' mean and std (`member_mean_test_auc`, `member_std_test_auc`, ...)."""
    drop = ("run_dir", "seed", "member", "finished_at", "kind", "epochs_trained")
    row = {k: v for k, v in (member_row or {}).items()
           if k not in drop and not re.match(r"(val|test)_|op\.|member_(mean|std)_", str(k))}
    row.update({"run_dir": str(ensemble_dir), "kind": "ensemble", "ensemble_key": Path(ensemble_dir).name,
                "members": metrics["num_members"]})
    for stage in ("val", "test"):
        row.update({f"{stage}_{k}": v for k, v in metrics.get(stage, {}).items()})
    row.update(flatten("op", metrics.get("operating_point", {})))
    row.update({f"member_mean_{k}": v for k, v in metrics["member_mean"].items()})
    row.update({f"member_std_{k}": v for k, v in metrics["member_std"].items()})
    return row



def _member_row(runs_csv: Path | None, member_dirs: list[Path]) -> dict | None:
    """The runs.csv row of one of the members (its config columns describe the ensemble)."""
    import pandas as pd

    if runs_csv is None or not runs_csv.is_file():
        return None
    rows = pd.read_csv(runs_csv)
    if "run_dir" not in rows:
        return None
    wanted = {str(p) for p in member_dirs} | {str(p.resolve()) for p in member_dirs}
    hits = rows[rows["run_dir"].astype(str).isin(wanted)]
    if hits.empty:
        return None
    return {k: v for k, v in hits.iloc[-1].items() if not (isinstance(v, float) and math.isnan(v))}


def finish_ensemble(ensemble_dir: Path, runs_csv: Path | None, evaluator: Evaluator | None = None) -> dict:
    """Aggregate the finished members and append the ensemble's row to `runs_csv` (if given)."""
    metrics = aggregate(ensemble_dir, evaluator)
    if runs_csv is not None:
        member_dirs = [Path(m["run_dir"]) for m in metrics["members"]]
        append_run(runs_csv, ensemble_row(ensemble_dir, metrics, _member_row(runs_csv, member_dirs)))
    return metrics


def unfinished_members(ensemble_dir: Path) -> list[str]:
    """The member dirs of `ensemble_dir` that hold no finished run (left out of its aggregate)."""
    done = {p.name for p in finished_members(ensemble_dir).values()}
    return sorted(p.name for p in Path(ensemble_dir).glob(f"{MEMBER_PREFIX}*")
                  if p.is_dir() and p.name not in done)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.4f}"


def summary_text(ensemble_dir: Path, metrics: Mapping) -> str:
    """The ensemble's test metrics beside the members' mean ± std, and its operating points."""
    ids = [m["member"] for m in metrics["members"]]
    lines = [f"ensemble {ensemble_dir}: {len(ids)} members ({', '.join(map(str, ids))})",
             f"{'test':<12}{'ensemble':>10}   members mean ± std"]
    for key, value in metrics["test"].items():
        if key.startswith("n_"):
            continue
        mean, std = metrics["member_mean"].get(f"test_{key}"), metrics["member_std"].get(f"test_{key}")
        lines.append(f"{key:<12}{value:>10.4f}   {_fmt(mean)} ± {_fmt(std)}")
    for name, op in metrics.get("operating_point", {}).items():
        lines.append(f"operating point {name} (threshold {op['threshold']:.4g} from validation): "
                     f"test TPR {op['test_tpr']:.4f}, FPR {op['test_fpr']:.4f}")
        if op.get("np_threshold") is not None:
            lines.append(f"  guaranteed (P(TPR < target) <= {op['np_delta']:g}): threshold "
                         f"{op['np_threshold']:.4g}, test TPR {op['np_test_tpr']:.4f}, "
                         f"FPR {op['np_test_fpr']:.4f}")
        elif op.get("np_note"):
            lines.append(f"  guaranteed: {op['np_note']}")
    return "\n".join(lines)
