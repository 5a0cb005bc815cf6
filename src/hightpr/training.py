"""Training, as a library: one run, or the members of an ensemble, from a composed config.

`train(cfg)` is what `python train.py` runs: an ensemble when `ensemble.members` / `ensemble.member`
asks for one, else one run. `train_run` trains one model in Lightning's loop, keeps the best
epoch on the validation monitor, tests it and writes its run dir; it starts and ends as the
batched loop does (`hightpr.jobs.run_start`, `run_end`). `train_members` trains an ensemble's
unfinished members, batched (`hightpr.stacked`) or one by one, as `hightpr.jobs.plan_members`
decides, then aggregates them.
The wiring is `hightpr.build`; run dirs, starts, ends and resuming are `hightpr.jobs`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytorch_lightning as pl
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
    member_config,
    positive_int,
    summary_text,
)
from hightpr.jobs import (
    default_run_dir,
    plan_members,
    resume_point,
    run_end,
    run_start,
    starts_over,
    worker_process,
)
from hightpr.metrics.evaluators import monitor_value
from hightpr.runs import member_dir, run_facts, save_run_config

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
    if worker_process():  # a data-parallel worker started by rank 0, which holds the lock
        return _fit_and_test(cfg, run_dir, resume_point(run_dir, starts_over(cfg), worker=True))
    check_machine(cfg, run_dir)
    with run_start(cfg, [run_dir]) as start:
        if run_dir in start.finished:
            return start.finished[run_dir]
        if start.gpu is not None:
            cfg = OmegaConf.merge(cfg, {"trainer": {"devices": [start.gpu]}})
            log.info("local job %s: GPU %d", hydra_setting("job.num"), start.gpu)
        return _fit_and_test(cfg, run_dir, resume_point(run_dir, start.over))


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

    facts_of_run = run_facts(trainer.current_epoch, trainer.global_step, best, datamodule, facts.task)
    if not trainer.is_global_zero:  # data-parallel: one process (rank 0) writes the outputs
        return {**module.reports, **facts_of_run}
    metrics = run_end(cfg, run_dir, module.evaluator, module.reports, module.outputs, facts_of_run, choices())
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
    plan = plan_members({m: member_dir(edir, m) for m in wanted}, batched, starts_over(cfg))
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
    one log line saying why, when the configuration is not supported batched: each run's own start
    then decides whether it trains)."""
    from hightpr.stacked.layers import NotStackable
    from hightpr.stacked.trainer import train_batched

    try:
        train_batched([member_config(cfg, m, edir) for m in group], [member_dir(edir, m) for m in group],
                      choices())
    except NotStackable as why:
        log.info("ensemble.batched: %s; training the members one after another", why)
        return list(group)
    return []


def validation_objective(metrics: dict) -> float | None:
    """The validation metric a sweeper maximises (Optuna): the run's validation monitor."""
    found = monitor_value(metrics.get("val"))
    return None if found is None else found[1]
