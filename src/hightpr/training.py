"""Training, as a library: one run, or the members of an ensemble, from a composed config.

`train(cfg)` is what `python train.py` runs: an ensemble when `ensemble.members` / `ensemble.member`
asks for one, else one run. `train_run` trains one model in Lightning's loop, keeps the best
epoch on the validation monitor, tests it and writes its run dir (`hightpr.runs.write_run`, the
ending the batched loop shares). `train_members` trains an ensemble's unfinished members, batched
(`hightpr.stacked`) or one by one, as `hightpr.jobs.plan_members` decides, then aggregates them.
The wiring is `hightpr.build`; run dirs and resuming are `hightpr.jobs`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.exceptions import SIGTERMException

from hightpr.build import build_datamodule, build_module, build_trainer
from hightpr.callbacks import Interrupt, keep_csv_log
from hightpr.checks import check_keys, check_machine
from hightpr.config import choices, hydra_setting
from hightpr.ensemble import (
    ensemble_dir_of,
    ensemble_requested,
    finish_ensemble,
    is_finished,
    member_config,
    member_dir,
    positive_int,
    summary_text,
)
from hightpr.errors import HightprError
from hightpr.jobs import (
    default_run_dir,
    fresh_start,
    job_resources,
    plan_members,
    resume_point,
    worker_process,
)
from hightpr.metrics.evaluators import monitor_value
from hightpr.runs import RunLock, remove_unstarted, save_run_config, write_run

log = logging.getLogger("hightpr")
RunFn = Callable[[DictConfig, Path], dict]


def train(cfg: DictConfig, run_dir: Path | None = None) -> dict:
    """One run, or the members of an ensemble (`ensemble.members=N` / `ensemble.member=M`)."""
    check_keys(cfg)
    check_machine(cfg)
    if ensemble_requested(cfg):
        return train_members(cfg, batched=batched_setting(cfg))
    return train_run(cfg, run_dir)


def train_run(cfg: DictConfig, run_dir: Path | None = None) -> dict:
    """Train, keep the best epoch on the validation monitor, test it, save every output.

    A finished run dir is not trained again (`resume=never` does); an interrupted one continues
    from its `last` checkpoint. One process at a time trains a run dir (`RunLock`).
    """
    check_keys(cfg)
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(cfg)
    fresh = fresh_start(cfg)
    if worker_process():  # a data-parallel worker started by rank 0, which holds the lock
        return _fit_and_test(cfg, run_dir, resume_point(run_dir, fresh, worker=True))
    check_machine(cfg, run_dir)
    try:
        with RunLock(run_dir):
            if is_finished(run_dir) and not fresh:
                log.info("already finished, not trained again: %s (resume=never retrains it)", run_dir)
                return json.loads((run_dir / "metrics.json").read_text())
            return _with_resources(cfg, run_dir, resume_point(run_dir, fresh))
    except HightprError:
        remove_unstarted(run_dir, Path(str(cfg.paths.output_root)))  # a refused run leaves no folder
        raise


def _with_resources(cfg: DictConfig, run_dir: Path, resume_from: Path | None) -> dict:
    """`_fit_and_test` with this job's share of the machine (threads, a GPU of the local launcher)."""
    threads = torch.get_num_threads()
    budget, gpu = job_resources(cfg)
    if budget:
        torch.set_num_threads(budget)
    if gpu is not None:
        cfg = OmegaConf.merge(cfg, {"trainer": {"devices": [gpu]}})
        log.info("local job %s: GPU %d", hydra_setting("job.num"), gpu)
    try:
        return _fit_and_test(cfg, run_dir, resume_from)
    finally:
        torch.set_num_threads(threads)


def _fit_and_test(cfg: DictConfig, run_dir: Path, resume_from: Path | None = None) -> dict:
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule, facts = build_datamodule(cfg)
    module = build_module(cfg, datamodule, facts, choices())
    worker = worker_process()
    if not worker:
        save_run_config(cfg, run_dir, datamodule)
        log.info("data %s", datamodule.summary())

    trainer = build_trainer(cfg, run_dir, monitor=module.evaluator.monitor)
    if resume_from is not None and not worker:
        keep_csv_log(trainer, resume_from)  # the epochs before the interrupt stay in csv/metrics.csv
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume_from) if resume_from else None)
    except SIGTERMException as stop:  # Ctrl-C or SIGTERM: finished epochs saved, the same command resumes
        interrupt = next((c for c in trainer.callbacks if isinstance(c, Interrupt)), None)
        raise SystemExit(interrupt.exit_code if interrupt and interrupt.exit_code else 143) from stop
    best = trainer.checkpoint_callback.best_model_path or None
    if not _holds_best_validation(trainer, module):
        trainer.validate(module, datamodule=datamodule, ckpt_path=best, verbose=False)
    trainer.test(module, datamodule=datamodule, ckpt_path=best, verbose=False)

    facts_of_run = {"epochs_trained": trainer.current_epoch, "global_step": trainer.global_step,
                    "best_checkpoint": best, "data": datamodule.summary(), "task": facts.task.to_dict()}
    if not trainer.is_global_zero:  # data-parallel: one process (rank 0) writes the outputs
        return {**module.reports, **facts_of_run}
    metrics = write_run(cfg, run_dir, module.evaluator, module.reports, module.outputs, facts_of_run,
                        choices())
    log.info("outputs in %s", run_dir)
    return metrics


def _holds_best_validation(trainer: pl.Trainer, module) -> bool:
    """Whether the module's last validation is the best epoch's (the best epoch was the last one
    validated here): its report and outputs are then the best checkpoint's, not validated again."""
    epoch = getattr(trainer.checkpoint_callback, "best_epoch", None)
    return epoch is not None and module.evaluated_at.get("val") == epoch


def batched_setting(cfg: DictConfig) -> bool:
    """`ensemble.batched`: train the members together (default, null: yes) or one after another
    (checked with every setting, `hightpr.checks.values`)."""
    value = cfg.ensemble.get("batched")
    return True if value is None else bool(value)


def train_members(cfg: DictConfig, *, batched: bool, run_fn: RunFn = train_run) -> dict:
    """Train the requested members that did not finish yet; aggregate unless one member was asked.

    `batched`: two or more members train together when the configuration allows it (docs/speed.md),
    the others one by one through `run_fn` (the project's `train_run`, or a caller's own).
    """
    members = positive_int(cfg.ensemble.get("members"), "ensemble.members")
    member = positive_int(cfg.ensemble.get("member"), "ensemble.member")
    edir = ensemble_dir_of(cfg, choices())
    edir.mkdir(parents=True, exist_ok=True)
    wanted = [member] if member is not None else list(range(1, members + 1))
    plan = plan_members({m: member_dir(edir, m) for m in wanted}, batched)
    one_by_one = list(plan.one_by_one)
    for group in plan.batched:
        one_by_one += _train_batched(cfg, edir, group)
    for m in one_by_one:
        mdir = member_dir(edir, m)
        log.info("training member %d (seed %d) in %s", m, int(cfg.ensemble.get("base_seed") or 0) + m, mdir)
        run_fn(member_config(cfg, m, edir), mdir)  # resumes an interrupted attempt; waits for another process
    if member is not None:
        log.info("member %d done; aggregate the finished members with: hightpr-ensemble %s", member, edir)
        return {"member": member, "run_dir": str(member_dir(edir, member))}
    metrics = finish_ensemble(edir, Path(cfg.paths.runs_csv))
    log.info("%s", summary_text(edir, metrics))
    return metrics


def _train_batched(cfg: DictConfig, edir: Path, group: list[int]) -> list[int]:
    """Train the members `group` together; returns those left to train one by one (all of them, with
    one log line saying why, when the configuration is not supported batched)."""
    from hightpr.stacked.layers import NotStackable
    from hightpr.stacked.trainer import train_batched

    try:
        train_batched([member_config(cfg, m, edir) for m in group], [member_dir(edir, m) for m in group],
                      choices())
    except NotStackable as why:
        log.info("ensemble.batched: %s; training the members one after another", why)
        return [m for m in group if not is_finished(member_dir(edir, m))]
    return []


def validation_objective(metrics: dict) -> float | None:
    """The validation metric a sweeper maximises (Optuna): the run's validation monitor."""
    found = monitor_value(metrics.get("val"))
    return None if found is None else found[1]
