"""Ensembles from the command line.

`python train.py ensemble.members=10 ...` trains the members that are missing, then aggregates;
`python train.py ensemble.member=3 ...` trains member 3 only (one cluster job per member);
`hightpr-ensemble DIR` aggregates whatever members of DIR finished and prints the result.
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import sys
from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd
from omegaconf import DictConfig, open_dict

from hightpr.ensemble import aggregate, ensemble_key, ensemble_row, finished_members, is_finished, member_dir
from hightpr.errors import HightprError
from hightpr.help import HelpFormatter
from hightpr.metrics.evaluators import Evaluator
from hightpr.runs import append_run
from hightpr.stacked.resume import saved_epoch

log = logging.getLogger("hightpr")


def _positive_int(value, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise HightprError(f"{name} must be a positive integer (e.g. {name}=10), got {value!r}")
    return value


def ensemble_requested(cfg: DictConfig) -> bool:
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


def train_members(cfg: DictConfig, run_fn: Callable[[DictConfig, Path], dict],
                  choices: Mapping[str, str] | None = None) -> dict:
    """Train the requested members that did not finish yet; aggregate unless one member was asked.

    Two or more members to train are trained together (`ensemble.batched`, default true; docs/speed.md)
    when the configuration allows it, else one after another through `run_fn`.
    """
    members = _positive_int(cfg.ensemble.get("members"), "ensemble.members")
    member = _positive_int(cfg.ensemble.get("member"), "ensemble.member")
    if member is not None and members is not None and member > members:
        raise HightprError(f"ensemble.member={member} is outside ensemble.members={members}")
    edir = ensemble_dir_of(cfg, choices)
    todo = [member] if member is not None else list(range(1, members + 1))
    edir.mkdir(parents=True, exist_ok=True)
    for m in [m for m in todo if is_finished(member_dir(edir, m))]:
        log.info("member %d already finished: %s", m, member_dir(edir, m))
    todo = [m for m in todo if not is_finished(member_dir(edir, m))]
    if _batched(cfg) and _project_run(run_fn):
        # members killed during batched training resume batched, grouped by the epoch they reached
        saved = {m: saved_epoch(member_dir(edir, m)) for m in todo}
        for epoch in sorted({e for e in saved.values() if e is not None}):
            group = [m for m in todo if saved[m] == epoch]
            todo = [m for m in todo if m not in group] + _train_batched(cfg, edir, group, choices)
        # an interrupted sequential attempt resumes from its last checkpoint, on its own
        resume = [m for m in todo if (member_dir(edir, m) / "checkpoints" / "last.ckpt").is_file()]
        fresh = [m for m in todo if m not in resume]
        todo = resume + (_train_batched(cfg, edir, fresh, choices) if len(fresh) > 1 else fresh)
    for m in todo:
        mdir = member_dir(edir, m)
        log.info("training member %d (seed %d) in %s", m, int(cfg.ensemble.get("base_seed") or 0) + m, mdir)
        run_fn(member_config(cfg, m, edir), mdir)  # resumes an interrupted attempt; waits for another process
    if member is not None:
        log.info("member %d done; aggregate the finished members with: hightpr-ensemble %s", member, edir)
        return {"member": member, "run_dir": str(member_dir(edir, member))}
    metrics = finish(edir, Path(cfg.paths.runs_csv))
    log.info("%s", summary_text(edir, metrics))
    return metrics


def _batched(cfg: DictConfig) -> bool:
    """`ensemble.batched`: train the members together (default, null: yes) or one after another."""
    value = cfg.ensemble.get("batched")
    if value is None:
        return True
    if not isinstance(value, bool):
        raise HightprError(f"ensemble.batched must be true or false, got {value!r}")
    return value


def _project_run(run_fn: Callable) -> bool:
    """Batched training stands in for the project's own `run` only: an injected run function (a
    test's, a driver's) keeps training every member through it."""
    from hightpr.cli.train import run  # hightpr.cli.train imports this module

    return run_fn is run


def _train_batched(cfg: DictConfig, edir: Path, todo: list[int],
                   choices: Mapping[str, str] | None) -> list[int]:
    """Train the members `todo` together (`hightpr.stacked`); returns those left to train one by one
    (all of them, with one log line saying why, when the configuration is not supported batched)."""
    from hightpr.stacked import NotStackable, train_batched

    try:
        train_batched([member_config(cfg, m, edir) for m in todo], [member_dir(edir, m) for m in todo],
                      choices)
    except NotStackable as why:
        log.info("ensemble.batched: %s; training the members one after another", why)
        return [m for m in todo if not is_finished(member_dir(edir, m))]
    return []


def _member_row(runs_csv: Path | None, member_dirs: list[Path]) -> dict | None:
    """The runs.csv row of one of the members (its config columns describe the ensemble)."""
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


def finish(ensemble_dir: Path, runs_csv: Path | None, evaluator: Evaluator | None = None) -> dict:
    """Aggregate the finished members and append the ensemble's row to `runs_csv` (if given)."""
    metrics = aggregate(ensemble_dir, evaluator)
    if runs_csv is not None:
        row = ensemble_row(ensemble_dir, metrics, _member_row(runs_csv, [Path(m["run_dir"]) for m in
                                                                          metrics["members"]]))
        append_run(runs_csv, row)
    return metrics


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        formatter_class=HelpFormatter,
        prog="hightpr-ensemble",
        description="Aggregate the finished members of an ensemble dir (average their logits, report the "
                    "ensemble beside the members' mean ± std) and append its row to runs.csv.")
    parser.add_argument("ensemble_dir", type=Path, help="outputs/<name>/ensembles/<key>")
    parser.add_argument("--critical", type=int, nargs="+", default=None,
                        help="critical class(es) for multi-class members (Error@TPR, accuracies)")
    parser.add_argument("--runs-csv", type=Path, default=None,
                        help="table for the ensemble row (default: <name>/runs.csv beside ensembles/)")
    parser.add_argument("--no-csv", action="store_true", help="do not append a row to runs.csv")
    args = parser.parse_args(argv)
    try:
        edir = args.ensemble_dir
        if not edir.is_dir():
            raise HightprError(f"{edir}: no such directory (expected outputs/<name>/ensembles/<key>)")
        evaluator = None
        if args.critical:
            from hightpr.metrics.multiclass import MulticlassEvaluator

            evaluator = MulticlassEvaluator(args.critical)
        runs_csv = None if args.no_csv else (args.runs_csv or edir.resolve().parents[1] / "runs.csv")
        metrics = finish(edir, runs_csv, evaluator)
    except (HightprError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    missing = _missing(edir)
    print(summary_text(edir, metrics))
    if missing:
        print(f"unfinished member dirs (not used): {', '.join(missing)}")
    return 0


def _missing(edir: Path) -> list[str]:
    done = {p.name for p in finished_members(edir).values()}
    return sorted(p.name for p in edir.glob("member_*") if p.is_dir() and p.name not in done)


if __name__ == "__main__":
    sys.exit(main())
