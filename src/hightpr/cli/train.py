"""`python train.py` / `hightpr-train`: one training run, an ensemble, or a Hydra multirun grid.

`main` is the Hydra entry point and the one error boundary; `train` dispatches a run or an
ensemble; `run` trains one model, tests its best checkpoint and writes metrics.json,
logits_{val,test}.npz and a row of the experiment's runs.csv. The wiring is `hightpr.build`.
`compose_config` gives the same config in-process (notebooks, tests, table drivers).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.utilities.exceptions import SIGTERMException

from hightpr.build import (
    build_datamodule,
    build_module,
    build_trainer,
    check_keys,
    check_machine,
    check_writable,
    hydra_errors,
)
from hightpr.callbacks import Interrupt, keep_csv_log
from hightpr.cli.ensemble import ensemble_requested, train_members
from hightpr.ensemble import is_finished, run_key
from hightpr.errors import HightprError, user_errors
from hightpr.runs import (
    RunLock,
    append_run,
    clear_outputs,
    debug_run,
    describe_checkpoint,
    flatten,
    remove_unstarted,
    runs_row,
    save_logits,
    save_metrics,
)

RESUME_MODES = ("auto", "never")  # resume=auto|never|<run dir>
CONFIG_MODULE = "hightpr.conf"  # the packaged configs; users add theirs with --config-dir / hydra.searchpath
log = logging.getLogger("hightpr")


def choices() -> dict[str, str]:
    """The option chosen in every config group (`loss: bce`, ...), when Hydra composed the config."""
    if not HydraConfig.initialized():
        return {}
    return {k: v for k, v in HydraConfig.get().runtime.choices.items()
            if v is not None and not k.startswith("hydra")}


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The config `python train.py OVERRIDES` would run, composed in-process (no output dir made).

    Registers the composition with Hydra (choices, `${hydra:...}`) as a command-line run does.
    """
    GlobalHydra.instance().clear()
    with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
        cfg = compose("config", overrides=list(overrides), return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def _run_key_resolver(*, _root_: DictConfig) -> str:
    """`${hightpr_run_key:}`: the run's folder name (the run dir of every job, single or swept)."""
    choices = OmegaConf.select(_root_, "hydra.runtime.choices", default=None)
    choices = {k: v for k, v in (choices or {}).items() if v is not None and not k.startswith("hydra")}
    return run_key(_root_, choices)


if not OmegaConf.has_resolver("hightpr_run_key"):
    OmegaConf.register_new_resolver("hightpr_run_key", _run_key_resolver, use_cache=False)


def default_run_dir(cfg: DictConfig) -> Path:
    """`resume=<run dir>`, else Hydra's job dir, else `<output_root>/<name>/runs/<run key>`: the same
    configuration always lands in the same folder (a finished run is found, a killed one resumed)."""
    resume = str(cfg.get("resume") or "auto")
    if resume not in RESUME_MODES:
        return Path(resume)
    job_dir = OmegaConf.select(HydraConfig.get(), "runtime.output_dir") if HydraConfig.initialized() else None
    if job_dir:
        return Path(job_dir)
    return Path(cfg.paths.output_root) / str(cfg.name) / "runs" / run_key(cfg, choices())


def job_resources(cfg: DictConfig) -> tuple[int | None, int | None]:
    """(torch threads, GPU index) of this job: `trainer.num_threads` if set; under the local
    parallel launcher, cores / n_jobs and, with several GPUs, GPU (job number mod GPU count)."""
    threads = int(cfg.trainer.num_threads) if cfg.trainer.get("num_threads") else None
    launcher = OmegaConf.select(HydraConfig.get(), "launcher") if HydraConfig.initialized() else None
    if launcher is None or "Joblib" not in str(launcher.get("_target_", "")):
        return threads, None
    cores = os.cpu_count() or 1
    n_jobs = int(launcher.get("n_jobs") or -1)
    n_jobs = cores if n_jobs < 1 else n_jobs
    threads = threads or max(1, cores // n_jobs)
    gpus = torch.cuda.device_count() if cfg.trainer.get("accelerator") in ("gpu", "cuda", "auto") else 0
    single = cfg.trainer.get("devices") in (1, "1", None)
    gpu = int(HydraConfig.get().job.num) % gpus if gpus > 1 and single else None
    return threads, gpu


def worker_process() -> bool:
    """Whether this process is a non-zero rank of a data-parallel run (launched by rank 0)."""
    return any(int(os.environ.get(var, "0") or 0) > 0 for var in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def _resume_point(run_dir: Path, fresh: bool) -> Path | None:
    last = run_dir / "checkpoints" / "last.ckpt"
    return None if fresh or not last.is_file() else last


def run(cfg: DictConfig, run_dir: Path | None = None) -> dict:
    """Train, keep the best epoch on the validation monitor, test it, save every output.

    A finished run dir is not trained again (`resume=never` does); an interrupted one continues
    from its `last` checkpoint. One process at a time trains a run dir (`RunLock`).
    """
    check_keys(cfg)
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(cfg)
    fresh = str(cfg.get("resume") or "auto") == "never"
    if worker_process():  # a data-parallel worker started by rank 0, which holds the lock
        return _fit_and_test(cfg, run_dir, _resume_point(run_dir, fresh))
    check_machine(cfg, run_dir)
    try:
        return _locked_run(cfg, run_dir, fresh)
    except HightprError:
        remove_unstarted(run_dir, Path(str(cfg.paths.output_root)))  # a refused run leaves no folder
        raise


def _locked_run(cfg: DictConfig, run_dir: Path, fresh: bool) -> dict:
    with RunLock(run_dir):
        if is_finished(run_dir) and not fresh:
            log.info("already finished, not trained again: %s (resume=never retrains it)", run_dir)
            return json.loads((run_dir / "metrics.json").read_text())
        last = run_dir / "checkpoints" / "last.ckpt"
        done = None if fresh or not last.is_file() else describe_checkpoint(last)
        if done is None or done[1]:
            if done is not None:  # Lightning's loops cannot continue the batched trainer's state
                log.warning("%s was written by batched training (ensemble.batched): a run trained on its "
                            "own starts %s over", last, run_dir)
            elif last.is_file() and not fresh:
                log.warning("%s is unreadable (killed while writing it?): starting %s over", last, run_dir)
            clear_outputs(run_dir)
            last = None
        else:
            log.info("resuming %s from its last checkpoint (%s)", run_dir, done[0])
        threads = torch.get_num_threads()
        budget, gpu = job_resources(cfg)
        if budget:
            torch.set_num_threads(budget)
        if gpu is not None:
            cfg = OmegaConf.merge(cfg, {"trainer": {"devices": [gpu]}})
            log.info("local job %s: GPU %d", HydraConfig.get().job.num, gpu)
        try:
            return _fit_and_test(cfg, run_dir, last)
        finally:
            torch.set_num_threads(threads)


def _fit_and_test(cfg: DictConfig, run_dir: Path, resume_from: Path | None = None) -> dict:
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule, facts = build_datamodule(cfg)
    module = build_module(cfg, datamodule, facts, choices())
    if not worker_process():
        OmegaConf.save(cfg, run_dir / "config_resolved.yaml", resolve=True)
        log.info("data %s", datamodule.summary())

    trainer = build_trainer(cfg, run_dir, monitor=module.evaluator.monitor)
    if resume_from is not None and not worker_process():
        keep_csv_log(trainer, resume_from)  # the epochs before the interrupt stay in csv/metrics.csv
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume_from) if resume_from else None)
    except SIGTERMException as stop:  # Ctrl-C or SIGTERM: finished epochs saved, the same command resumes
        interrupt = next((c for c in trainer.callbacks if isinstance(c, Interrupt)), None)
        raise SystemExit(interrupt.exit_code if interrupt and interrupt.exit_code else 143) from stop
    best = trainer.checkpoint_callback.best_model_path or None
    trainer.validate(module, datamodule=datamodule, ckpt_path=best, verbose=False)
    trainer.test(module, datamodule=datamodule, ckpt_path=best, verbose=False)

    metrics = {
        "val": module.reports["val"], "test": module.reports["test"],
        "epochs_trained": trainer.current_epoch, "global_step": trainer.global_step, "best_checkpoint": best,
        "data": datamodule.summary(), "task": facts.task.to_dict(),
    }
    operating_points = getattr(module.evaluator, "operating_points", None)  # threshold on val, rates on test
    if operating_points is not None:
        metrics["operating_point"] = operating_points(module.outputs["val"], module.outputs["test"])
    if not trainer.is_global_zero:  # data-parallel: one process (rank 0) writes the outputs
        return metrics
    for stage in ("val", "test"):
        save_logits(run_dir, stage, module.outputs[stage])
    save_metrics(run_dir, metrics)
    debug = debug_run(cfg)
    if debug == "fast_dev_run":  # a smoke test of the wiring: no result, no row in the results table
        log.info("trainer.fast_dev_run: a debug run, not added to %s", cfg.paths.runs_csv)
    else:
        row = runs_row(cfg, run_dir, module.reports, choices())
        row.update(flatten("op", metrics.get("operating_point", {})))
        if debug:
            row["debug"] = debug  # a limited run: in the table, marked
        append_run(Path(cfg.paths.runs_csv), row)
    log.info("test %s", {k: round(v, 4) for k, v in module.reports["test"].items()})
    log.info("outputs in %s", run_dir)
    return metrics


def train(cfg: DictConfig, run_dir: Path | None = None) -> dict:
    """One run, or the members of an ensemble (`ensemble.members=N` / `ensemble.member=M`)."""
    check_keys(cfg)
    check_machine(cfg)
    if ensemble_requested(cfg):
        return train_members(cfg, run, choices())
    return run(cfg, run_dir)


def _quiet_libraries() -> None:
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*LeafSpec.*")
    os.environ.setdefault("PL_DISABLE_FORK", "1")


def objective(metrics: dict) -> float | None:
    """The validation metric a sweeper maximises (Optuna): AUC, or accuracy for multi-class runs."""
    val = metrics.get("val") or {}
    value = val.get("auc", val.get("accuracy"))
    return None if value is None else float(value)


class Preflight(Callback):
    """Hydra callback (`hydra.callbacks.preflight`): the config and the machine are checked before
    Hydra writes anything (a run's folder, a grid's multirun.yaml); a problem is one `error:` line.

    Hydra turns a callback's exceptions into warnings, so the boundary (`user_errors`) is here.
    """

    def on_run_start(self, config: DictConfig, **kwargs) -> None:
        with user_errors(exit_when_debugging=True):
            cfg = _without_hydra(config)
            check_keys(cfg)
            check_machine(cfg, Path(str(config.hydra.run.dir)))

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        with user_errors(exit_when_debugging=True):
            target = str(OmegaConf.select(config, "hydra.launcher._target_", default="") or "")
            if target.endswith("SlurmLauncher"):
                missing = [cmd for cmd in ("sbatch", "srun") if shutil.which(cmd) is None]
                if missing:
                    raise HightprError(f"hydra/launcher=slurm needs SLURM, but {' and '.join(missing)} "
                                       "cannot be found here: use hydra/launcher=local (this machine) "
                                       "or run from a SLURM login node")
            check_writable(Path(str(config.hydra.sweep.dir)), "the sweep folder")


def _without_hydra(config: DictConfig) -> DictConfig:
    """The job's config without its `hydra` node (what `train` receives)."""
    return OmegaConf.masked_copy(config, [str(k) for k in config if k != "hydra"])


@hydra.main(version_base="1.3", config_path=f"pkg://{CONFIG_MODULE}", config_name="config")
def _hydra_main(cfg: DictConfig) -> float | None:
    _quiet_libraries()
    with user_errors():
        return objective(train(cfg))


def main() -> float | None:
    """`python train.py` / `hightpr-train`: a user error, Hydra's included, ends as one `error:` line
    and exit code 2. Returns the validation objective (for sweepers such as Optuna)."""
    with user_errors(), hydra_errors():
        return _hydra_main()


__all__ = ["HightprError", "choices", "compose_config", "main", "run", "train"]


if __name__ == "__main__":
    main()
